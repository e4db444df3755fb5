"""The GPU inventory: which devices this node has, and what they are doing.

Admission hands out devices by UUID, the accountant reads their energy counters, the
culler reads their utilisation, the spawn form counts what is free. All of them ask an
``Inventory``:

- ``NVMLInventory`` reads the NVIDIA driver through ``pynvml`` (package ``nvidia-ml-py``),
  MIG instances included;
- ``StaticInventory`` lists devices from config, for nodes where NVML isn't reachable (the
  hub on a head node, a container without the driver) and for tests, which control its
  telemetry through ``set_telemetry``;
- ``EmptyInventory`` has no GPUs: CPU profiles only.

``detect_inventory()`` picks one. Devices and telemetry are addressed by UUID, never by
index: NVML numbers every device on the node and ignores ``CUDA_VISIBLE_DEVICES``, so an
index means a different device inside a user's server than in the hub. A UUID is the same
everywhere, and asking by UUID means a user's view holds only the devices they were given.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import logging
import math
import os
import re
import threading
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


class InventoryError(RuntimeError):
    """The inventory could not be read (the NVML call and its error are in the message)."""


@dataclass(frozen=True)
class GPU:
    """One allocatable device: a whole GPU, or a MIG instance of one.

    ``index`` is NVML's index of the (parent) GPU on this node, for people and logs only;
    allocation uses ``uuid``, which for a MIG instance is its "MIG-..." UUID, the form
    ``CUDA_VISIBLE_DEVICES`` accepts. ``mig_parent_uuid`` and ``profile`` (e.g. "1g.10gb")
    are set for MIG instances only.
    """

    index: int
    uuid: str
    name: str
    memory_bytes: int
    mig_parent_uuid: str | None = None
    profile: str | None = None

    @property
    def is_mig(self) -> bool:
        return self.mig_parent_uuid is not None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Telemetry:
    """One reading of one device. A field is None where the device doesn't report it
    (NVML "Not Supported", e.g. power on a MIG instance) or it could not be read.

    ``energy_joules`` is NVML's total energy counter since the driver loaded: take
    differences between readings, never the value itself, as energy used.
    """

    uuid: str
    utilization_percent: float | None = None
    memory_used_bytes: int | None = None
    power_watts: float | None = None
    energy_joules: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Inventory(ABC):
    """The devices of one node and their telemetry.

    Override points:

    - ``devices()`` (abstract): every allocatable device, in a stable order. Must not
      cache across calls if devices can change (MIG reconfiguration).
    - ``telemetry(uuids)``: a reading for each asked UUID that exists; UUIDs not in the
      inventory are left out, never an error, so a stale allocation can't break a loop.
      The default reports every metric as unknown (None).
    - ``by_uuid(uuid)``: derived from ``devices()``; override only to make it cheaper.
    """

    @abstractmethod
    def devices(self) -> list[GPU]:
        """Every allocatable device on this node."""

    def telemetry(self, uuids: Iterable[str]) -> dict[str, Telemetry]:
        known = {gpu.uuid for gpu in self.devices()}
        return {uuid: Telemetry(uuid) for uuid in _unique(uuids) if uuid in known}

    def by_uuid(self, uuid: str) -> GPU | None:
        """The device with this UUID, or None when this node has none."""
        return next((gpu for gpu in self.devices() if gpu.uuid == uuid), None)

    def __repr__(self) -> str:  # never reads the devices: repr must not fail or block
        return f"<{type(self).__name__}>"


def _unique(uuids: Iterable[str]) -> list[str]:
    if isinstance(uuids, str):  # one UUID passed bare would otherwise be read per character
        raise TypeError(f"uuids must be an iterable of UUID strings, not a string {uuids!r}")
    return list(dict.fromkeys(uuids))


class EmptyInventory(Inventory):
    """A node without GPUs: the spawn form offers CPU profiles only."""

    def devices(self) -> list[GPU]:
        return []


# Telemetry fields a test may set, with what each must be.
_TELEMETRY_RULES = {
    "utilization_percent": (float, "a number from 0 to 100 or None"),
    "memory_used_bytes": (int, "a whole number >= 0 or None"),
    "power_watts": (float, "a number >= 0 or None"),
    "energy_joules": (float, "a number >= 0 or None"),
}
_KEEP = object()  # set_telemetry's "leave this metric as it is"


class StaticInventory(Inventory):
    """Devices listed in config; telemetry is whatever was last set.

    Each entry is a ``GPU`` or a dict of its fields: ``uuid`` and ``memory_bytes`` are
    required, ``name`` defaults to "Static GPU", ``index`` to the entry's position,
    ``mig_parent_uuid`` and ``profile`` to None. Entries are checked at construction (unique
    UUIDs, memory >= 0, no unknown keys) so a typo stops the hub at start.

    Test hook: ``set_telemetry(uuid, utilization_percent=..., ...)`` sets what
    ``telemetry()`` reports for a device, e.g. to make a GPU look idle to the culler or to
    advance its energy counter for the accountant. Until set, a device reports 0%
    utilisation and 0 bytes used (an idle GPU), and no power or energy (None).

    The same from another process: with ``telemetry_file``, each ``telemetry()`` call
    first applies that JSON file, ``{uuid: {"utilization_percent": 50, ...}}``, if it
    exists (write it whole and rename it into place). The end-to-end tests drive the hub's
    quota service this way (``c.GpulabQuota.static_telemetry_file``).
    """

    def __init__(
        self,
        devices: Iterable[GPU | Mapping[str, Any]],
        telemetry_file: str | os.PathLike | None = None,
    ):
        self._devices = _validate_static(devices)
        self._telemetry_file = None if telemetry_file is None else Path(telemetry_file)
        self._lock = threading.Lock()
        self._telemetry = {
            gpu.uuid: Telemetry(gpu.uuid, utilization_percent=0.0, memory_used_bytes=0)
            for gpu in self._devices
        }

    @classmethod
    def from_config(cls, entries: Iterable[Mapping[str, Any]]) -> StaticInventory:
        """An inventory from config: a list of dicts as described in the class docstring."""
        return cls(entries)

    @classmethod
    def synthetic(cls, n: int, name: str = "Static GPU", memory_gib: float = 80) -> StaticInventory:
        """``n`` identical GPUs with stable UUIDs "GPU-static-0000", "GPU-static-0001", ...

        For tests, benchmarks and demos that need GPUs on a machine without any.
        """
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise ValueError(f"n must be a whole number >= 0, not {n!r}")
        memory = int(memory_gib * 2**30)
        return cls(
            GPU(index=i, uuid=f"GPU-static-{i:04d}", name=name, memory_bytes=memory)
            for i in range(n)
        )

    def devices(self) -> list[GPU]:
        return list(self._devices)

    def __repr__(self) -> str:
        return f"<StaticInventory with {len(self._devices)} GPUs>"

    def telemetry(self, uuids: Iterable[str]) -> dict[str, Telemetry]:
        self._apply_telemetry_file()
        with self._lock:
            return {u: self._telemetry[u] for u in _unique(uuids) if u in self._telemetry}

    def _apply_telemetry_file(self) -> None:
        if self._telemetry_file is None:
            return
        try:
            readings = json.loads(self._telemetry_file.read_text())
        except FileNotFoundError:
            return
        if not isinstance(readings, dict):
            raise ValueError(f"{self._telemetry_file} must hold a JSON object of readings by UUID")
        for uuid, reading in readings.items():
            try:
                self.set_telemetry(uuid, **reading)
            except TypeError as e:  # an unknown metric name
                raise ValueError(f"{self._telemetry_file}: {e}") from None

    def set_telemetry(
        self,
        uuid: str,
        *,
        utilization_percent: Any = _KEEP,
        memory_used_bytes: Any = _KEEP,
        power_watts: Any = _KEEP,
        energy_joules: Any = _KEEP,
    ) -> Telemetry:
        """Set what ``telemetry()`` reports for ``uuid`` (test hook); metrics not passed keep
        their value, None means "not reported". Returns the new reading."""
        given = {
            "utilization_percent": utilization_percent,
            "memory_used_bytes": memory_used_bytes,
            "power_watts": power_watts,
            "energy_joules": energy_joules,
        }
        changes = {k: _check_metric(k, v) for k, v in given.items() if v is not _KEEP}
        with self._lock:
            if uuid not in self._telemetry:
                raise KeyError(
                    f"set_telemetry: no device with uuid {uuid!r} in this StaticInventory "
                    f"(it has {sorted(self._telemetry)})"
                )
            reading = replace(self._telemetry[uuid], **changes)
            self._telemetry[uuid] = reading
        return reading


def _check_metric(name: str, value: Any) -> Any:
    kind, must = _TELEMETRY_RULES[name]
    if value is None:
        return None
    ok = isinstance(value, int if kind is int else (int, float)) and not isinstance(value, bool)
    ok = ok and math.isfinite(value) and value >= 0
    if name == "utilization_percent":
        ok = ok and value <= 100
    if not ok:
        raise ValueError(f"set_telemetry: {name} must be {must}, not {value!r}")
    return kind(value)


_GPU_FIELDS = {f.name for f in fields(GPU)}


def _validate_static(entries: Iterable[GPU | Mapping[str, Any]]) -> list[GPU]:
    if isinstance(entries, (str, bytes, Mapping)):
        raise ValueError(f"static GPU inventory must be a list of GPUs, not {entries!r}")
    devices: list[GPU] = []
    seen: set[str] = set()
    for position, entry in enumerate(entries):
        where = f"static GPU inventory entry {position}"
        gpu = _static_entry(entry, position, where)
        if gpu.uuid in seen:
            raise ValueError(f"{where}: uuid {gpu.uuid!r} appears twice; UUIDs must be unique")
        seen.add(gpu.uuid)
        devices.append(gpu)
    return devices


def _static_entry(entry: GPU | Mapping[str, Any], position: int, where: str) -> GPU:
    if isinstance(entry, GPU):
        values = entry.to_dict()
    elif isinstance(entry, Mapping):
        unknown = sorted(set(entry) - _GPU_FIELDS, key=str)
        if unknown:
            raise ValueError(
                f"{where}: unknown keys {unknown}; accepted: {sorted(_GPU_FIELDS)}, not {entry!r}"
            )
        missing = [key for key in ("uuid", "memory_bytes") if key not in entry]
        if missing:
            raise ValueError(f"{where}: missing {missing}, in {entry!r}")
        values = {"index": position, "name": "Static GPU", **entry}
    else:
        raise ValueError(f"{where} must be a GPU or a dict of its fields, not {entry!r}")

    def check(key: str, ok: bool, must: str) -> None:
        if not ok:
            raise ValueError(f"{where}: {key} must be {must}, not {values[key]!r}")

    def whole(v: Any) -> bool:
        return isinstance(v, int) and not isinstance(v, bool) and v >= 0

    def text(v: Any) -> bool:
        return isinstance(v, str) and v.strip() == v and v != ""

    check("uuid", text(values["uuid"]), "a non-empty string without spaces around it")
    check("memory_bytes", whole(values["memory_bytes"]), "a whole number of bytes >= 0")
    check("index", whole(values["index"]), "a whole number >= 0")
    check("name", text(values["name"]), "a non-empty string")
    for key in ("mig_parent_uuid", "profile"):
        check(key, values.get(key) is None or text(values[key]), "a non-empty string or None")
    return GPU(**values)


# A MIG instance's NVML name ends with its profile: "NVIDIA A100-SXM4-40GB MIG 1g.5gb",
# "... MIG 1g.10gb+me", or with a compute instance "... MIG 1c.2g.20gb".
_MIG_PROFILE = re.compile(r"\b((?:\d+c\.)?\d+g\.\d+gb(?:\+\w+)?)\s*$")


class NVMLInventory(Inventory):
    """The devices the NVIDIA driver reports, read through ``pynvml`` (nvidia-ml-py).

    NVML starts on first use, not at construction, so building one costs nothing where it
    is never asked. A GPU in MIG mode is listed as its MIG instances (CUDA cannot run on
    the whole of it), each with its "MIG-..." UUID, memory and profile; ``telemetry()``
    also answers for the parent GPU's UUID, whose power and energy counters cover all its
    instances (NVML reports neither per instance).

    A metric NVML does not support on a device is None; any other NVML error while reading
    a metric is logged and the metric is None too, so one lost GPU does not stop the
    accountant reading the others. Errors listing devices raise ``InventoryError``.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._nvml: Any = None  # the pynvml module, once nvmlInit succeeded

    @classmethod
    def available(cls) -> bool:
        """Whether pynvml is installed and the driver's NVML library answers nvmlInit."""
        try:
            nvml = importlib.import_module("pynvml")
        except ImportError:
            return False
        try:
            nvml.nvmlInit()
        except nvml.NVMLError as err:
            log.debug("NVML not available: %s", err)
            return False
        with contextlib.suppress(nvml.NVMLError):
            nvml.nvmlShutdown()
        return True

    def devices(self) -> list[GPU]:
        return [gpu for gpu, _ in self._walk()[0]]

    def telemetry(self, uuids: Iterable[str]) -> dict[str, Telemetry]:
        asked = _unique(uuids)
        listed, parents = self._walk()
        handles = {**parents, **{gpu.uuid: handle for gpu, handle in listed}}
        return {uuid: self._read(uuid, handles[uuid]) for uuid in asked if uuid in handles}

    def close(self) -> None:
        """Shut NVML down (it starts again on next use)."""
        with self._lock:
            nvml, self._nvml = self._nvml, None
        if nvml is not None:
            try:
                nvml.nvmlShutdown()
            except nvml.NVMLError as err:
                log.debug("nvmlShutdown: %s", err)

    def _start(self) -> Any:
        with self._lock:
            if self._nvml is None:
                try:
                    nvml = importlib.import_module("pynvml")
                except ImportError as err:
                    raise InventoryError("NVML inventory needs nvidia-ml-py (pynvml)") from err
                try:
                    nvml.nvmlInit()
                except nvml.NVMLError as err:
                    raise InventoryError(f"NVML could not start (nvmlInit): {err}") from err
                self._nvml = nvml
            return self._nvml

    def _call(self, function: str, *args: Any) -> Any:
        nvml = self._start()
        try:
            return getattr(nvml, function)(*args)
        except nvml.NVMLError as err:
            raise InventoryError(f"NVML call {function}{args!r} failed: {err}") from err

    def _walk(self) -> tuple[list[tuple[GPU, Any]], dict[str, Any]]:
        """(allocatable devices with their handles, {uuid: handle} of GPUs in MIG mode)."""
        listed: list[tuple[GPU, Any]] = []
        parents: dict[str, Any] = {}
        for index in range(self._call("nvmlDeviceGetCount")):
            handle = self._call("nvmlDeviceGetHandleByIndex", index)
            gpu = self._describe(handle, index)
            if self._mig_enabled(handle):
                parents[gpu.uuid] = handle
                listed += self._mig_instances(handle, gpu)
            else:
                listed.append((gpu, handle))
        return listed, parents

    def _describe(self, handle: Any, index: int, parent: GPU | None = None) -> GPU:
        name = _text(self._call("nvmlDeviceGetName", handle))
        profile = None
        if parent is not None:
            found = _MIG_PROFILE.search(name)
            profile = found.group(1) if found else None
        return GPU(
            index=index,
            uuid=_text(self._call("nvmlDeviceGetUUID", handle)),
            name=name,
            memory_bytes=int(self._call("nvmlDeviceGetMemoryInfo", handle).total),
            mig_parent_uuid=parent.uuid if parent else None,
            profile=profile,
        )

    def _mig_enabled(self, handle: Any) -> bool:
        nvml = self._start()
        try:
            current, _pending = nvml.nvmlDeviceGetMigMode(handle)
        except nvml.NVMLError as err:
            if err.value == nvml.NVML_ERROR_NOT_SUPPORTED:  # not a MIG-capable GPU
                return False
            raise InventoryError(f"NVML call nvmlDeviceGetMigMode failed: {err}") from err
        return current == nvml.NVML_DEVICE_MIG_ENABLE

    def _mig_instances(self, handle: Any, parent: GPU) -> list[tuple[GPU, Any]]:
        nvml = self._start()
        instances = []
        for slot in range(self._call("nvmlDeviceGetMaxMigDeviceCount", handle)):
            try:
                mig = nvml.nvmlDeviceGetMigDeviceHandleByIndex(handle, slot)
            except nvml.NVMLError as err:
                if err.value == nvml.NVML_ERROR_NOT_FOUND:  # an empty slot
                    continue
                raise InventoryError(
                    f"NVML call nvmlDeviceGetMigDeviceHandleByIndex({parent.uuid!r}, {slot}) "
                    f"failed: {err}"
                ) from err
            instances.append((self._describe(mig, parent.index, parent), mig))
        return instances

    def _read(self, uuid: str, handle: Any) -> Telemetry:
        metric = self._metric
        return Telemetry(
            uuid=uuid,
            utilization_percent=metric(
                uuid, "nvmlDeviceGetUtilizationRates", handle, lambda r: float(r.gpu)
            ),
            memory_used_bytes=metric(
                uuid, "nvmlDeviceGetMemoryInfo", handle, lambda r: int(r.used)
            ),
            power_watts=metric(uuid, "nvmlDeviceGetPowerUsage", handle, lambda mw: mw / 1000),
            energy_joules=metric(
                uuid, "nvmlDeviceGetTotalEnergyConsumption", handle, lambda mj: mj / 1000
            ),
        )

    def _metric(self, uuid: str, function: str, handle: Any, convert: Any) -> Any:
        nvml = self._start()
        try:
            return convert(getattr(nvml, function)(handle))
        except nvml.NVMLError as err:
            if err.value != nvml.NVML_ERROR_NOT_SUPPORTED:
                log.warning(
                    "NVML %s on %s failed: %s; reporting it as unknown", function, uuid, err
                )
            return None


def _text(value: str | bytes) -> str:
    """pynvml returns bytes or str depending on its version."""
    return value.decode() if isinstance(value, bytes) else value


def detect_inventory(
    static: Iterable[GPU | Mapping[str, Any]] | None = None,
    telemetry_file: str | os.PathLike | None = None,
) -> Inventory:
    """The inventory for this node: the static list when config gives one (even an empty
    one: the operator said so), else NVML when the driver answers, else none.
    ``telemetry_file`` feeds a static inventory's readings (see ``StaticInventory``)."""
    if static is not None:
        return StaticInventory(static, telemetry_file=telemetry_file)
    if NVMLInventory.available():
        return NVMLInventory()
    return EmptyInventory()


__all__ = [
    "GPU",
    "EmptyInventory",
    "Inventory",
    "InventoryError",
    "NVMLInventory",
    "StaticInventory",
    "Telemetry",
    "detect_inventory",
]
