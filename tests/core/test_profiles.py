"""Spawn profiles from the node's GPUs and a user's policy; untrusted spawn options."""

import pytest

from gpulab.quota.policy import Policy
from gpulab.quota.profiles import (
    BadSpawnOptions,
    Capacity,
    build_profiles,
    parse_spawn_options,
    render_form,
)


def capacity(total=8, free=8, held=0, budget_left=None, renews=None):
    return Capacity(total, free, held, budget_left, renews)


def offered(profiles):
    return {p.name: (p.available, p.reason) for p in profiles}


def test_a_cpu_only_node_offers_the_cpu_profile_only():
    profiles = build_profiles(Policy(), capacity(total=0, free=0))
    assert offered(profiles) == {"cpu": (True, "")}


def test_an_eight_gpu_node_offers_powers_of_two_up_to_its_size():
    profiles = build_profiles(Policy(), capacity())
    assert [p.name for p in profiles] == ["cpu", "1-gpu", "2-gpus", "4-gpus", "8-gpus"]
    assert all(p.available for p in profiles)


@pytest.mark.parametrize(
    ("policy", "cap", "name", "reason"),
    [
        (Policy(), capacity(free=0), "1-gpu", "all 8 GPUs are in use"),
        (Policy(), capacity(free=1), "2-gpus", "only 1 of 8 GPUs are free"),
        (Policy(max_gpus=1), capacity(), "2-gpus", "your limit is 1 GPU at once"),
        (Policy(max_gpus=2), capacity(held=2), "1-gpu", "you hold 2 of your 2 GPUs at once"),
        (
            Policy(gpu_hours=1, window_seconds=86400),
            capacity(budget_left=0),
            "1-gpu",
            "your GPU-hours for the last 1d are used up",
        ),
    ],
)
def test_unavailable_profiles_say_why(policy, cap, name, reason):
    available, why = offered(build_profiles(policy, cap))[name]
    assert not available
    assert reason in why
    assert offered(build_profiles(policy, cap))["cpu"] == (True, "")


def test_profiles_outside_the_policy_are_not_offered():
    profiles = build_profiles(Policy(profiles=frozenset({"cpu", "1-gpu"})), capacity())
    assert [p.name for p in profiles] == ["cpu", "1-gpu"]


PROFILES = build_profiles(Policy(), capacity(total=2, free=2))


@pytest.mark.parametrize(
    ("options", "expected"),
    [({}, "cpu"), ({"profile": "2-gpus"}, "2-gpus"), ({"gpus": 1}, "1-gpu"), ({"gpus": 0}, "cpu")],
)
def test_good_spawn_options(options, expected):
    assert parse_spawn_options(options, PROFILES).name == expected


@pytest.mark.parametrize(
    ("options", "field", "message"),
    [
        ({"gpus": -1}, "gpus", "whole number >= 0"),
        ({"gpus": "two"}, "gpus", "whole number >= 0"),
        ({"gpus": 1.5}, "gpus", "whole number >= 0"),
        ({"gpus": True}, "gpus", "whole number >= 0"),
        ({"gpus": 1000}, "gpus", "gpus=1000 is not offered here"),
        ({"profile": "8-gpus"}, "profile", "not offered here; choose one of cpu, 1-gpu, 2-gpus"),
        ({"profile": ["cpu"]}, "profile", "not offered here"),
        ({"profile": "cpu", "gpus": 0}, "gpus", "not both"),
        ({"profile": "cpu", "image": "x"}, "image", "unknown spawn option 'image'"),
        ({"profile": "x" * 10_000}, "options", "too large"),
        (["cpu"], "options", "must be an object"),
    ],
)
def test_bad_spawn_options_name_the_field(options, field, message):
    with pytest.raises(BadSpawnOptions, match=message) as error:
        parse_spawn_options(options, PROFILES)
    assert error.value.field == field


def test_form_greys_unavailable_profiles_with_their_reason_escaped():
    profiles = build_profiles(Policy(), capacity(total=2, free=1))
    form = render_form(profiles)
    assert 'value="cpu" checked' in form
    assert 'value="2-gpus" disabled' in form
    assert "(only 1 of 2 GPUs are free)" in form
    assert 'value="1-gpu">' in form


def test_form_escapes_text():
    from gpulab.quota.profiles import Profile

    form = render_form([Profile("<x>", "<b>bold</b>", 0, False, "a & <script>")])
    assert "<script>" not in form and "<b>" not in form
    assert "&lt;script&gt;" in form


def test_mig_slices_are_offered_per_size_and_greyed_when_taken():
    cap = Capacity(1, 1, 0, None, mig_slices={"1g.10gb": (7, 0), "3g.40gb": (2, 1)})
    profiles = {p.name: p for p in build_profiles(Policy(), cap)}
    assert list(profiles) == ["cpu", "1-gpu", "mig-1g.10gb", "mig-3g.40gb"]
    assert profiles["mig-3g.40gb"].available and profiles["mig-3g.40gb"].mig == "3g.40gb"
    assert not profiles["mig-1g.10gb"].available
    assert profiles["mig-1g.10gb"].reason == "all 7 1g.10gb slices are in use"
    assert parse_spawn_options({"profile": "mig-3g.40gb"}, list(profiles.values())).gpus == 1
    # {"gpus": 1} means a whole GPU, never a slice.
    assert parse_spawn_options({"gpus": 1}, list(profiles.values())).mig is None


def test_a_policy_can_limit_a_user_to_mig_slices():
    policy = Policy(profiles=frozenset({"cpu", "mig-1g.10gb"}))
    cap = Capacity(2, 2, 0, None, mig_slices={"1g.10gb": (7, 7)})
    assert [p.name for p in build_profiles(policy, cap)] == ["cpu", "mig-1g.10gb"]
