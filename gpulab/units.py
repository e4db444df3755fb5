"""Units, defined once: durations and GPU-hours.

Quota config, spawn options, the culler and the API all speak of lengths of time
("8h", "7d") and budgets in GPU-hours. Parsing them in one place means one spelling is
accepted everywhere, one error message tells an operator what is accepted, and a value
the UI shows (``format_duration``) reads back the same (``parse_duration``).

The ``Duration`` trait type brings the same parsing to traitlets config
(``c.GpulabSpawner.max_session = "8h"``), as ``jupyterhub/traitlets.py`` does for byte sizes.
"""

from __future__ import annotations

import math
import re
from numbers import Real
from typing import Any

from traitlets import TraitError, TraitType, Undefined

#: Seconds per unit. Single lower-case letters only: "M" could be read as months, and a
#: longer list of aliases is more to document than it is worth.
UNIT_SECONDS: dict[str, int] = {"w": 7 * 86400, "d": 86400, "h": 3600, "m": 60, "s": 1}

_ACCEPTED = (
    "a number of seconds or a string like '90s', '15m', '8h', '2d', '1w' or '1h30m' "
    f"(units: {', '.join(UNIT_SECONDS)})"
)
# One "<number><unit>" component; the whole string must be a sequence of these.
_COMPONENT = re.compile(r"\s*([0-9]+(?:\.[0-9]+)?|\.[0-9]+)\s*([a-z]+)\s*")
_PLAIN_NUMBER = re.compile(r"\s*([0-9]+(?:\.[0-9]+)?|\.[0-9]+)\s*")


def _is_number(value: Any) -> bool:
    """A real number that is not a bool (``True`` as "1 second" is always a mistake)."""
    return isinstance(value, Real) and not isinstance(value, bool)


def parse_duration(value: Any, *, name: str = "duration") -> float:
    """Seconds (a float >= 0) from a number of seconds or a string like "8h" or "1h30m".

    Strings may combine units, largest first or not, each unit at most once, with optional
    spaces ("1h 30m", the form ``format_duration`` writes); a bare numeric string is
    seconds. Negative, empty, non-finite and unknown-unit values raise ``ValueError``
    naming ``name`` and what is accepted.
    """
    if _is_number(value):
        seconds = float(value)
        if not math.isfinite(seconds) or seconds < 0:
            raise ValueError(f"{name} must be {_ACCEPTED}, >= 0, not {value!r}")
        return seconds
    if not isinstance(value, str):
        raise ValueError(f"{name} must be {_ACCEPTED}, not {value!r}")
    plain = _PLAIN_NUMBER.fullmatch(value)
    if plain:
        return float(plain.group(1))
    total = 0.0
    seen: set[str] = set()
    position = 0
    for match in _COMPONENT.finditer(value):
        unit = match.group(2)
        if match.start() != position or unit not in UNIT_SECONDS or unit in seen:
            break
        seen.add(unit)
        total += float(match.group(1)) * UNIT_SECONDS[unit]
        position = match.end()
    else:
        if seen and position == len(value):
            return total
    raise ValueError(f"{name} must be {_ACCEPTED}, not {value!r}")


def format_duration(seconds: float) -> str:
    """A human string for a duration, e.g. "1h 30m", "2d 4h", "45s"; "0s" for zero.

    Whole seconds are shown (rounded) except below one second. The result parses back
    with ``parse_duration``.
    """
    if not _is_number(seconds) or not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"seconds must be a finite number >= 0, not {seconds!r}")
    if 0 < seconds < 1:
        return f"{seconds:g}s"
    remaining = round(seconds)
    parts = []
    for unit, size in UNIT_SECONDS.items():
        count, remaining = divmod(remaining, size)
        if count:
            parts.append(f"{count}{unit}")
    return " ".join(parts) or "0s"


def parse_gpu_hours(value: Any, *, name: str = "gpu_hours") -> float:
    """GPU-hours (a float >= 0) from a number; strings and bools are rejected.

    A budget is a number in config and JSON alike; accepting "100" would hide a quoting
    mistake that elsewhere means something else.
    """
    if not _is_number(value) or not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a number of GPU-hours >= 0, not {value!r}")
    return float(value)


class Duration(TraitType):
    """A traitlets trait for a length of time: "8h", "1h30m" or a number of seconds.

    The value stored is float seconds (or None where ``allow_none=True``). Command-line and
    environment strings go through the same parser. A string default is parsed once here.
    """

    default_value = 0.0
    info_text = "a duration like '8h', '1h30m' or a number of seconds"

    def __init__(self, default_value: Any = Undefined, allow_none: bool = False, **kwargs):
        if isinstance(default_value, str):
            default_value = parse_duration(default_value, name="Duration default")
        super().__init__(default_value=default_value, allow_none=allow_none, **kwargs)

    def validate(self, obj: Any, value: Any) -> float | None:
        if value is None and self.allow_none:
            return None
        try:
            return parse_duration(value)
        except ValueError:
            owner = type(obj).__name__ if obj is not None else "Duration"
            raise TraitError(
                f"{owner}.{self.name} must be a duration like '8h', not {value!r}"
            ) from None
