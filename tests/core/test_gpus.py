"""gpulab.gpus: the GPU inventory.

Fixtures and helpers:
- ``FakeDevice`` / ``fake_pynvml``: a stand-in for the ``pynvml`` module, injected through
  ``sys.modules``, to unit-test NVMLInventory's mapping (MIG, "Not Supported", errors).
- ``real_nvml``: skips with the reason when this machine has no NVIDIA driver.
"""

import logging
import sys
import types
from dataclasses import dataclass, field

import pytest

from gpulab.gpus import (
    GPU,
    EmptyInventory,
    Inventory,
    InventoryError,
    NVMLInventory,
    StaticInventory,
    Telemetry,
    detect_inventory,
)

GIB = 2**30

# --- StaticInventory -------------------------------------------------------------------


def test_synthetic_makes_stable_uuids():
    inventory = StaticInventory.synthetic(3, name="Test GPU", memory_gib=40)
    assert [g.uuid for g in inventory.devices()] == [
        "GPU-static-0000",
        "GPU-static-0001",
        "GPU-static-0002",
    ]
    assert [g.index for g in inventory.devices()] == [0, 1, 2]
    assert {g.memory_bytes for g in inventory.devices()} == {40 * GIB}
    assert {g.name for g in inventory.devices()} == {"Test GPU"}
    again = StaticInventory.synthetic(3, name="Test GPU", memory_gib=40)
    assert again.devices() == inventory.devices()
    assert repr(again) == "<StaticInventory with 3 GPUs>"


@pytest.mark.parametrize("n", [-1, 1.5, "2", True])
def test_synthetic_bad_count(n):
    with pytest.raises(ValueError, match=r"^n must be a whole number >= 0, not "):
        StaticInventory.synthetic(n)


def test_from_config_fills_defaults_and_keeps_mig_fields():
    inventory = StaticInventory.from_config(
        [
            {"uuid": "GPU-a", "memory_bytes": 80 * GIB},
            {
                "uuid": "MIG-b",
                "memory_bytes": 10 * GIB,
                "name": "A100 MIG 1g.10gb",
                "index": 0,
                "mig_parent_uuid": "GPU-p",
                "profile": "1g.10gb",
            },
        ]
    )
    first, second = inventory.devices()
    assert first == GPU(index=0, uuid="GPU-a", name="Static GPU", memory_bytes=80 * GIB)
    assert not first.is_mig
    assert second.is_mig and second.profile == "1g.10gb" and second.index == 0
    assert StaticInventory([second.to_dict()]).devices() == [second]


def test_devices_returns_a_copy():
    inventory = StaticInventory.synthetic(2)
    inventory.devices().clear()
    assert len(inventory.devices()) == 2


@pytest.mark.parametrize(
    ("devices", "message"),
    [
        (
            [{"uuid": "GPU-a", "memory_bytes": 1}, {"uuid": "GPU-a", "memory_bytes": 2}],
            r"entry 1: uuid 'GPU-a' appears twice",
        ),
        ([{"uuid": "GPU-a", "memory_bytes": -1}], r"entry 0: memory_bytes must be .* not -1"),
        ([{"uuid": "GPU-a", "memory_bytes": True}], r"memory_bytes must be .* not True"),
        ([{"uuid": "GPU-a", "memory_bytes": "80GiB"}], r"memory_bytes must be .* not '80GiB'"),
        ([{"memory_bytes": 1}], r"entry 0: missing \['uuid'\]"),
        ([{"uuid": "GPU-a"}], r"entry 0: missing \['memory_bytes'\]"),
        ([{"uuid": "", "memory_bytes": 1}], r"entry 0: uuid must be a non-empty string"),
        ([{"uuid": " GPU-a", "memory_bytes": 1}], r"uuid must be .* not ' GPU-a'"),
        ([{"uuid": 7, "memory_bytes": 1}], r"uuid must be .* not 7"),
        ([{"uuid": "GPU-a", "memory_bytes": 1, "index": -2}], r"index must be .* not -2"),
        ([{"uuid": "GPU-a", "memory_bytes": 1, "name": ""}], r"name must be a non-empty string"),
        ([{"uuid": "MIG-a", "memory_bytes": 1, "profile": ""}], r"profile must be .* or None"),
        (
            [{"uuid": "GPU-a", "memory_bytes": 1, "memory": 5}],
            r"entry 0: unknown keys \['memory'\]",
        ),
        ([GPU(0, "GPU-a", "x", 1), "GPU-b"], r"entry 1 must be a GPU or a dict .* not 'GPU-b'"),
        ([GPU(0, "GPU-a", "x", -5)], r"entry 0: memory_bytes must be .* not -5"),
        ({"uuid": "GPU-a", "memory_bytes": 1}, r"must be a list of GPUs"),
        ("GPU-a", r"must be a list of GPUs"),
    ],
)
def test_static_inventory_rejects_bad_entries(devices, message):
    with pytest.raises(ValueError, match=message):
        StaticInventory(devices)


