"""gpulab.clusters on Slurm (``GPULAB_SLURM_CLUSTER=1``): dask-jobqueue's real
``SLURMCluster`` writes the workers' job script (its scheduler starts in this process, on
127.0.0.1; no job is submitted: ``n_workers=0``), and ``gpulab.clusters.start`` refuses,
before anything is recorded, what the policy or the session does not allow."""

from __future__ import annotations

import time

import pytest
from dask_jobqueue import SLURMCluster

from gpulab import clusters
from gpulab.clusters.jobqueue import SlurmSettings, check_gpu_workers, cluster_kwargs
from gpulab.clusters.limits import ClusterLimitError
from gpulab.clusters.local import make_security
from gpulab.clusters.registry import Registry
from gpulab.clusters.spec import ClusterSpec, SpecError

NOW = 1_800_000_000.0


def job_script(spec, settings, tmp_path):
    kwargs = cluster_kwargs(spec, settings, make_security(spec.protocol), [], now=NOW)
    kwargs["shared_temp_directory"] = str(tmp_path)
    kwargs["log_directory"] = str(tmp_path / "logs")
    kwargs["scheduler_options"] = {**kwargs["scheduler_options"], "host": "127.0.0.1"}
    with SLURMCluster(n_workers=0, **kwargs) as cluster:
        return cluster.job_script()


def settings_from(**env):
    return SlurmSettings.from_env({"GPULAB_SLURM_CLUSTER": "1", **env})


def test_a_gpu_worker_job_asks_for_one_gpu_within_the_session(tmp_path):
    settings = settings_from(
        GPULAB_SLURM_QUEUE="gpu", GPULAB_SLURM_ACCOUNT="physics",
        GPULAB_SLURM_WALLTIME="04:00:00", GPULAB_SLURM_GPU_TYPE="a100",
        GPULAB_SESSION_ENDS_AT=str(NOW + 90 * 60 + 30),  # 90.5 minutes left
    )
    spec = ClusterSpec.build(workers=2, gpus_per_worker=1, threads_per_worker=4,
                             memory_limit="16 GiB")
    script = job_script(spec, settings, tmp_path)
    directives = [line for line in script.splitlines() if line.startswith("#SBATCH")]
    assert "#SBATCH --gres=gpu:a100:1" in directives
    assert "#SBATCH -t 01:30:00" in directives  # the session's end, not the 4 h configured
    assert "#SBATCH -p gpu" in directives and "#SBATCH -A physics" in directives
    assert "#SBATCH --cpus-per-task=4" in directives
    assert "--resources GPU=1" in script
    assert "--nthreads 4" in script
    assert "tls://" in script  # its own certificate, as on one machine


def test_a_cpu_worker_job_asks_for_no_gpu_and_the_configured_time(tmp_path):
    settings = settings_from(GPULAB_SLURM_WALLTIME="00:45:00")
    script = job_script(ClusterSpec.build(workers=1, protocol="tcp"), settings, tmp_path)
    assert "--gres" not in script and "GPU=1" not in script
    assert "#SBATCH -t 00:45:00" in script


def test_settings_name_the_bad_variable():
    assert SlurmSettings.from_env({}) is None
    assert SlurmSettings.from_env({"GPULAB_SLURM_CLUSTER": "0"}) is None
    with pytest.raises(ValueError, match="GPULAB_SLURM_CLUSTER must be 1 or 0"):
        SlurmSettings.from_env({"GPULAB_SLURM_CLUSTER": "yes"})
    with pytest.raises(ValueError, match="GPULAB_SLURM_WALLTIME must be HH:MM:SS"):
        settings_from(GPULAB_SLURM_WALLTIME="an hour")
    with pytest.raises(ValueError, match="GPULAB_MAX_GPU_WORKERS must be a whole number"):
        settings_from(GPULAB_MAX_GPU_WORKERS="-1")


def test_gpu_workers_beyond_the_policy_are_refused():
    spec = ClusterSpec.build(workers=2, gpus_per_worker=1)
    running = [{"name": "first", "gpus": ["slurm-gpu-x-0"]}]
    with pytest.raises(ClusterLimitError, match="asks for 2 GPU worker") as refused:
        check_gpu_workers(spec, running, limit=2)
    assert (refused.value.reason, refused.value.limit, refused.value.in_use) == ("gpus", 2, 1)
    check_gpu_workers(spec, [], limit=2)
    check_gpu_workers(spec, running, limit=None)


@pytest.fixture
def slurm_env(monkeypatch, tmp_path):
    """This process as a server on Slurm, outside a hub (no quota service)."""
    for name in ("GPULAB_DASK_GATEWAY_ADDRESS", "GPULAB_QUOTA_URL", "JUPYTERHUB_API_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("GPULAB_SLURM_CLUSTER", "1")
    monkeypatch.setenv("GPULAB_MAX_DASK_WORKERS", "4")
    monkeypatch.setenv("GPULAB_MAX_GPU_WORKERS", "1")
    return Registry(tmp_path / "clusters")


@pytest.mark.parametrize(
    ("fields", "env", "error", "message"),
    [
        ({"workers": 2}, {"GPULAB_SESSION_ENDS_AT": str(time.time() + 30)},
         ClusterLimitError, "session ends in"),
        ({"workers": 5}, {}, ClusterLimitError, "your limit is 4"),
        ({"workers": 2, "gpus_per_worker": 1}, {}, ClusterLimitError, "leaves 1"),
        ({"workers": 1, "gpus_per_worker": 1, "rmm_pool_size": "1 GiB"}, {}, SpecError,
         "rmm_pool_size is not available for Slurm workers"),
    ],
)
def test_start_on_slurm_refuses_before_recording_anything(
    slurm_env, monkeypatch, fields, env, error, message
):
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(error, match=message):
        clusters.start(registry=slurm_env, quota=None, progress=False, **fields)
    assert slurm_env.records() == []
