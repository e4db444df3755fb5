"""Quota policies: what one user may hold and use.

``Policy`` is the resolved contract the ledger's ``admit()`` reads. ``PolicyLevel`` is one
level of config (the defaults, one group, one user) with only some limits set;
``PolicySet`` checks every level at construction, so a bad value or a group that does not
exist stops the hub at start (fail closed), and ``PolicySet.resolve`` turns the levels into
one user's ``Policy`` by the rule written in its docstring.

Where the levels come from, lowest precedence first:

1. the config file (``c.GpulabQuota.default_policy``, ``group_policies``, ``user_policies``);
2. operator overrides kept in the ledger (``Ledger.set_policy``, the quota API's
   ``PUT api/policies/...``, ``gpulab quota set``). They win, field by field, at their
   level (``PolicySet.with_overrides``), take effect at once in every process that reads
   the ledger, and every change is audited (``limit_changed``, with the old and new value).

Config form of a level (every key optional; ``None`` means "no limit")::

    {"max_gpus": 2, "gpu_hours": 100, "window": "7d", "max_session": "8h",
     "max_dask_workers": 8, "profiles": ["cpu", "1-gpu"]}
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields
from types import MappingProxyType
from typing import Any

from gpulab.units import format_duration, parse_duration, parse_gpu_hours

WEEK_SECONDS = 7 * 24 * 3600.0


@dataclass(frozen=True)
class Policy:
    """The limits that apply to one user after resolution. ``None`` means no limit."""

    max_gpus: int | None = None  # GPUs held at once, over all the user's servers
    gpu_hours: float | None = None  # GPU-hours per rolling window
    window_seconds: float = WEEK_SECONDS  # the rolling window of gpu_hours
    max_session_seconds: float | None = None  # longest a GPU server may run
    max_dask_workers: int | None = None  # Dask workers at once
    profiles: frozenset[str] | None = None  # spawn profiles allowed; None = all

    def to_json(self) -> dict[str, Any]:
        """A JSON-serialisable dict for the UI and the API: durations in seconds and as a
        human string ("7d", "8h"), profiles as a sorted list; None still means no limit."""
        session = self.max_session_seconds
        return {
            "max_gpus": self.max_gpus,
            "gpu_hours": self.gpu_hours,
            "window_seconds": self.window_seconds,
            "window": format_duration(self.window_seconds),
            "max_session_seconds": session,
            "max_session": None if session is None else format_duration(session),
            "max_dask_workers": self.max_dask_workers,
            "profiles": None if self.profiles is None else sorted(self.profiles),
        }


class PolicyError(ValueError):
    """A quota setting is invalid. The message names the setting (``setting``) and the
    bad value, so the operator can fix config without reading code."""

    def __init__(self, message: str, *, setting: str):
        super().__init__(message)
        self.setting = setting


# Config key -> Policy field. Durations are spelt without "_seconds" in config because
# they accept "8h" as well as seconds.
CONFIG_KEYS: Mapping[str, str] = MappingProxyType(
    {
        "max_gpus": "max_gpus",
        "gpu_hours": "gpu_hours",
        "window": "window_seconds",
        "max_session": "max_session_seconds",
        "max_dask_workers": "max_dask_workers",
        "profiles": "profiles",
    }
)
_POLICY_FIELDS = tuple(f.name for f in fields(Policy))
assert sorted(CONFIG_KEYS.values()) == sorted(_POLICY_FIELDS)


def _fail(setting: str, must: str, value: Any) -> PolicyError:
    return PolicyError(f"{setting} must be {must}, not {value!r}", setting=setting)


def _whole_or_none(setting: str, value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise _fail(setting, "a whole number >= 0 or None", value)
    return value


def _gpu_hours(setting: str, value: Any) -> float | None:
    if value is None:
        return None
    try:
        return parse_gpu_hours(value, name=setting)
    except ValueError:
        raise _fail(setting, "a number of GPU-hours >= 0 or None", value) from None


def _positive_duration(setting: str, value: Any, example: str, allow_none: bool) -> float | None:
    """Seconds > 0. Zero is refused: a zero window or session is a typo more often than a
    way to deny GPUs, which ``max_gpus: 0`` says plainly."""
    must = f"a duration > 0 like {example!r}" + (" or None" if allow_none else "")
    if value is None and allow_none:
        return None
    try:
        seconds = parse_duration(value, name=setting)
    except ValueError:
        raise _fail(setting, must, value) from None
    if seconds <= 0:
        raise _fail(setting, must, value)
    return seconds


def _profiles(setting: str, value: Any) -> frozenset[str] | None:
    if value is None:
        return None
    # A bare string would be read as a set of characters: "cpu" -> {"c", "p", "u"}.
    must = "a list of profile names (like ['cpu', '1-gpu']) or None"
    if isinstance(value, (str, bytes, Mapping)) or not isinstance(value, Iterable):
        raise _fail(setting, must, value)
    names = list(value)
    if not all(isinstance(n, str) and n.strip() for n in names):
        raise _fail(setting, must, value)
    return frozenset(names)


_PARSERS = {
    "max_gpus": _whole_or_none,
    "gpu_hours": _gpu_hours,
    "window": lambda s, v: _positive_duration(s, v, "7d", allow_none=False),
    "max_session": lambda s, v: _positive_duration(s, v, "8h", allow_none=True),
    "max_dask_workers": _whole_or_none,
    "profiles": _profiles,
}


class PolicyLevel:
    """One level of quota config (the defaults, a group or a user): some limits set.

    A limit not given is *unset* (the level has no say on it), which differs from a limit
    set to ``None`` (the level says "no limit"). ``values`` holds the set limits only,
    keyed by ``Policy`` field names, with durations in seconds and profiles as a frozenset.

    ``setting`` is where the config came from, e.g. "quota.groups['physics']"; every error
    names ``{setting}.{key}``.
    """

    __slots__ = ("setting", "values")

    def __init__(self, config: Mapping[str, Any] | None = None, *, setting: str = "policy"):
        self.setting = setting
        if config is None:
            config = {}
        if not isinstance(config, Mapping):
            raise _fail(setting, "a dict of limits", config)
        unknown = [key for key in config if key not in CONFIG_KEYS]
        if unknown:
            raise PolicyError(_unknown_keys_message(setting, unknown), setting=setting)
        parsed = {
            CONFIG_KEYS[key]: _PARSERS[key](f"{setting}.{key}", value)
            for key, value in config.items()
        }
        self.values: Mapping[str, Any] = MappingProxyType(parsed)

    def is_set(self, field: str) -> bool:
        """Whether this level sets ``field`` (a ``Policy`` field name), even to None."""
        if field not in _POLICY_FIELDS:
            raise KeyError(f"{field!r} is not a Policy field; fields: {list(_POLICY_FIELDS)}")
        return field in self.values

    def to_config(self) -> dict[str, Any]:
        """The config form again (durations in seconds, profiles sorted): for the audit
        log and the operator's API."""
        out = {}
        for key, field in CONFIG_KEYS.items():
            if field in self.values:
                value = self.values[field]
                out[key] = sorted(value) if isinstance(value, frozenset) else value
        return out

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PolicyLevel) and dict(self.values) == dict(other.values)

    def __hash__(self) -> int:
        return hash(tuple(sorted(self.values.items(), key=lambda item: item[0])))

    def __repr__(self) -> str:
        return f"PolicyLevel({self.to_config()!r}, setting={self.setting!r})"