def test_static_telemetry_defaults_to_idle():
    inventory = StaticInventory.synthetic(1)
    assert inventory.telemetry(["GPU-static-0000"]) == {
        "GPU-static-0000": Telemetry(
            "GPU-static-0000", utilization_percent=0.0, memory_used_bytes=0
        )
    }


def test_set_telemetry_sets_only_what_is_passed():
    inventory = StaticInventory.synthetic(2)
    inventory.set_telemetry("GPU-static-0001", utilization_percent=87, energy_joules=1000)
    inventory.set_telemetry("GPU-static-0001", power_watts=312.5, memory_used_bytes=5 * GIB)
    reading = inventory.telemetry(["GPU-static-0001"])["GPU-static-0001"]
    assert reading == Telemetry("GPU-static-0001", 87.0, 5 * GIB, 312.5, 1000.0)
    assert isinstance(reading.utilization_percent, float)
    # the other device is untouched
    assert inventory.telemetry(["GPU-static-0000"])["GPU-static-0000"].utilization_percent == 0
    # None means "not reported"
    inventory.set_telemetry("GPU-static-0001", power_watts=None)
    assert inventory.telemetry(["GPU-static-0001"])["GPU-static-0001"].power_watts is None


def test_set_telemetry_unknown_uuid_is_a_key_error_naming_it():
    inventory = StaticInventory.synthetic(1)
    with pytest.raises(KeyError, match=r"no device with uuid 'GPU-nope'.*GPU-static-0000"):
        inventory.set_telemetry("GPU-nope", utilization_percent=1)


@pytest.mark.parametrize(
    ("metric", "value"),
    [
        ("utilization_percent", 101),
        ("utilization_percent", -1),
        ("utilization_percent", "50"),
        ("memory_used_bytes", 1.5),
        ("memory_used_bytes", -1),
        ("power_watts", -0.1),
        ("energy_joules", float("inf")),
        ("energy_joules", True),
    ],
)
def test_set_telemetry_rejects_bad_values(metric, value):
    inventory = StaticInventory.synthetic(1)
    with pytest.raises(ValueError, match=rf"^set_telemetry: {metric} must be .*, not "):
        inventory.set_telemetry("GPU-static-0000", **{metric: value})
    assert inventory.telemetry(["GPU-static-0000"])["GPU-static-0000"].power_watts is None


def test_telemetry_returns_only_asked_uuids_that_exist():
    inventory = StaticInventory.synthetic(4)
    got = inventory.telemetry(["GPU-static-0002", "GPU-elsewhere", "GPU-static-0000"])
    assert sorted(got) == ["GPU-static-0000", "GPU-static-0002"]
    assert all(got[uuid].uuid == uuid for uuid in got)
    assert inventory.telemetry([]) == {}
    assert list(inventory.telemetry(u for u in ["GPU-static-0003", "GPU-static-0003"])) == [
        "GPU-static-0003"
    ]


def test_telemetry_refuses_a_bare_uuid_string():
    with pytest.raises(TypeError, match="not a string 'GPU-static-0000'"):
        StaticInventory.synthetic(1).telemetry("GPU-static-0000")


def test_by_uuid():
    inventory = StaticInventory.synthetic(2)
    assert inventory.by_uuid("GPU-static-0001") == inventory.devices()[1]
    assert inventory.by_uuid("GPU-static-9999") is None


def test_empty_inventory():
    inventory = EmptyInventory()
    assert inventory.devices() == []
    assert inventory.telemetry(["GPU-static-0000"]) == {}
    assert inventory.by_uuid("GPU-static-0000") is None
    assert repr(inventory) == "<EmptyInventory>"


