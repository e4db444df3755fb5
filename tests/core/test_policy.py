"""gpulab.quota.policy: config levels, their errors, and the resolution rule."""

import json
import re

import pytest

from gpulab.quota.policy import WEEK_SECONDS, Policy, PolicyError, PolicyLevel, PolicySet

H, D = 3600.0, 86400.0

# --- PolicyLevel: parsing ----------------------------------------------------------------


def test_level_parses_the_config_form():
    level = PolicyLevel(
        {
            "max_gpus": 2,
            "gpu_hours": 100,
            "window": "7d",
            "max_session": "8h",
            "max_dask_workers": 8,
            "profiles": ["cpu", "1-gpu"],
        }
    )
    assert dict(level.values) == {
        "max_gpus": 2,
        "gpu_hours": 100.0,
        "window_seconds": 7 * D,
        "max_session_seconds": 8 * H,
        "max_dask_workers": 8,
        "profiles": frozenset({"cpu", "1-gpu"}),
    }
    assert level.to_config() == {
        "max_gpus": 2,
        "gpu_hours": 100.0,
        "window": 7 * D,
        "max_session": 8 * H,
        "max_dask_workers": 8,
        "profiles": ["1-gpu", "cpu"],
    }
    assert PolicyLevel(level.to_config()) == level


def test_unset_differs_from_none():
    level = PolicyLevel({"max_gpus": None})
    assert level.is_set("max_gpus") and level.values["max_gpus"] is None
    assert not level.is_set("gpu_hours")
    assert not PolicyLevel().is_set("max_gpus")
    assert PolicyLevel({"max_gpus": None}) != PolicyLevel()
    with pytest.raises(KeyError, match="'max_gpu' is not a Policy field"):
        level.is_set("max_gpu")


G = re.escape("quota.groups['physics']")


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"max_gpus": -1}, rf"^{G}\.max_gpus must be a whole number >= 0 or None, not -1$"),
        ({"max_gpus": 1.5}, rf"^{G}\.max_gpus must be a whole number >= 0 or None, not 1\.5$"),
        ({"max_gpus": "2"}, rf"^{G}\.max_gpus must be .*, not '2'$"),
        ({"max_gpus": True}, rf"^{G}\.max_gpus must be .*, not True$"),
        ({"max_dask_workers": -3}, rf"^{G}\.max_dask_workers must be a whole number .*, not -3$"),
        (
            {"gpu_hours": -5},
            rf"^{G}\.gpu_hours must be a number of GPU-hours >= 0 or None, not -5$",
        ),
        ({"gpu_hours": "100h"}, rf"^{G}\.gpu_hours must be .*, not '100h'$"),
        ({"gpu_hours": float("nan")}, rf"^{G}\.gpu_hours must be .*, not nan$"),
        ({"window": "7y"}, rf"^{G}\.window must be a duration > 0 like '7d', not '7y'$"),
        ({"window": None}, rf"^{G}\.window must be a duration > 0 like '7d', not None$"),
        ({"window": 0}, rf"^{G}\.window must be a duration > 0 like '7d', not 0$"),
        ({"window": "-1d"}, rf"^{G}\.window must be .*, not '-1d'$"),
        ({"max_session": "8 hours"}, rf"^{G}\.max_session must be .* '8h' or None, not '8 hours'$"),
        ({"max_session": "0s"}, rf"^{G}\.max_session must be .*, not '0s'$"),
        ({"max_session": -60}, rf"^{G}\.max_session must be .*, not -60$"),
        ({"profiles": "cpu"}, rf"^{G}\.profiles must be a list of profile names .*, not 'cpu'$"),
        ({"profiles": ["cpu", 2]}, rf"^{G}\.profiles must be .*, not \['cpu', 2\]$"),
        ({"profiles": [""]}, rf"^{G}\.profiles must be .*, not \[''\]$"),
        ({"profiles": {"cpu": 1}}, rf"^{G}\.profiles must be .*, not \{{'cpu': 1\}}$"),
        ({"profiles": 3}, rf"^{G}\.profiles must be .*, not 3$"),
        ({"max_gpu": 2}, rf"^{G} has unknown keys 'max_gpu' \(did you mean 'max_gpus'\?\)"),
        ({"window_seconds": 60}, rf"^{G} has unknown keys 'window_seconds' \(did you mean"),
        ({"colour": "red"}, rf"^{G} has unknown keys 'colour'; accepted keys: max_gpus, "),
        ([("max_gpus", 2)], rf"^{G} must be a dict of limits, not \[\('max_gpus', 2\)\]$"),
        (3, rf"^{G} must be a dict of limits, not 3$"),
    ],
)
def test_bad_group_values_name_the_setting(config, message):
    with pytest.raises(PolicyError, match=message) as info:
        PolicySet(groups={"physics": config})
    assert info.value.setting.startswith("quota.groups['physics']")
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"defaults": {"max_gpus": -1}}, r"^quota\.defaults\.max_gpus must be .*, not -1$"),
        ({"defaults": "8h"}, r"^quota\.defaults must be a dict of limits, not '8h'$"),
        ({"users": {"alice": {"window": "1q"}}}, r"^quota\.users\['alice'\]\.window must be"),
        ({"users": ["alice"]}, r"^quota\.users must be a dict of user name -> limits, not"),
        ({"groups": {"": {}}}, r"^quota\.groups key must be a non-empty group name, not ''$"),
        ({"groups": {3: {}}}, r"^quota\.groups key must be a non-empty group name, not 3$"),
    ],
)
def test_bad_levels_name_the_setting(kwargs, message):
    with pytest.raises(PolicyError, match=message):
        PolicySet(**kwargs)


