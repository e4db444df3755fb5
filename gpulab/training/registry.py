"""Training functions registered by name, with their hyperparameters declared.

The launcher dashboard (``gpulab.dashboards.launcher``) offers what is registered here:
its form builds one widget per declared hyperparameter and checks the values here before
anything starts, so a bad value is refused with the field's name.

>>> from gpulab.training import registry
>>> registry.register("my-mlp", train_mlp, params={
...     "lr": {"default": 0.1, "bounds": (1e-5, 10.0)},
...     "steps": {"default": 100, "bounds": (1, 10_000)},
...     "optimiser": {"default": "sgd", "choices": ["sgd", "adam"]},
... })
>>> fn = registry.bind("my-mlp", {"lr": 0.5})   # train_mlp(ctx, lr=0.5, steps=100, ...)

Built-in examples (``gpulab.training.examples``) are registered on first use; packages add
theirs with an entry point in the group ``gpulab.train_functions`` naming a
``TrainFunction`` (``registry.train_function(...)``) or a callable that returns one or a
list of them. An entry point that fails to load is skipped with a warning: one broken
package must not take the launcher down.
"""

from __future__ import annotations

import functools
import logging
import math
import re
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

ENTRY_POINT_GROUP = "gpulab.train_functions"
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
PARAM_PATTERN = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
MAX_TEXT = 256

log = logging.getLogger(__name__)


class HyperparameterError(ValueError):
    """A bad hyperparameter (or function name): ``field`` names it, nothing started."""

    def __init__(self, message: str, *, field: str):
        super().__init__(message)
        self.field = field

    def to_json(self) -> dict[str, Any]:
        return {"message": str(self), "field": self.field}


class UnknownTrainFunction(HyperparameterError, LookupError):
    """No training function is registered under that name."""


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


@dataclass(frozen=True)
class Param:
    """One hyperparameter: its ``default`` (whose type is the parameter's: bool, int,
    float or str), and either ``bounds`` ``(low, high)`` (inclusive; None: open) for
    numbers, or ``choices``. ``help`` is shown beside the widget."""

    default: Any
    bounds: tuple[Any, Any] | None = None
    choices: tuple[Any, ...] | None = None
    help: str = ""

    @property
    def kind(self) -> type:
        return type(self.default)

    def check(self, name: str, value: Any) -> Any:
        """``value`` as this parameter's type, or ``HyperparameterError`` naming ``name``."""
        kind = self.kind
        if kind is bool:
            if not isinstance(value, bool):
                raise HyperparameterError(f"{name} must be true or false, got {_shown(value)}",
                                          field=name)
        elif kind is int:
            if isinstance(value, bool) or not isinstance(value, int):
                if isinstance(value, float) and value.is_integer():
                    value = int(value)
                else:
                    raise HyperparameterError(
                        f"{name} must be a whole number, got {_shown(value)}", field=name)
        elif kind is float:
            if isinstance(value, bool) or not isinstance(value, int | float) \
                    or not math.isfinite(value):
                raise HyperparameterError(f"{name} must be a number, got {_shown(value)}",
                                          field=name)
            value = float(value)
        elif not isinstance(value, str) or len(value) > MAX_TEXT:
            raise HyperparameterError(
                f"{name} must be text of at most {MAX_TEXT} characters, got {_shown(value)}",
                field=name)
        if self.choices is not None and value not in self.choices:
            raise HyperparameterError(
                f"{name} must be one of {', '.join(map(repr, self.choices))}, got "
                f"{_shown(value)}", field=name)
        if self.bounds is not None:
            low, high = self.bounds
            if (low is not None and value < low) or (high is not None and value > high):
                raise HyperparameterError(
                    f"{name} must be between {_bound(low)} and {_bound(high)}, got {value!r}",
                    field=name)
        return value

    def to_json(self) -> dict[str, Any]:
        return {"default": self.default, "type": self.kind.__name__,
                "bounds": list(self.bounds) if self.bounds is not None else None,
                "choices": list(self.choices) if self.choices is not None else None,
                "help": self.help}


def _bound(value: Any) -> str:
    return "no limit" if value is None else repr(value)


def _param(name: str, spec: Any) -> Param:
    """A declared parameter from a ``Param``, a dict (``default``, ``bounds``, ``choices``,
    ``help``) or a bare default; checked now, so a bad declaration fails at register."""
    if not isinstance(name, str) or not PARAM_PATTERN.fullmatch(name):
        raise ValueError(f"a hyperparameter's name is a Python identifier, not {_shown(name)}")
    if isinstance(spec, Mapping):
        unknown = set(spec) - {"default", "bounds", "choices", "help"}
        if unknown or "default" not in spec:
            raise ValueError(f"hyperparameter {name}: give default and optionally bounds, "
                             f"choices, help (unknown: {sorted(unknown)})")
        spec = Param(spec["default"], bounds=tuple(spec["bounds"]) if spec.get("bounds")
                     is not None else None,
                     choices=tuple(spec["choices"]) if spec.get("choices") is not None else None,
                     help=str(spec.get("help", "")))
    elif not isinstance(spec, Param):
        spec = Param(spec)
    if spec.kind not in (bool, int, float, str):
        raise ValueError(f"hyperparameter {name}: the default must be a bool, int, float or "
                         f"str, not {spec.kind.__name__}")
    if spec.bounds is not None and (len(spec.bounds) != 2 or spec.kind not in (int, float)):
        raise ValueError(f"hyperparameter {name}: bounds are (low, high), for numbers only")
    if spec.choices is not None and not spec.choices:
        raise ValueError(f"hyperparameter {name}: choices must not be empty")
    spec.check(name, spec.default)  # the default itself must be allowed
    return spec


