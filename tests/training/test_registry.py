"""gpulab.training.registry: declared hyperparameters checked by name, registration,
entry points, and the built-in digits-mlp example training for real (one process)."""

from importlib.metadata import EntryPoint

import pytest

from gpulab import training
from gpulab.training import registry
from gpulab.training.registry import HyperparameterError, Param, TrainFunction


def noop(ctx, lr=0.1, steps=10, act="relu", bias=True):
    """A training function that trains nothing."""
    return {"lr": lr, "steps": steps, "act": act, "bias": bias}


@pytest.fixture
def entry():
    name = "test-noop"
    found = registry.register(name, noop, params={
        "lr": {"default": 0.1, "bounds": (1e-4, 1.0)},
        "steps": Param(10, bounds=(1, 100)),
        "act": Param("relu", choices=("relu", "tanh")),
        "bias": True,
    })
    yield found
    registry.unregister(name)


def test_defaults_and_binding(entry):
    assert entry.defaults() == {"lr": 0.1, "steps": 10, "act": "relu", "bias": True}
    assert entry.description == "A training function that trains nothing."
    bound = registry.bind("test-noop", {"lr": 0.5, "steps": 3.0})
    assert bound(None) == {"lr": 0.5, "steps": 3, "act": "relu", "bias": True}
    assert "test-noop" in registry.names()
    assert entry.to_json()["params"]["act"] == {
        "default": "relu", "type": "str", "bounds": None, "choices": ["relu", "tanh"],
        "help": ""}


BAD_VALUES = [
    ({"lr": 5.0}, "lr", "between 0.0001 and 1.0"),
    ({"lr": "fast"}, "lr", "must be a number"),
    ({"lr": float("nan")}, "lr", "must be a number"),
    ({"lr": True}, "lr", "must be a number"),
    ({"steps": 0}, "steps", "between 1 and 100"),
    ({"steps": 2.5}, "steps", "whole number"),
    ({"steps": "10"}, "steps", "whole number"),
    ({"act": "gelu"}, "act", "one of 'relu', 'tanh'"),
    ({"bias": "yes"}, "bias", "true or false"),
    ({"momentum": 0.9}, "momentum", "has no hyperparameter 'momentum'"),
]


@pytest.mark.parametrize(("values", "field", "message"), BAD_VALUES)
def test_bad_values_name_their_field(entry, values, field, message):
    with pytest.raises(HyperparameterError, match=message) as refused:
        entry.check(values)
    assert refused.value.field == field
    assert refused.value.to_json()["field"] == field


def test_unknown_function_is_named():
    with pytest.raises(registry.UnknownTrainFunction, match="no training function") as e:
        registry.get("nope")
    assert e.value.field == "function" and "digits-mlp" in str(e.value)


BAD_DECLARATIONS = [
    ({"lr": {"bounds": (0, 1)}}, "give default"),
    ({"lr": {"default": 0.1, "min": 0}}, "unknown"),
    ({"lr": Param(2.0, bounds=(0.0, 1.0))}, "between"),
    ({"act": Param("x", choices=())}, "choices must not be empty"),
    ({"act": Param("x", bounds=(0, 1))}, "for numbers only"),
    ({"shape": Param([1, 2])}, "bool, int, float or str"),
    ({"not valid": 1}, "Python identifier"),
]


@pytest.mark.parametrize(("params", "message"), BAD_DECLARATIONS)
def test_bad_declarations_fail_at_register(params, message):
    with pytest.raises((ValueError, HyperparameterError), match=message):
        registry.register("test-bad", noop, params=params)
    assert "test-bad" not in registry.names()


def test_names_and_redefinition(entry):
    with pytest.raises(ValueError, match="1-64 letters"):
        registry.register("<b>x</b>", noop)
    with pytest.raises(ValueError, match="registered already"):
        registry.register("test-noop", lambda ctx: None)
    registry.register("test-noop", noop, replace=True)  # the same function again is fine


def extra_functions():
    """What a package's entry point names: a callable returning TrainFunctions."""
    return [registry.train_function("test-from-entry-point", noop, {"lr": 0.2})]


def test_entry_points_add_functions_and_broken_ones_are_skipped(monkeypatch, caplog):
    points = [
        EntryPoint("extra", "tests.training.test_registry:extra_functions",
                   registry.ENTRY_POINT_GROUP),
        EntryPoint("broken", "tests.training.no_such_module:functions",
                   registry.ENTRY_POINT_GROUP),
    ]
    monkeypatch.setattr(registry, "_entry_points", lambda: points)
    monkeypatch.setattr(registry, "_loaded", False)
    try:
        assert "test-from-entry-point" in registry.names()
        found = registry.get("test-from-entry-point")
        assert isinstance(found, TrainFunction) and found.defaults() == {"lr": 0.2}
        assert "skipping training functions of entry point broken" in caplog.text
        assert "digits-mlp" in registry.names()
    finally:
        registry.unregister("test-from-entry-point")


def test_lazy_exports():
    assert training.register is registry.register
    assert training.HyperparameterError is HyperparameterError


def test_digits_mlp_logs_loss_and_accuracy_each_step(tmp_path):
    from gpulab.runs import RunStore

    run = RunStore(tmp_path / "runs").create("alice", "digits")
    ctx = training.TrainContext.from_env(run_url=run.url)
    fn = registry.bind("digits-mlp", {"steps": 40, "lr": 0.5})
    result = fn(ctx)
    ctx.close()
    records, _ = run.read_metrics()
    steps = [r for r in records if "loss" in r]
    assert [r["step"] for r in steps] == list(range(40))
    assert all(0.0 <= r["accuracy"] <= 1.0 for r in steps)
    assert steps[-1]["loss"] < steps[0]["loss"]
    assert result["val_accuracy"] > 0.5  # it learns: 10 classes, chance is 0.1
    assert [c.step for c in run.checkpoints()] == [19, 39]