def test_setting_prefix_is_configurable():
    with pytest.raises(PolicyError, match=r"^GpulabQuota\.users\['bob'\]\.max_gpus must be"):
        PolicySet(users={"bob": {"max_gpus": -2}}, setting="GpulabQuota")


# --- PolicySet: unknown groups ---------------------------------------------------------


def test_unknown_group_fails_closed():
    with pytest.raises(
        PolicyError, match=r"^quota\.groups\['phyiscs'\] names a group that does"
    ) as info:
        PolicySet(groups={"phyiscs": {"max_gpus": 4}}, known_groups={"physics", "students"})
    assert "known groups: ['physics', 'students']" in str(info.value)
    assert info.value.setting == "quota.groups['phyiscs']"


def test_known_groups_empty_set_rejects_every_group():
    with pytest.raises(PolicyError, match="names a group that does not exist"):
        PolicySet(groups={"physics": {}}, known_groups=set())


def test_known_groups_not_given_accepts_any_group_and_known_ones_pass():
    PolicySet(groups={"anything": {"max_gpus": 1}})
    PolicySet(groups={"physics": {"max_gpus": 1}}, known_groups=["physics", "chem"])


def test_long_known_groups_list_is_shortened():
    known = {f"g{n:03d}" for n in range(50)}
    with pytest.raises(PolicyError, match=r"and 30 more$"):
        PolicySet(groups={"nope": {}}, known_groups=known)


def test_known_groups_as_a_bare_string_is_an_error():
    with pytest.raises(PolicyError, match="known_groups must be a collection of group names"):
        PolicySet(groups={"physics": {}}, known_groups="physics")


# --- PolicySet.resolve: the rule as a table ----------------------------------------------

POLICIES = PolicySet(
    defaults={"max_gpus": 1, "gpu_hours": 10, "max_session": "8h", "profiles": ["cpu", "1-gpu"]},
    groups={
        "students": {"max_gpus": 0, "gpu_hours": 2, "profiles": ["cpu"]},
        "workshop-a": {"max_gpus": 1, "gpu_hours": 20, "window": "7d", "profiles": ["1-gpu"]},
        "workshop-b": {"max_gpus": 2, "gpu_hours": 5, "window": "1d", "max_session": "2h"},
        "researchers": {"max_gpus": 4, "gpu_hours": None, "max_session": None},
        "dask": {"max_dask_workers": 16, "profiles": None},
        "short-window": {"window": "1d"},
        "capped-dask": {"max_dask_workers": 4},
    },
    users={
        "alice": {"max_gpus": 8},
        "bob": {"gpu_hours": 1, "profiles": []},
        "carol": {"max_gpus": None, "max_session": None},
    },
)

DEFAULT = Policy(
    max_gpus=1,
    gpu_hours=10.0,
    window_seconds=WEEK_SECONDS,
    max_session_seconds=8 * H,
    max_dask_workers=None,
    profiles=frozenset({"cpu", "1-gpu"}),
)


def _with(**changes):
    return Policy(**{**DEFAULT.__dict__, **changes})