def test_base_class_telemetry_defaults_to_unknown():
    class OneGPU(Inventory):
        def devices(self):
            return [GPU(0, "GPU-one", "One", 1)]

    assert OneGPU().telemetry(["GPU-one", "GPU-two"]) == {"GPU-one": Telemetry("GPU-one")}
    with pytest.raises(TypeError):
        Inventory()


# --- detect_inventory ------------------------------------------------------------------


def test_detect_prefers_static_config(monkeypatch):
    monkeypatch.setattr(NVMLInventory, "available", classmethod(lambda cls: True))
    inventory = detect_inventory([{"uuid": "GPU-a", "memory_bytes": 1}])
    assert isinstance(inventory, StaticInventory)
    assert [g.uuid for g in inventory.devices()] == ["GPU-a"]


def test_detect_an_empty_static_list_means_no_gpus_even_with_nvml(monkeypatch):
    monkeypatch.setattr(NVMLInventory, "available", classmethod(lambda cls: True))
    inventory = detect_inventory([])
    assert isinstance(inventory, StaticInventory) and inventory.devices() == []


def test_detect_uses_nvml_when_available(monkeypatch):
    monkeypatch.setattr(NVMLInventory, "available", classmethod(lambda cls: True))
    assert isinstance(detect_inventory(), NVMLInventory)


def test_detect_falls_back_to_empty(monkeypatch):
    monkeypatch.setattr(NVMLInventory, "available", classmethod(lambda cls: False))
    assert isinstance(detect_inventory(None), EmptyInventory)


def test_detect_static_config_errors_surface():
    with pytest.raises(ValueError, match="memory_bytes"):
        detect_inventory([{"uuid": "GPU-a", "memory_bytes": -1}])


# --- NVMLInventory against a fake pynvml -------------------------------------------------

NOT_SUPPORTED, NOT_FOUND, DRIVER_NOT_LOADED, GPU_IS_LOST = 3, 6, 9, 15


class FakeNVMLError(Exception):
    """pynvml.NVMLError's shape: an error code in ``value``."""

    def __init__(self, value):
        super().__init__(value)
        self.value = value

    def __str__(self):
        names = {3: "Not Supported", 6: "Not Found", 9: "Driver Not Loaded", 15: "GPU is lost"}
        return names[self.value]


@dataclass
class FakeDevice:
    """One device as the fake driver reports it; a FakeNVMLError value is raised instead."""

    uuid: str
    name: str
    total: int
    used: int = 0
    util: object = 0
    power_mw: object = 0
    energy_mj: object = 0
    mig_mode: object = 0  # 0 disabled, 1 enabled, or an error to raise
    mig_slots: list = field(default_factory=list)  # FakeDevice or None (empty slot)


def _give(value):
    if isinstance(value, FakeNVMLError):
        raise value
    return value


def fake_pynvml(devices, init_error=None):
    module = types.ModuleType("pynvml")
    module.NVMLError = FakeNVMLError
    module.NVML_ERROR_NOT_SUPPORTED = NOT_SUPPORTED
    module.NVML_ERROR_NOT_FOUND = NOT_FOUND
    module.NVML_DEVICE_MIG_ENABLE = 1
    module.calls = []

    def init():
        module.calls.append("init")
        if init_error is not None:
            raise FakeNVMLError(init_error)

    def mig_handle(device, slot):
        found = device.mig_slots[slot]
        if found is None:
            raise FakeNVMLError(NOT_FOUND)
        return found

    def memory(device):
        return types.SimpleNamespace(total=device.total, used=device.used)

    module.nvmlInit = init
    module.nvmlShutdown = lambda: module.calls.append("shutdown")
    module.nvmlDeviceGetCount = lambda: len(devices)
    module.nvmlDeviceGetHandleByIndex = lambda i: devices[i]
    module.nvmlDeviceGetName = lambda d: d.name.encode()  # older pynvml returns bytes
    module.nvmlDeviceGetUUID = lambda d: d.uuid
    module.nvmlDeviceGetMemoryInfo = memory
    module.nvmlDeviceGetMigMode = lambda d: [_give(d.mig_mode), _give(d.mig_mode)]
    module.nvmlDeviceGetMaxMigDeviceCount = lambda d: len(d.mig_slots)
    module.nvmlDeviceGetMigDeviceHandleByIndex = mig_handle
    module.nvmlDeviceGetUtilizationRates = lambda d: types.SimpleNamespace(gpu=_give(d.util))
    module.nvmlDeviceGetPowerUsage = lambda d: _give(d.power_mw)
    module.nvmlDeviceGetTotalEnergyConsumption = lambda d: _give(d.energy_mj)
    return module


