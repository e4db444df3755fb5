"""``run(train_fn, cluster)``: DistributedDataParallel across the workers of a Dask cluster.

One rank per worker (one per GPU on a Dask-CUDA cluster), in a warm process the worker
keeps (``pool``/``rank_server``). Rendezvous on rank 0's host at a free port chosen for
this job, so jobs on one host never collide; ``MASTER_ADDR/PORT``, ``RANK``, ``LOCAL_RANK``,
``WORLD_SIZE``, ``LOCAL_WORLD_SIZE`` as torchrun sets them. A rank that raises or a worker
that dies tears all ranks down; they restart from the latest checkpoint, up to
``max_restarts`` times, as torchrun does. Metrics and checkpoints go to the run store; the
notebook shows progress from the metrics as they arrive.
"""

from __future__ import annotations

import socket
import time
import uuid
from collections.abc import Callable
from typing import Any

from gpulab.training.pool import RankFailed, abort_job, run_rank
from gpulab.training.progress import TrainProgress

BACKENDS = ("auto", "gloo", "nccl")


class TrainingError(RuntimeError):
    """The run ended in failure: the message names the rank; ``traceback`` is that rank's."""

    def __init__(self, message: str, *, rank: int | None = None, traceback: str = "",
                 run_id: str | None = None):
        super().__init__(message + (f"\n\nrank {rank}'s traceback:\n{traceback}"
                                    if traceback else ""))
        self.rank = rank
        self.traceback = traceback
        self.run_id = run_id


def free_port() -> int:
    """A port free on this host now (run on rank 0's worker)."""
    with socket.socket() as s:
        s.bind(("", 0))
        return s.getsockname()[1]


def _client_of(cluster_or_client: Any) -> tuple[Any, bool]:
    """(a Client for it, whether this call made that client and must close it)."""
    from distributed import Client

    if isinstance(cluster_or_client, Client):
        return cluster_or_client, False
    if hasattr(cluster_or_client, "client") and callable(cluster_or_client.client):
        return cluster_or_client.client(), True  # a gpulab cluster handle
    if hasattr(cluster_or_client, "scheduler_address"):
        return Client(cluster_or_client), True  # a distributed cluster object
    raise TypeError("cluster_or_client must be a distributed.Client, a Dask cluster or a "
                    f"gpulab cluster, got {type(cluster_or_client).__name__}")


def _host(address: str) -> str:
    return address.split("://", 1)[-1].rsplit(":", 1)[0].strip("[]")


def plan_ranks(workers: list[str], world_size: int) -> list[dict[str, Any]]:
    """Rank i on the i-th worker (by address); local ranks count within each host."""
    chosen = sorted(workers)[:world_size]
    by_host: dict[str, list[str]] = {}
    for address in chosen:
        by_host.setdefault(_host(address), []).append(address)
    return [{"rank": rank, "worker": address, "host": _host(address),
             "local_rank": by_host[_host(address)].index(address),
             "local_world_size": len(by_host[_host(address)])}
            for rank, address in enumerate(chosen)]


def check_inputs(train_fn: Callable, world_size: int | None, workers: int, backend: str,
                 max_restarts: int, timeout: float) -> tuple[bytes, int]:
    """Everything that can be refused before anything starts."""
    import cloudpickle

    if not callable(train_fn):
        raise TypeError(f"train_fn must be a function taking ctx, got {train_fn!r}")
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    if world_size is None:
        world_size = workers
    if not isinstance(world_size, int) or isinstance(world_size, bool) or world_size < 1:
        raise ValueError(f"world_size must be a whole number >= 1, got {world_size!r}")
    if world_size > workers:
        raise ValueError(f"world_size={world_size} is more than the cluster's {workers} "
                         f"worker(s): one rank runs per worker; scale the cluster first")
    if not isinstance(max_restarts, int) or max_restarts < 0:
        raise ValueError(f"max_restarts must be a whole number >= 0, got {max_restarts!r}")
    if not timeout or timeout <= 0:
        raise ValueError(f"timeout must be a positive number of seconds, got {timeout!r}")
    try:
        pickled = cloudpickle.dumps(train_fn)
    except Exception as e:  # noqa: BLE001 - whatever the user's closure holds
        raise TypeError(f"train_fn can't be sent to the workers (cloudpickle failed: {e}); "
                        "define it at the top of the notebook and keep open files, locks and "
                        "clients out of what it uses") from None
    return pickled, world_size


# What gloo and NCCL say in a rank whose peer went away: a consequence, not a cause.
_ECHOES = ("Connection closed by peer", "Connection reset by peer", "pair.cc", "Read error",
           "NCCL communicator was aborted", "remote worker crashing", "Broken pipe")


def _is_echo(error: RankFailed) -> bool:
    return any(echo in str(error) for echo in _ECHOES)