def _unknown_keys_message(setting: str, unknown: list[Any]) -> str:
    hints = []
    for key in unknown:
        close = difflib.get_close_matches(str(key), list(CONFIG_KEYS), n=1)
        hints.append(f"{key!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
    return f"{setting} has unknown keys {', '.join(hints)}; accepted keys: {', '.join(CONFIG_KEYS)}"


# Override levels as the ledger names them -> the PolicySet attribute / overrides key.
OVERRIDE_LEVELS: Mapping[str, str] = MappingProxyType(
    {"default": "defaults", "group": "groups", "user": "users"}
)


def override_setting(level: Any, name: Any) -> str:
    """Check an override's target and return its setting name for error messages
    ("override.defaults", "override.groups['physics']").

    ``level`` is "default" (``name`` must be ""), "group" or "user" (``name`` a non-blank
    string of at most 255 characters). Raises ``PolicyError`` naming ``level`` or ``name``.
    """
    if not isinstance(level, str) or level not in OVERRIDE_LEVELS:
        raise _fail("level", f"one of {', '.join(map(repr, OVERRIDE_LEVELS))}", level)
    if level == "default":
        if name not in ("", None):
            raise _fail("name", "'' for the default level", name)
        return "override.defaults"
    if not isinstance(name, str) or not name.strip() or len(name) > 255:
        raise _fail("name", f"a non-empty {level} name of at most 255 characters", name)
    return f"override.{OVERRIDE_LEVELS[level]}[{name!r}]"


class PolicySet:
    """Quota config for everyone: defaults, per-group and per-user levels.

    Resolution rule (``resolve``), one field at a time:

    1. Start from ``defaults``; a field the defaults leave unset takes ``Policy()``'s
       built-in value (no limit; a one-week window).
    2. If any of the user's groups sets the field, the groups' value replaces the
       default, whether higher or lower (so a "students" group can tighten what everyone
       gets). Where several of the user's groups set it, the most generous wins: ``None``
       (no limit) over any number, else the largest number; for ``profiles``, the union
       of the groups' lists (``None``, all profiles, wins).
       ``gpu_hours`` and ``window`` are one budget and resolve together, so the result is
       always a budget one group actually grants, never a mix (100 h per 7 d and 10 h per
       1 d must not become 100 h per 1 d). Each group setting either offers its budget,
       taking the part it leaves unset from the defaults; the most generous offer wins:
       no limit first, then the highest rate (GPU-hours per hour of window: over any
       stretch longer than both windows it grants more), then the longer window.
    3. A field set for the user (``users[name]``) replaces all of that.

    Why: a student in two workshops gets the better of the two rather than whichever
    was listed last, and group order never matters; an operator's per-user override is
    the final word, in both directions (to lift a limit or to lower one).

    Groups in ``user_groups`` without a level are ignored. Every level is validated at
    construction; with ``known_groups`` given, a level for a group not in it is an error,
    since a misspelt group name would otherwise silently grant nothing.
    ``setting`` prefixes every error ("quota.groups['physics'].max_gpus must be ...").
    """

    def __init__(
        self,
        defaults: Mapping[str, Any] | None = None,
        groups: Mapping[str, Mapping[str, Any]] | None = None,
        users: Mapping[str, Mapping[str, Any]] | None = None,
        known_groups: Iterable[str] | None = None,
        *,
        setting: str = "quota",
    ):
        self.setting = setting
        self.defaults = PolicyLevel(defaults, setting=f"{setting}.defaults")
        self.groups = self._levels("groups", groups)
        self.users = self._levels("users", users)
        if known_groups is not None:
            if isinstance(known_groups, str):
                raise _fail(f"{setting} known_groups", "a collection of group names", known_groups)
            known = set(known_groups)
            for name in self.groups:
                if name not in known:
                    where = f"{setting}.groups[{name!r}]"
                    shown = sorted(known)[:20]
                    more = f" and {len(known) - 20} more" if len(known) > 20 else ""
                    raise PolicyError(
                        f"{where} names a group that does not exist; known groups: {shown}{more}",
                        setting=where,
                    )

    def _levels(self, kind: str, config: Any) -> Mapping[str, PolicyLevel]:
        where = f"{self.setting}.{kind}"
        if config is None:
            config = {}
        if not isinstance(config, Mapping):
            raise _fail(where, f"a dict of {kind[:-1]} name -> limits", config)
        levels = {}
        for name, level in config.items():
            if not isinstance(name, str) or not name.strip():
                raise _fail(f"{where} key", f"a non-empty {kind[:-1]} name", name)
            levels[name] = PolicyLevel(level, setting=f"{where}[{name!r}]")
        return MappingProxyType(levels)

    def to_config(self) -> dict[str, Any]:
        """The levels in config form: {"defaults": {...}, "groups": {...}, "users": {...}}."""
        return {
            "defaults": self.defaults.to_config(),
            "groups": {name: level.to_config() for name, level in sorted(self.groups.items())},
            "users": {name: level.to_config() for name, level in sorted(self.users.items())},
        }

    def with_overrides(self, overrides: Mapping[str, Any] | None) -> PolicySet:
        """This set with operator overrides layered on top: a new ``PolicySet``.

        ``overrides`` has the form of ``Ledger.policy_overrides()``:
        ``{"defaults": {...}, "groups": {name: {...}}, "users": {name: {...}}}`` (each key
        optional). Precedence: config file < overrides. At each level (the defaults, one
        group, one user) a field the override sets replaces the configured one, field by
        field; fields it leaves unset keep the config's value; a group or user that only
        the overrides name gets a level of its own. ``resolve`` then applies its rule to the
        merged levels as usual (so a user's override still beats any group's).

        Overrides are validated like config; errors name "override.groups['physics']...".
        Groups are not checked against ``known_groups`` (JupyterHub groups come and go while
        the hub runs).
        """
        if not overrides:
            return self
        if not isinstance(overrides, Mapping):
            raise _fail("override", "a dict with 'defaults', 'groups' and 'users'", overrides)
        unknown = [key for key in overrides if key not in OVERRIDE_LEVELS.values()]
        if unknown:
            raise PolicyError(
                f"override has unknown keys {unknown!r}; accepted: defaults, groups, users",
                setting="override",
            )
        extra = PolicySet(
            overrides.get("defaults"),
            overrides.get("groups"),
            overrides.get("users"),
            setting="override",
        )

        def merge(base: Mapping[str, PolicyLevel], top: Mapping[str, PolicyLevel]) -> dict:
            return {
                name: {
                    **(base[name].to_config() if name in base else {}),
                    **(top[name].to_config() if name in top else {}),
                }
                for name in {*base, *top}
            }

        return PolicySet(
            {**self.defaults.to_config(), **extra.defaults.to_config()},
            merge(self.groups, extra.groups),
            merge(self.users, extra.users),
            setting=self.setting,
        )

    def resolve(self, username: str, user_groups: Iterable[str] = ()) -> Policy:
        """The ``Policy`` for ``username`` in ``user_groups``, by the class docstring's rule."""
        if isinstance(user_groups, str):
            raise TypeError(f"user_groups must be a collection of names, not {user_groups!r}")
        base = {name: getattr(Policy(), name) for name in _POLICY_FIELDS}
        base.update(self.defaults.values)
        resolved = dict(base)
        levels = [self.groups[g] for g in sorted(set(user_groups)) if g in self.groups]

        for name in ("max_gpus", "max_session_seconds", "max_dask_workers"):
            offers = [level.values[name] for level in levels if name in level.values]
            if offers:
                resolved[name] = None if None in offers else max(offers)

        offers = [level.values["profiles"] for level in levels if "profiles" in level.values]
        if offers:
            resolved["profiles"] = None if None in offers else frozenset().union(*offers)

        budgets = [
            (
                level.values.get("gpu_hours", base["gpu_hours"]),
                level.values.get("window_seconds", base["window_seconds"]),
            )
            for level in levels
            if "gpu_hours" in level.values or "window_seconds" in level.values
        ]
        if budgets:
            hours, window = max(budgets, key=_budget_generosity)
            resolved["gpu_hours"], resolved["window_seconds"] = hours, window

        user = self.users.get(username)
        if user is not None:
            resolved.update(user.values)
        return Policy(**resolved)


def _budget_generosity(budget: tuple[float | None, float]) -> tuple[int, float, float]:
    hours, window = budget
    if hours is None:
        return (1, math.inf, window)
    return (0, hours * 3600.0 / window, window)