def a_node():
    """GPU 0 whole; GPU 1 in MIG mode with two of seven slots used; GPU 2 pre-MIG, no energy."""
    unsupported = FakeNVMLError(NOT_SUPPORTED)
    slices = [
        FakeDevice(
            f"MIG-{n}",
            f"NVIDIA A100-SXM4-80GB MIG {profile}",
            total=gib * GIB,
            used=GIB,
            util=unsupported,
            power_mw=unsupported,
            energy_mj=unsupported,
        )
        for n, profile, gib in [("aaa", "3g.40gb", 40), ("bbb", "1g.10gb+me", 10)]
    ]
    return [
        FakeDevice("GPU-0", "NVIDIA H100 80GB HBM3", 80 * GIB, 3 * GIB, 55, 250_500, 9_000_000),
        FakeDevice(
            "GPU-1",
            "NVIDIA A100-SXM4-80GB",
            80 * GIB,
            util=unsupported,
            power_mw=120_000,
            energy_mj=5_000,
            mig_mode=1,
            mig_slots=[slices[0], None, None, slices[1], None, None, None],
        ),
        FakeDevice(
            "GPU-2",
            "Tesla V100",
            16 * GIB,
            util=7,
            power_mw=40_000,
            energy_mj=unsupported,
            mig_mode=unsupported,
        ),
    ]


@pytest.fixture
def fake_node(monkeypatch):
    module = fake_pynvml(a_node())
    monkeypatch.setitem(sys.modules, "pynvml", module)
    return module


def test_nvml_starts_lazily(fake_node):
    inventory = NVMLInventory()
    assert fake_node.calls == []
    inventory.devices()
    inventory.devices()
    assert fake_node.calls == ["init"]
    inventory.close()
    assert fake_node.calls == ["init", "shutdown"]


def test_nvml_lists_whole_gpus_and_mig_instances(fake_node):
    devices = NVMLInventory().devices()
    assert devices == [
        GPU(0, "GPU-0", "NVIDIA H100 80GB HBM3", 80 * GIB),
        GPU(1, "MIG-aaa", "NVIDIA A100-SXM4-80GB MIG 3g.40gb", 40 * GIB, "GPU-1", "3g.40gb"),
        GPU(1, "MIG-bbb", "NVIDIA A100-SXM4-80GB MIG 1g.10gb+me", 10 * GIB, "GPU-1", "1g.10gb+me"),
        GPU(2, "GPU-2", "Tesla V100", 16 * GIB),
    ]


def test_nvml_mig_profile_is_none_when_the_name_lacks_it(monkeypatch):
    parent = FakeDevice("GPU-p", "GPU", GIB, mig_mode=1, mig_slots=[FakeDevice("MIG-x", "Odd", 1)])
    monkeypatch.setitem(sys.modules, "pynvml", fake_pynvml([parent]))
    (only,) = NVMLInventory().devices()
    assert only.uuid == "MIG-x" and only.mig_parent_uuid == "GPU-p" and only.profile is None


def test_nvml_telemetry_converts_units_and_maps_not_supported_to_none(fake_node):
    got = NVMLInventory().telemetry(["GPU-0", "MIG-bbb", "GPU-2", "GPU-1", "GPU-unknown"])
    assert got == {
        "GPU-0": Telemetry("GPU-0", 55.0, 3 * GIB, 250.5, 9000.0),
        "MIG-bbb": Telemetry("MIG-bbb", None, GIB, None, None),
        "GPU-2": Telemetry("GPU-2", 7.0, 0, 40.0, None),
        # the parent of MIG instances answers for power and energy of all of them
        "GPU-1": Telemetry("GPU-1", None, 0, 120.0, 5.0),
    }


def test_nvml_other_metric_errors_are_logged_and_unknown(monkeypatch, caplog):
    device = FakeDevice("GPU-lost", "H100", GIB, util=FakeNVMLError(GPU_IS_LOST), power_mw=1000)
    monkeypatch.setitem(sys.modules, "pynvml", fake_pynvml([device]))
    with caplog.at_level(logging.WARNING, logger="gpulab.gpus"):
        reading = NVMLInventory().telemetry(["GPU-lost"])["GPU-lost"]
    assert reading.utilization_percent is None and reading.power_watts == 1.0
    assert "nvmlDeviceGetUtilizationRates on GPU-lost failed: GPU is lost" in caplog.text