def _workers(client: Any) -> list[str]:
    # Asked of the scheduler each time (the client's cached identity lags behind a
    # worker's death).
    return client.run_on_scheduler(_scheduler_workers)


def _scheduler_workers(dask_scheduler: Any) -> list[str]:
    return list(dask_scheduler.workers)


def _wait_for_workers(client: Any, n: int, timeout: float) -> list[str]:
    """At least ``n`` workers (a nanny restarts a killed worker: give it time)."""
    deadline = time.monotonic() + timeout
    while True:
        workers = _workers(client)
        if len(workers) >= n:
            return workers
        if time.monotonic() > deadline:
            raise TrainingError(f"the cluster has {len(workers)} worker(s), {n} are needed; "
                                f"none came back within {timeout:.0f} s")
        time.sleep(0.2)


def _owner() -> str:
    import getpass
    import os

    return os.environ.get("JUPYTERHUB_USER") or getpass.getuser()


class _Attempt:
    """One launch of every rank, watched until all finish or one fails."""

    def __init__(self, client: Any, payloads: list[bytes], ranks: list[dict[str, Any]],
                 job: str, timeout: float):
        self.client, self.ranks, self.job = client, ranks, job
        self.futures = [
            client.submit(run_rank, payloads[r["rank"]], job, r["rank"], timeout,
                          workers=[r["worker"]], allow_other_workers=False, pure=False,
                          key=f"gpulab-rank-{job}-{r['rank']}")
            for r in ranks
        ]

    def watch(self, deadline: float, on_tick: Callable[[], None]) -> list[Any]:
        """Every rank's result, or raise ``RankFailed`` for the first failure seen."""
        last_check = 0.0
        while True:
            states = [f.status for f in self.futures]
            for rank, (future, state) in enumerate(zip(self.futures, states, strict=True)):
                if state == "error":
                    error = future.exception()
                    if not isinstance(error, RankFailed):
                        error = RankFailed(f"rank {rank} failed: {type(error).__name__}: "
                                           f"{error}", rank=rank)
                    raise self._root_cause(error)
                if state == "cancelled":
                    raise RankFailed(f"rank {rank} was cancelled", rank=rank)
            if all(s == "finished" for s in states):
                return [f.result() for f in self.futures]
            now = time.monotonic()
            if now > deadline:
                raise RankFailed("the run did not finish within its timeout: every rank was "
                                 "stopped", rank=-1)
            if now - last_check > 1.0:  # a dead worker leaves its pinned task pending
                last_check = now
                dead = self._dead_rank()
                if dead is not None:
                    raise dead
            on_tick()
            time.sleep(0.05)

    def _dead_rank(self) -> RankFailed | None:
        alive = set(_workers(self.client))
        for r in self.ranks:
            if r["worker"] not in alive:
                return RankFailed(f"rank {r['rank']}: its worker {r['worker']} died",
                                  rank=r["rank"])
        return None

    def _errors(self) -> list[RankFailed]:
        found = []
        for rank, future in enumerate(self.futures):
            if future.status == "error":
                error = future.exception()
                if not isinstance(error, RankFailed):
                    error = RankFailed(f"rank {rank} failed: {type(error).__name__}: {error}",
                                       rank=rank)
                found.append(error)
        return found

    def _root_cause(self, error: RankFailed, grace: float = 1.0) -> RankFailed:
        """The failure to report. When one rank raises or its worker dies, its peers fail
        too, in a collective ("Connection closed by peer"): within ``grace`` s, a dead
        worker or a rank's own error is preferred to those echoes."""
        deadline = time.monotonic() + grace
        while True:
            dead = self._dead_rank()
            if dead is not None:
                return dead
            errors = self._errors() or [error]
            primary = [e for e in errors if not _is_echo(e)]
            if primary:
                return primary[0]
            if time.monotonic() > deadline:
                return errors[0]
            time.sleep(0.05)

    def tear_down(self) -> None:
        """Kill this job's rank processes wherever they still run (a rank waiting in a
        collective for a lost peer would otherwise wait out its timeout)."""
        alive = set(_workers(self.client))
        targets = [r["worker"] for r in self.ranks if r["worker"] in alive]
        if targets:
            self.client.run(abort_job, self.job, workers=targets)
        self.client.cancel(self.futures, force=True)


