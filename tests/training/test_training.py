"""gpulab.training.run on a real LocalCluster with gloo: DDP correctness against one
process, restarts from checkpoints after a rank fails or a worker dies, hangs bounded,
many back-to-back jobs, two jobs at once, and inputs refused before anything starts."""

import functools
import threading
import time

import numpy as np
import pytest

from gpulab import training
from gpulab.training.context import TrainContext
from tests.training import workloads


def single_process_reference():
    ctx = TrainContext(rank=0, local_rank=0, world_size=1, local_world_size=1,
                       device="cpu", backend="none", attempt=0, run_url=None)
    return workloads.train_digits(ctx)


def test_ddp_on_two_ranks_matches_one_process_and_learns(cluster, store):
    result = training.run(workloads.train_digits, cluster, store=store, name="digits",
                          config={"lr": workloads.LR}, progress=False)
    reference = single_process_reference()
    for got, want in zip(result["params"], reference["params"], strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    assert result["accuracy"] >= 0.90
    [manifest] = store.list_runs(store_owner(store))
    assert (manifest.status, manifest.world_size, manifest.config) == ("finished", 2,
                                                                       {"lr": workloads.LR})
    records, _ = store.read_metrics(manifest.owner, manifest.id)
    steps = sorted(r["step"] for r in records if r["rank"] == 0)
    assert steps == list(range(workloads.STEPS))


def store_owner(store):
    import getpass
    import os

    return os.environ.get("JUPYTERHUB_USER") or getpass.getuser()


def test_ranks_get_torchruns_environment_and_a_port_of_their_own(cluster, store):
    first = training.run(workloads.quick, cluster, store=store, return_all=True,
                         progress=False)
    assert [r["sum"] for r in first] == [3.0, 3.0]
    envs = [r["env"] for r in first]
    assert [e["RANK"] for e in envs] == ["0", "1"]
    assert {e["WORLD_SIZE"] for e in envs} == {"2"}
    assert [e["LOCAL_RANK"] for e in envs] == ["0", "1"]  # both workers on this host
    assert {e["LOCAL_WORLD_SIZE"] for e in envs} == {"2"}
    assert {e["MASTER_ADDR"] for e in envs} == {"127.0.0.1"}


def test_a_rank_that_raises_reaches_the_caller_with_its_rank(cluster, store):
    with pytest.raises(training.TrainingError) as failed:
        training.run(workloads.raise_on_rank_1, cluster, store=store, max_restarts=0,
                     timeout=60, progress=False)
    assert failed.value.rank == 1
    assert "bad batch on rank 1" in str(failed.value)
    assert "raise ValueError" in failed.value.traceback
    manifest = store.manifest(store_owner(store), failed.value.run_id)
    assert manifest.status == "failed"
    # The cluster is fine afterwards.
    assert training.run(workloads.quick, cluster, store=store, progress=False)["sum"] == 3.0


def test_restarts_are_bounded_and_recorded(cluster, store):
    with pytest.raises(training.TrainingError, match="after 2 restart"):
        training.run(workloads.raise_on_rank_1, cluster, store=store, max_restarts=2,
                     timeout=60, progress=False)
    [manifest] = [m for m in store.list_runs(store_owner(store)) if m.status == "failed"]
    assert len(manifest.restarts) == 2


def test_a_hang_ends_as_an_error_and_the_cluster_recovers(cluster, store):
    started = time.monotonic()
    with pytest.raises(training.TrainingError, match="did not finish within"):
        training.run(workloads.hang_on_rank_0, cluster, store=store, max_restarts=0,
                     timeout=5, progress=False)
    assert time.monotonic() - started < 30
    assert training.run(workloads.quick, cluster, store=store, progress=False)["sum"] == 3.0


def test_a_hundred_back_to_back_jobs_never_hang(cluster, store):
    # Each within its own deadline (a hang raises); how fast they launch is bench.ddp's.
    for i in range(100):
        result = training.run(workloads.quick, cluster, store=store, timeout=30,
                              progress=False)
        assert result["sum"] == 3.0, i


def test_two_jobs_at_once_on_one_host_both_finish(tmp_path, store):
    from gpulab import clusters

    registry = clusters.Registry(tmp_path / "clusters")
    handles = [clusters.start(workers=2, registry=registry, quota=None, progress=False)
               for _ in range(2)]
    results, errors = [], []

    def one(handle):
        client = handle.client()
        try:
            results.append(training.run(workloads.train_digits, client, store=store,
                                        progress=False))
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)
        finally:
            client.close()

    try:
        threads = [threading.Thread(target=one, args=(h,)) for h in handles]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(300)
    finally:
        for handle in handles:
            handle.stop()
    assert not errors, errors
    assert [r["accuracy"] >= 0.9 for r in results] == [True, True]


