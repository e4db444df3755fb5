"""Run ids, owners, names and other strings that become paths or manifest fields.

Everything that enters the store from outside goes through one of these checks before
anything is written, so no value can name a path outside the store's root:

- run ids are generated here (``20261123-031500-ab12cd``: UTC time to the second, then 24
  random bits), so they sort by creation time, and must match that pattern exactly;
- owners are JupyterHub user names restricted to a URL- and path-safe ASCII subset
  (letters, digits, ``_ . @ + -``, not starting with ``.``; at most 128 characters);
  JupyterHub lower-cases names by default, and e-mail addresses as names fit;
- run names are display text: anything printable up to 200 characters, HTML included
  (``<b>`` is kept as data; escaping is the renderer's job); control characters are refused;
- artifact names are one safe path component (no folders).
"""

from __future__ import annotations

import math
import operator
import re
import secrets
import time
from collections.abc import Mapping
from typing import Any

from gpulab.runs.errors import InvalidRunInput

RUN_ID_PATTERN = re.compile(r"[0-9]{8}-[0-9]{6}-[0-9a-f]{6}")
OWNER_PATTERN = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.@+-]{0,127}")
ARTIFACT_PATTERN = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.+-]{0,127}")
CONTROL = re.compile(r"[\x00-\x1f\x7f]")
MAX_NAME_LENGTH = 200
MAX_DEVICES = 4096
MAX_WORLD_SIZE = 65536


def _shown(value: Any) -> str:
    """A value for an error message: repr'd (so NUL shows as \\x00) and cut short."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def new_run_id(now: float | None = None) -> str:
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime(time.time() if now is None else now))
    return f"{stamp}-{secrets.token_hex(3)}"


def check_run_id(run_id: Any) -> str:
    if not isinstance(run_id, str) or not RUN_ID_PATTERN.fullmatch(run_id):
        raise InvalidRunInput(
            f"a run id looks like 20261123-031500-ab12cd, not {_shown(run_id)}", reason="run_id"
        )
    return run_id


def check_owner(owner: Any) -> str:
    if not isinstance(owner, str) or not OWNER_PATTERN.fullmatch(owner):
        raise InvalidRunInput(
            "an owner is a user name of letters, digits and _ . @ + - (not starting with"
            f" '.', at most 128 characters), not {_shown(owner)}",
            reason="owner",
        )
    return owner


def check_name(name: Any) -> str:
    if not isinstance(name, str):
        raise InvalidRunInput(f"a run name is text, not {type(name).__name__}", reason="name")
    if len(name) > MAX_NAME_LENGTH:
        raise InvalidRunInput(
            f"a run name is at most {MAX_NAME_LENGTH} characters, not {len(name)}", reason="name"
        )
    if CONTROL.search(name):
        raise InvalidRunInput(
            f"a run name has no control characters (newline, NUL...): {_shown(name)}",
            reason="name",
        )
    return name


def check_artifact_name(name: Any) -> str:
    if not isinstance(name, str) or not ARTIFACT_PATTERN.fullmatch(name):
        raise InvalidRunInput(
            "an artifact name is one file name of letters, digits and _ . + - (not starting"
            f" with '.', at most 128 characters), not {_shown(name)}",
            reason="artifact",
        )
    return name


def check_count(value: Any, what: str, *, minimum: int = 0, maximum: int | None = None) -> int:
    """An integer (a step, a rank, a world size): ints and numpy/torch integers, not bools."""
    if isinstance(value, bool):
        raise InvalidRunInput(f"{what} is an integer, not {value!r}", reason=what)
    try:
        number = operator.index(value)
    except TypeError:
        raise InvalidRunInput(f"{what} is an integer, not {_shown(value)}", reason=what) from None
    if number < minimum or (maximum is not None and number > maximum):
        bounds = f">= {minimum}" if maximum is None else f"in {minimum}..{maximum}"
        raise InvalidRunInput(f"{what} must be {bounds}, not {number}", reason=what)
    return number


def check_devices(devices: Any) -> list[str]:
    if isinstance(devices, str | bytes) or not hasattr(devices, "__iter__"):
        raise InvalidRunInput(
            f"devices is a list of device ids, not {_shown(devices)}", reason="devices"
        )
    found = []
    for device in devices:
        if isinstance(device, int) and not isinstance(device, bool):
            device = str(device)
        if not isinstance(device, str) or not device or len(device) > 128 or CONTROL.search(
            device
        ):
            raise InvalidRunInput(
                f"a device id is a short text like 'GPU-8f3a...' or '0', not {_shown(device)}",
                reason="devices",
            )
        found.append(device)
    if len(found) > MAX_DEVICES:
        raise InvalidRunInput(f"at most {MAX_DEVICES} devices", reason="devices")
    return found


def check_json(value: Any, what: str) -> Any:
    """``value`` if it is plain JSON (dict with str keys, list, str, finite number, bool, None).

    Tuples are accepted and come back as lists. The error names the offending key's path,
    e.g. ``config['optimizer']['betas'][1] is a numpy.float32``.
    """
    _walk(value, what)
    return value


def _walk(value: Any, path: str) -> None:
    if value is None or isinstance(value, str | bool | int):
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidRunInput(f"{path} is {value!r}: JSON has no NaN or infinity",
                                  reason=path)
        return
    if isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str):
                raise InvalidRunInput(
                    f"{path} has a key {_shown(key)} that is not a string", reason=path
                )
            _walk(item, f"{path}[{key!r}]")
        return
    if isinstance(value, list | tuple):
        for index, item in enumerate(value):
            _walk(item, f"{path}[{index}]")
        return
    kind = type(value)
    name = kind.__qualname__ if kind.__module__ == "builtins" else (
        f"{kind.__module__.split('.')[0]}.{kind.__qualname__}")
    raise InvalidRunInput(
        f"{path} is a {name}, not a JSON value (str, number, bool, None, list or dict)",
        reason=path,
    )