@dataclass(frozen=True)
class TrainFunction:
    """A registered training function: ``fn(ctx, **hyperparameters)``."""

    name: str
    fn: Callable[..., Any]
    params: Mapping[str, Param] = field(default_factory=dict)
    description: str = ""

    def defaults(self) -> dict[str, Any]:
        return {name: p.default for name, p in self.params.items()}

    def check(self, values: Mapping[str, Any] | None) -> dict[str, Any]:
        """Every hyperparameter's value (defaults for those not given), each checked;
        an unknown name is refused by name."""
        values = dict(values or {})
        unknown = sorted(set(values) - set(self.params))
        if unknown:
            raise HyperparameterError(
                f"{self.name} has no hyperparameter {unknown[0]!r}; it has "
                f"{', '.join(self.params) or 'none'}", field=str(unknown[0]))
        return {name: p.check(name, values.get(name, p.default))
                for name, p in self.params.items()}

    def bind(self, values: Mapping[str, Any] | None = None) -> Callable[[Any], Any]:
        """``train_fn(ctx)`` for ``training.run``, with the checked hyperparameters."""
        return functools.partial(self.fn, **self.check(values))

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "description": self.description,
                "params": {name: p.to_json() for name, p in self.params.items()}}


def train_function(name: str, fn: Callable[..., Any], params: Mapping[str, Any] | None = None,
                   description: str | None = None) -> TrainFunction:
    """A checked ``TrainFunction`` (what an entry point names, or ``register`` keeps)."""
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
        raise ValueError("a training function's name is 1-64 letters, digits, '_', '.' or '-', "
                         f"starting with a letter or digit, not {_shown(name)}")
    if not callable(fn):
        raise TypeError(f"fn must be a function taking ctx, not {_shown(fn)}")
    declared = {key: _param(key, spec) for key, spec in (params or {}).items()}
    if description is None:
        description = (fn.__doc__ or "").strip().split("\n\n")[0].replace("\n", " ")
    return TrainFunction(name, fn, declared, description)


_registry: dict[str, TrainFunction] = {}
_lock = threading.Lock()
_loaded = False


def register(name: str, fn: Callable[..., Any], params: Mapping[str, Any] | None = None, *,
             description: str | None = None, replace: bool = False) -> TrainFunction:
    """Register ``fn(ctx, **params)`` as ``name``; ``replace=True`` to redefine one."""
    entry = train_function(name, fn, params, description)
    with _lock:
        if name in _registry and not replace and _registry[name].fn is not fn:
            raise ValueError(f"a training function {name!r} is registered already; "
                             "pass replace=True to redefine it")
        _registry[name] = entry
    return entry


def unregister(name: str) -> None:
    with _lock:
        _registry.pop(name, None)


def _load_builtins() -> None:
    global _loaded
    if _loaded:
        return
    _loaded = True
    import gpulab.training.examples  # noqa: F401  (registers at import)

    for entry in _entry_points():
        try:
            _add(entry.load())
        except Exception as e:  # noqa: BLE001 - someone else's package: warn, go on
            log.warning("gpulab: skipping training functions of entry point %s (%s): %s",
                        entry.name, entry.value, e)


def _entry_points() -> Sequence[Any]:
    from importlib.metadata import entry_points

    return list(entry_points(group=ENTRY_POINT_GROUP))


def _add(found: Any) -> None:
    if callable(found) and not isinstance(found, TrainFunction):
        found = found()
    items: Iterable[Any] = [found] if isinstance(found, TrainFunction) else found
    for item in items:
        if not isinstance(item, TrainFunction):
            raise TypeError(f"expected a TrainFunction, got {type(item).__name__}")
        with _lock:
            _registry.setdefault(item.name, item)


def names() -> list[str]:
    """The registered names, sorted."""
    _load_builtins()
    with _lock:
        return sorted(_registry)


def get(name: str) -> TrainFunction:
    _load_builtins()
    with _lock:
        found = _registry.get(name) if isinstance(name, str) else None
    if found is None:
        raise UnknownTrainFunction(
            f"no training function {_shown(name)} is registered; known: "
            f"{', '.join(names()) or 'none'}", field="function")
    return found


def bind(name: str, values: Mapping[str, Any] | None = None) -> Callable[[Any], Any]:
    """The registered function ``name`` with ``values`` checked and bound."""
    return get(name).bind(values)