@pytest.mark.parametrize(
    ("kwargs", "error", "words"),
    [
        ({"world_size": 3}, ValueError, "more than the cluster's 2 worker"),
        ({"world_size": 0}, ValueError, "world_size must be"),
        ({"backend": "mpi"}, ValueError, "backend must be one of"),
        ({"max_restarts": -1}, ValueError, "max_restarts"),
        ({"timeout": 0}, ValueError, "timeout"),
    ],
)
def test_bad_inputs_are_refused_before_anything_starts(cluster, store, kwargs, error, words):
    with pytest.raises(error, match=words):
        training.run(workloads.quick, cluster, store=store, progress=False, **kwargs)
    assert store.list_runs(store_owner(store)) == []


def test_a_train_fn_that_cannot_be_pickled_is_refused(cluster, store):
    lock = threading.Lock()

    def holds_a_lock(ctx):
        with lock:
            return 1

    with pytest.raises(TypeError, match="can't be sent to the workers"):
        training.run(holds_a_lock, cluster, store=store, progress=False)
    assert store.list_runs(store_owner(store)) == []


def test_a_worker_killed_mid_training_resumes_from_the_latest_checkpoint(cluster, store):
    from gpulab.runs.metrics import drop_superseded

    before = set(cluster.scheduler_info()["workers"])
    # Rank 1 kills its own Dask worker process at step 35 (first attempt only); the
    # checkpoints are at steps 9, 19 and 29.
    train = functools.partial(workloads.train_digits, checkpoint_every=10, die_at=35)
    result = training.run(train, cluster, store=store, name="fault", progress=False,
                          timeout=300)
    reference = single_process_reference()
    for got, want in zip(result["params"], reference["params"], strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    assert result["accuracy"] >= 0.90
    assert set(cluster.scheduler_info()["workers"]) != before  # a new worker took over

    [manifest] = [m for m in store.list_runs(store_owner(store)) if m.name == "fault"]
    assert manifest.status == "finished"
    [restart] = manifest.restarts
    assert restart["from_checkpoint_step"] == 29
    assert "died" in restart["reason"] or "ended" in restart["reason"]
    records, _ = store.read_metrics(manifest.owner, manifest.id)
    rank0 = [r for r in records if r["rank"] == 0]
    assert max(r["attempt"] for r in rank0) == 1
    kept = sorted(r["step"] for r in drop_superseded(rank0, manifest.restarts))
    assert kept == list(range(workloads.STEPS))  # no step missing, none twice


def test_progress_shows_steps_loss_and_throughput(cluster, store, capsys):
    slow = functools.partial(workloads.train_digits, steps=40, step_seconds=0.03)
    training.run(slow, cluster, store=store, name="progress")
    shown = capsys.readouterr().err.splitlines()
    training_lines = [line for line in shown if "training:" in line]
    assert training_lines, shown
    assert any("loss" in line and "samples/s" in line for line in training_lines)
    assert "run 'progress' finished: step 39" in shown[-1]