def run(train_fn: Callable[[Any], Any], cluster_or_client: Any, *,
        world_size: int | None = None, backend: str = "auto", run: Any = None,
        name: str | None = None, config: dict[str, Any] | None = None, store: Any = None,
        max_restarts: int = 3, timeout: float = 3600.0, collective_timeout: float = 300.0,
        return_all: bool = False, progress: bool | None = None,
        telemetry_interval: float | None = 10.0) -> Any:
    """Train with DistributedDataParallel across the cluster's workers; rank 0's return
    value (every rank's, by rank, with ``return_all=True``).

    ``train_fn(ctx)`` gets a ``TrainContext`` (rank, device, ``log``, ``save``,
    ``load_latest``). The run is recorded in the run store (``run``: an existing
    ``gpulab.runs.Run``; else a new one named ``name`` in ``store`` or the default store)
    with ``config``. A failed rank or a dead worker restarts every rank from the latest
    checkpoint, up to ``max_restarts`` times; then ``TrainingError`` names the rank and
    carries its traceback. ``timeout`` bounds each attempt: a hang ends as an error with
    the cluster's rank processes replaced, never as a cell that waits forever. Where NVML
    answers, each rank samples its GPU into the metrics every ``telemetry_interval`` s.
    """
    client, made_here = _client_of(cluster_or_client)
    try:
        return _run(train_fn, client, world_size=world_size, backend=backend, run=run,
                    name=name, config=config, store=store, max_restarts=max_restarts,
                    timeout=timeout, collective_timeout=collective_timeout,
                    return_all=return_all, progress=progress,
                    telemetry_interval=telemetry_interval)
    finally:
        if made_here:
            client.close()


def _run(train_fn: Callable[[Any], Any], client: Any, *, world_size: int | None, backend: str,
         run: Any, name: str | None, config: dict[str, Any] | None, store: Any,
         max_restarts: int, timeout: float, collective_timeout: float, return_all: bool,
         progress: bool | None, telemetry_interval: float | None) -> Any:
    import cloudpickle

    workers = _workers(client)
    _, world_size = check_inputs(train_fn, world_size, len(workers), backend, max_restarts,
                                 timeout)
    if run is None:
        from gpulab.runs import RunStore

        run = (store if isinstance(store, RunStore) else RunStore(store)).create(
            _owner(), name or getattr(train_fn, "__name__", "training"), config=config or {},
            world_size=world_size)
    show = TrainProgress(run, run.manifest().name or run.manifest().id) \
        if progress is not False else None
    restarts = 0
    while True:
        job = uuid.uuid4().hex[:16]
        try:
            ranks = plan_ranks(_wait_for_workers(client, world_size, 120.0), world_size)
            port = client.submit(free_port, workers=[ranks[0]["worker"]], pure=False,
                                 allow_other_workers=False).result(timeout=60)
            attempt = run.manifest().attempt
            payloads = [cloudpickle.dumps((train_fn, _spec(
                r, ranks, port, run, attempt, backend, collective_timeout, return_all,
                telemetry_interval))) for r in ranks]
            launched = _Attempt(client, payloads, ranks, job, timeout)
        except Exception as e:
            run.fail(f"could not launch: {e}")
            raise
        try:
            results = launched.watch(time.monotonic() + timeout,
                                     lambda: show and show.poll("training"))
        except RankFailed as failure:
            launched.tear_down()
            if restarts >= max_restarts:
                run.fail(str(failure), rank=failure.rank if failure.rank >= 0 else None,
                         traceback=failure.traceback)
                if show:
                    show.poll("failed", force=True)
                raise TrainingError(
                    f"run {run.manifest().id} failed after {restarts} restart(s): {failure}",
                    rank=failure.rank if failure.rank >= 0 else None,
                    traceback=failure.traceback, run_id=run.manifest().id) from None
            restarts += 1
            latest = run.latest_checkpoint()
            run.record_restart(str(failure), from_step=latest.step if latest else None)
            if show:
                show.restarts = restarts
                show.poll("restarting", force=True)
            continue
        except BaseException:  # KeyboardInterrupt in the notebook: stop every rank
            launched.tear_down()
            run.fail("interrupted")
            raise
        run.finish()
        if show:
            show.poll("finished", force=True)
        return results if return_all else results[0]


def _spec(rank: dict[str, Any], ranks: list[dict[str, Any]], port: int, run: Any,
          attempt: int, backend: str, collective_timeout: float, return_all: bool,
          telemetry_interval: float | None) -> dict[str, Any]:
    master = ranks[0]["host"]
    return {
        "rank": rank["rank"], "local_rank": rank["local_rank"],
        "world_size": len(ranks), "local_world_size": rank["local_world_size"],
        "backend": backend, "attempt": attempt, "run_url": run.url,
        "collective_timeout": collective_timeout, "telemetry_interval": telemetry_interval,
        "return_result": return_all or rank["rank"] == 0,
        "env": {"MASTER_ADDR": master, "MASTER_PORT": port, "RANK": rank["rank"],
                "LOCAL_RANK": rank["local_rank"], "WORLD_SIZE": len(ranks),
                "LOCAL_WORLD_SIZE": rank["local_world_size"],
                "GROUP_RANK": sorted({r["host"] for r in ranks}).index(rank["host"])},
    }
