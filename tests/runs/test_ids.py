"""Ids, owners, names, config and artifact names: bad input is refused before anything is
written, and nothing can name a path outside the store's root."""

import os
import re

import pytest

from gpulab.runs import InvalidRunInput, Run, RunNotFound, RunStore, new_run_id
from gpulab.runs.ids import RUN_ID_PATTERN
from tests.runs.conftest import all_files

BAD_IDS = [
    ("../x", "../x"),
    ("a/b", "a/b"),
    ("..", ".."),
    ("", "''"),
    ("\x00", r"\\x00"),
    ("20261123-031500-ab12c\x00", r"\\x00"),
    ("2" * 300, r"\.\.\."),
    ("20261123-031500-ab12cd\n", r"\\n"),
    ("20261123-031500-AB12CD", "AB12CD"),
    ("20261123-031500-ab12cd/../../x", r"\.\./"),
    (12, "12"),
    (None, "None"),
]
BAD_OWNERS = ["../x", "a/b", "..", ".", "", "a\x00b", "x" * 300, ".hidden", "al ice",
              "alice\n", "~alice", "a\\b", None, 7]
GOOD_OWNERS = ["alice", "Alice", "alice@example.org", "bob.smith", "user_1", "a-b+c", "x" * 128]


@pytest.mark.parametrize(("run_id", "shown"), BAD_IDS)
def test_a_bad_run_id_is_refused_everywhere_it_enters(store, run_id, shown):
    store.create("alice", "a run")  # the owner's folder exists; no id may escape it
    before = all_files(store.root.path)
    for call in (
        lambda: store.open("alice", run_id),
        lambda: store.manifest("alice", run_id),
        lambda: store.read_metrics("alice", run_id),
        lambda: store.run_url("alice", run_id),
    ):
        with pytest.raises(InvalidRunInput, match=f"run id looks like .*{shown}") as caught:
            call()
        assert caught.value.reason == "run_id" and caught.value.status_code == 400
    if isinstance(run_id, str) and "\x00" not in run_id:
        with pytest.raises((InvalidRunInput, RunNotFound)):
            Run.attach(os.path.join(store.root.path, "alice", run_id))
    assert all_files(store.root.path) == before


@pytest.mark.parametrize("owner", BAD_OWNERS)
def test_a_bad_owner_is_refused_and_nothing_is_written(store, owner):
    with pytest.raises(InvalidRunInput, match="an owner is a user name") as caught:
        store.create(owner, "x")
    assert caught.value.to_json()["reason"] == "owner"
    for call in (lambda: store.list_runs(owner), lambda: store.open(owner, new_run_id())):
        with pytest.raises(InvalidRunInput, match="an owner is a user name"):
            call()
    assert not os.path.exists(store.root.path)


@pytest.mark.parametrize("owner", GOOD_OWNERS)
def test_jupyterhub_style_user_names_are_owners(store, owner):
    run = store.create(owner, "x")
    assert [m.id for m in store.list_runs(owner)] == [run.id]
    assert os.path.dirname(run.folder.path) == os.path.join(store.root.path, owner)


def test_run_ids_are_generated_sortable_and_strict():
    ids = [new_run_id(now) for now in (1_700_000_000, 1_700_000_001, 1_800_000_000)]
    assert ids == sorted(ids)
    assert ids[0].startswith("20231114-221320-")
    assert all(RUN_ID_PATTERN.fullmatch(i) for i in ids)
    assert len({new_run_id() for _ in range(200)}) > 190  # random part differs


def test_html_in_a_name_is_data_that_round_trips_unchanged(store):
    name = "<script>alert('x')</script> & <b>bold</b> \"quoted\" — ünïcode"
    run = store.create("alice", name)
    assert store.manifest("alice", run.id).name == name
    assert store.list_runs("alice")[0].name == name
    assert store.create("alice").manifest().name == ""


@pytest.mark.parametrize(("name", "message"), [
    ("x" * 201, "at most 200 characters, not 201"),
    ("a\x00b", "no control characters"),
    ("two\nlines", "no control characters"),
    (b"bytes", "a run name is text, not bytes"),
])
def test_bad_names_are_refused(store, name, message):
    with pytest.raises(InvalidRunInput, match=message):
        store.create("alice", name)
    assert not os.path.exists(store.root.path)


class Opaque:
    pass


@pytest.mark.parametrize(("config", "message"), [
    ({"lr": Opaque()}, r"config\['lr'\] is a .*Opaque, not a JSON value"),
    ({"optimizer": {"betas": (0.9, {1, 2})}},
     r"config\['optimizer'\]\['betas'\]\[1\] is a set, not a JSON value"),
    ({"lr": float("nan")}, r"config\['lr'\] is nan: JSON has no NaN"),
    ({"layers": [1, 2, float("inf")]}, r"config\['layers'\]\[2\] is inf"),
    ({1: "x"}, r"config has a key 1 that is not a string"),
    ({"data": b"raw"}, r"config\['data'\] is a bytes"),
    ([("lr", 0.1)], "config is a dict, not list"),
])
def test_a_config_that_is_not_json_is_refused_naming_the_key(store, config, message):
    with pytest.raises(InvalidRunInput, match=message):
        store.create("alice", "x", config=config)
    assert not os.path.exists(store.root.path)


def test_bad_world_size_devices_and_extra_are_refused_before_writing(store):
    for kwargs, message in [
        ({"world_size": 0}, "world_size must be in 1..65536, not 0"),
        ({"world_size": True}, "world_size is an integer, not True"),
        ({"world_size": "2"}, "world_size is an integer"),
        ({"devices": "GPU-1"}, "devices is a list of device ids"),
        ({"devices": ["GPU-1", None]}, "a device id is a short text"),
        ({"extra": {"when": object()}}, r"extra\['when'\] is a"),
    ]:
        with pytest.raises(InvalidRunInput, match=message):
            store.create("alice", "x", **kwargs)
    assert not os.path.exists(store.root.path)
    run = store.create("alice", "x", world_size=2, devices=["GPU-8f3a", 1])
    assert run.manifest().devices == ["GPU-8f3a", "1"]


@pytest.mark.parametrize("name", ["../x", "a/b", "..", ".hidden", "", "a\x00", "x" * 129,
                                  "sp ace", None])
def test_artifact_names_are_one_safe_file_name(store, name):
    run = store.create("alice")
    with pytest.raises(InvalidRunInput, match="an artifact name is one file name"):
        run.save_artifact(name, b"data")
    with pytest.raises(InvalidRunInput, match="an artifact name is one file name"):
        run.read_artifact(name)
    assert run.list_artifacts() == []
    assert not os.path.exists(os.path.join(run.folder.path, "artifacts"))


def test_errors_carry_a_reason_and_a_status_code(store):
    with pytest.raises(RunNotFound, match=re.escape("no run")) as caught:
        store.open("alice", new_run_id())
    assert caught.value.status_code == 404 and isinstance(caught.value, LookupError)
    with pytest.raises(ValueError):  # InvalidRunInput is a ValueError
        RunStore(store.root.path).open("alice", "..")