def test_nvml_mig_slot_errors_other_than_not_found_raise(monkeypatch):
    parent = FakeDevice("GPU-p", "GPU", GIB, mig_mode=1, mig_slots=[None])
    module = fake_pynvml([parent])

    def broken(device, slot):
        raise FakeNVMLError(GPU_IS_LOST)

    module.nvmlDeviceGetMigDeviceHandleByIndex = broken
    monkeypatch.setitem(sys.modules, "pynvml", module)
    with pytest.raises(InventoryError, match=r"MigDeviceHandleByIndex\('GPU-p', 0\).*GPU is lost"):
        NVMLInventory().devices()


def test_nvml_init_failure(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", fake_pynvml([], init_error=DRIVER_NOT_LOADED))
    assert NVMLInventory.available() is False
    with pytest.raises(InventoryError, match=r"NVML could not start \(nvmlInit\): Driver Not"):
        NVMLInventory().devices()


def test_nvml_available_with_a_driver(fake_node):
    assert NVMLInventory.available() is True
    assert fake_node.calls == ["init", "shutdown"]


def test_nvml_unavailable_without_pynvml(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", None)  # import pynvml raises ImportError
    assert NVMLInventory.available() is False
    with pytest.raises(InventoryError, match="needs nvidia-ml-py"):
        NVMLInventory().devices()


# --- NVMLInventory on a real GPU -------------------------------------------------------


@pytest.fixture
def real_nvml():
    if not NVMLInventory.available():
        try:
            import pynvml

            pynvml.nvmlInit()
            why = "nvmlInit succeeded but available() said no"
        except Exception as err:  # the reason is the point: print it
            why = f"{type(err).__name__}: {err}"
        pytest.skip(f"no NVIDIA driver/NVML on this machine: {why}")
    inventory = NVMLInventory()
    yield inventory
    inventory.close()


def test_real_nvml_reads_uuid_memory_and_energy(real_nvml):
    devices = real_nvml.devices()
    assert devices, "NVML is available but lists no devices"
    for gpu in devices:
        assert gpu.uuid.startswith("MIG-" if gpu.is_mig else "GPU-"), gpu
        assert gpu.memory_bytes > 2**30, gpu
        assert gpu.name
    uuids = [gpu.uuid for gpu in devices]
    first = real_nvml.telemetry([*uuids, "GPU-not-on-this-node"])
    assert sorted(first) == sorted(uuids)
    second = real_nvml.telemetry(uuids)
    for uuid in uuids:
        before, after = first[uuid], second[uuid]
        assert before.memory_used_bytes is not None
        if before.utilization_percent is not None:
            assert 0 <= before.utilization_percent <= 100
        if before.energy_joules is not None:  # a counter: never goes backwards
            assert after.energy_joules >= before.energy_joules > 0
    whole = [gpu for gpu in devices if not gpu.is_mig]
    if whole:
        print("energy counters:", {g.uuid: first[g.uuid].energy_joules for g in whole})


def test_a_telemetry_file_feeds_the_static_inventory_from_another_process(tmp_path):
    path = tmp_path / "telemetry.json"
    inventory = StaticInventory.synthetic(2).devices()
    inventory = StaticInventory(inventory, telemetry_file=path)
    assert inventory.telemetry(["GPU-static-0000"])["GPU-static-0000"].utilization_percent == 0
    path.write_text('{"GPU-static-0000": {"utilization_percent": 40, "energy_joules": 5}}')
    reading = inventory.telemetry(["GPU-static-0000"])["GPU-static-0000"]
    assert (reading.utilization_percent, reading.energy_joules) == (40, 5)
    path.write_text('{"GPU-static-0000": {"utilisation": 40}}')
    with pytest.raises(ValueError, match="telemetry.json"):
        inventory.telemetry(["GPU-static-0000"])
    path.write_text('{"GPU-static-0000": {"utilization_percent": 140}}')
    with pytest.raises(ValueError, match="utilization_percent"):
        inventory.telemetry(["GPU-static-0000"])