@pytest.mark.parametrize(
    ("user", "groups", "expected"),
    [
        pytest.param("zoe", [], DEFAULT, id="no groups: the defaults"),
        pytest.param("zoe", ["not-configured"], DEFAULT, id="unconfigured group: ignored"),
        pytest.param(
            "zoe",
            ["students"],
            _with(max_gpus=0, gpu_hours=2.0, profiles=frozenset({"cpu"})),
            id="one group replaces the default even when lower",
        ),
        pytest.param(
            "zoe",
            ["students", "workshop-a"],
            _with(max_gpus=1, gpu_hours=20.0, profiles=frozenset({"cpu", "1-gpu"})),
            id="two groups: the most generous number, the union of profiles",
        ),
        pytest.param(
            "zoe",
            ["workshop-a", "students"],
            _with(max_gpus=1, gpu_hours=20.0, profiles=frozenset({"cpu", "1-gpu"})),
            id="group order does not matter",
        ),
        pytest.param(
            "zoe",
            ["workshop-a", "workshop-b"],
            # budgets: 20 h / 7 d (0.12 h/h) vs 5 h / 1 d (0.21 h/h): b's whole budget wins,
            # never 20 h / 1 d; max_session only set by b, so b's 2 h replaces the default
            _with(
                max_gpus=2,
                gpu_hours=5.0,
                window_seconds=D,
                max_session_seconds=2 * H,
                profiles=frozenset({"1-gpu"}),
            ),
            id="budget resolves as a pair: the higher rate, never a mix",
        ),
        pytest.param(
            "zoe",
            ["short-window"],
            _with(window_seconds=D),
            id="a group setting only the window offers the default hours over it",
        ),
        pytest.param(
            "zoe",
            ["short-window", "students"],
            # offers: 10 h / 1 d (window group, default hours) vs 2 h / 7 d (students)
            _with(max_gpus=0, gpu_hours=10.0, window_seconds=D, profiles=frozenset({"cpu"})),
            id="window-only offer vs hours-only offer",
        ),
        pytest.param(
            "zoe",
            ["students", "researchers"],
            _with(
                max_gpus=4,
                gpu_hours=None,
                max_session_seconds=None,
                profiles=frozenset({"cpu"}),
            ),
            id="None (no limit) is the most generous",
        ),
        pytest.param(
            "zoe",
            ["dask", "capped-dask", "students"],
            _with(max_gpus=0, gpu_hours=2.0, max_dask_workers=16, profiles=None),
            id="profiles None (all) beats any list; larger worker cap wins",
        ),
        pytest.param(
            "zoe",
            ["capped-dask"],
            _with(max_dask_workers=4),
            id="group limits an unlimited default",
        ),
        pytest.param(
            "alice",
            ["students"],
            _with(max_gpus=8, gpu_hours=2.0, profiles=frozenset({"cpu"})),
            id="user setting replaces the group's, other fields from the group",
        ),
        pytest.param(
            "bob",
            ["researchers", "dask"],
            _with(
                max_gpus=4,
                gpu_hours=1.0,
                max_session_seconds=None,
                max_dask_workers=16,
                profiles=frozenset(),
            ),
            id="user override is final even when lower",
        ),
        pytest.param(
            "bob",
            ["workshop-b"],
            _with(
                max_gpus=2,
                gpu_hours=1.0,
                window_seconds=D,
                max_session_seconds=2 * H,
                profiles=frozenset(),
            ),
            id="user hours keep the window resolved from groups",
        ),
        pytest.param(
            "carol",
            [],
            _with(max_gpus=None, max_session_seconds=None),
            id="user lifts limits with None",
        ),
    ],
)
def test_resolution_rule(user, groups, expected):
    assert POLICIES.resolve(user, groups) == expected


def test_budget_tie_on_rate_prefers_the_longer_window():
    policies = PolicySet(
        groups={
            "daily": {"gpu_hours": 1, "window": "1d"},
            "weekly": {"gpu_hours": 7, "window": "7d"},
        }
    )
    policy = policies.resolve("u", ["daily", "weekly"])
    assert (policy.gpu_hours, policy.window_seconds) == (7.0, 7 * D)


def test_nothing_configured_is_no_limit():
    assert PolicySet().resolve("anyone", ["any"]) == Policy()


def test_resolve_refuses_a_bare_group_string():
    with pytest.raises(
        TypeError, match="user_groups must be a collection of names, not 'students'"
    ):
        POLICIES.resolve("zoe", "students")


# --- Policy.to_json --------------------------------------------------------------------


def test_to_json_for_the_ui():
    policy = POLICIES.resolve("zoe", ["workshop-a", "workshop-b"])
    data = policy.to_json()
    assert data == {
        "max_gpus": 2,
        "gpu_hours": 5.0,
        "window_seconds": D,
        "window": "1d",
        "max_session_seconds": 2 * H,
        "max_session": "2h",
        "max_dask_workers": None,
        "profiles": ["1-gpu"],
    }
    assert json.loads(json.dumps(data)) == data


def test_to_json_of_no_limits():
    data = Policy().to_json()
    assert data["window"] == "1w" and data["window_seconds"] == WEEK_SECONDS
    assert data["max_session"] is None and data["profiles"] is None and data["max_gpus"] is None
