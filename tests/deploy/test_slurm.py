"""GpulabSlurmSpawner's batch job asks for what the ledger admitted: the real batchspawner
start, whose submit and query commands are shell commands that keep the job script and its
environment and then report the job gone (no Slurm here), so the start fails as on a
cluster whose job died, and the allocation must be released. See docs/deploy-slurm.md.

Slurm needs an OS account per hub user (batchspawner reads its home and shell), so the
users here are accounts every Debian machine has: "nobody" and "daemon".
"""

from __future__ import annotations

import asyncio
import shlex

import pytest
from tornado.web import HTTPError

from gpulab.quota.profiles import Profile
from gpulab_hub.slurm import GpulabSlurmSpawner, gres_for, slurm_seconds, slurm_time


@pytest.fixture
def job_dir(quota_config, tmp_path):
    """Where the submit command leaves ``job.sh`` (the script on its stdin) and ``env``
    (the environment the hub submits with)."""
    out = tmp_path / "job"
    out.mkdir()
    c = quota_config
    c.GpulabSlurmSpawner.exec_prefix = ""  # no sudo to the user's account here
    q = shlex.quote
    c.GpulabSlurmSpawner.batch_submit_cmd = (
        f"env > {q(str(out / 'env'))}; cat > {q(str(out / 'job.sh'))}; echo 4242"
    )
    c.GpulabSlurmSpawner.batch_query_cmd = "echo COMPLETED node7"
    c.GpulabSlurmSpawner.startup_poll_interval = 0.01
    c.GpulabSlurmSpawner.req_runtime = "12:00:00"
    c.GpulabSlurmSpawner.mig_gres_types = {"1g.10gb": "a100_1g.10gb"}
    c.GpulabSlurmSpawner.profile_resources = {
        "cpu": {"mem_limit": "4G", "cpu_limit": 2, "partition": "cpu"},
        "*": {"partition": "gpu", "qos": "gpu-normal"},
    }
    return out


def submit(make_spawner, name, options, groups=()):
    """Start the spawner: the job is submitted, then found gone; returns the spawner and
    the error the start ended with."""
    spawner = make_spawner(GpulabSlurmSpawner, name, groups=groups, options=options)
    with pytest.raises(Exception) as failed:
        asyncio.run(spawner.start())
    return spawner, failed.value


def script_lines(job_dir):
    return (job_dir / "job.sh").read_text().splitlines()


def sbatch(job_dir):
    return [line for line in script_lines(job_dir) if line.startswith("#SBATCH")]


def submitted_env(job_dir):
    lines = (job_dir / "env").read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if "=" in line)


@pytest.mark.parametrize(
    ("options", "groups", "gres", "runtime"),
    [
        # A GPU server's time is the policy's max_session (8h), under req_runtime (12h).
        ({"profile": "1-gpu"}, (), "gpu:1", "0-08:00:00"),
        ({"gpus": 2}, (), "gpu:2", "0-08:00:00"),
        ({"profile": "mig-1g.10gb"}, ("students",), "gpu:a100_1g.10gb:1", "0-08:00:00"),
    ],
)
def test_the_job_asks_for_the_admitted_gpus_and_the_session_length(
    job_dir, make_spawner, options, groups, gres, runtime
):
    spawner, error = submit(make_spawner, "nobody", options, groups)
    assert "batch job has disappeared" in str(error)
    directives = sbatch(job_dir)
    assert f"#SBATCH --gres={gres}" in directives
    assert f"#SBATCH --time={runtime}" in directives
    assert "#SBATCH --partition=gpu" in directives
    env = submitted_env(job_dir)
    # Slurm sets CUDA_VISIBLE_DEVICES for the gres; the hub's slots are no device.
    assert "CUDA_VISIBLE_DEVICES" not in env and "GPULAB_ALLOCATED_DEVICES" not in env
    assert env["GPULAB_GPUS"] == str(options.get("gpus", 1))
    assert len(env["GPULAB_LEDGER_SLOTS"].split(",")) == int(env["GPULAB_GPUS"])
    assert env["GPULAB_QUOTA_URL"] == "http://hub:9123/services/gpulab-quota/"
    assert int(env["GPULAB_SESSION_ENDS_AT"]) > 0
    # max_gpus 2, this server holds GPULAB_GPUS of them: what Dask GPU workers may use.
    assert env["GPULAB_MAX_GPU_WORKERS"] == str(2 - int(env["GPULAB_GPUS"]))
    export = next(line for line in directives if line.startswith("#SBATCH --export="))
    assert "GPULAB_ALLOCATION_ID" in export and "CUDA_VISIBLE_DEVICES" not in export
    # The job died: its GPUs went back to the ledger.
    assert spawner.quota.ledger.find_open("nobody", "") is None


def test_a_cpu_job_has_no_gres_and_the_configured_time_and_limits(job_dir, make_spawner):
    submit(make_spawner, "daemon", {"profile": "cpu"})
    directives = sbatch(job_dir)
    assert not [line for line in directives if "--gres" in line]
    assert "#SBATCH --time=0-12:00:00" in directives
    assert "#SBATCH --mem=4096M" in directives
    assert "#SBATCH --cpus-per-task=2" in directives
    assert "#SBATCH --partition=cpu" in directives
    assert submitted_env(job_dir)["GPULAB_GPUS"] == "0"


def test_a_request_over_the_policy_submits_nothing(job_dir, make_spawner):
    spawner, error = submit(make_spawner, "nobody", {"gpus": 4})
    assert isinstance(error, HTTPError) and error.status_code == 403
    assert not (job_dir / "job.sh").exists()
    assert spawner.quota.ledger.find_open("nobody", "") is None


def test_a_user_without_an_os_account_is_told_and_holds_nothing(job_dir, make_spawner):
    spawner, error = submit(make_spawner, "no-such-account-x", {"profile": "1-gpu"})
    assert isinstance(error, HTTPError) and error.status_code == 403
    assert "has no account on the cluster" in error.jupyterhub_message
    assert not (job_dir / "job.sh").exists()
    assert spawner.quota.ledger.find_open("no-such-account-x", "") is None


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(60, "0-00:01:00"), (61, "0-00:02:00"), (8 * 3600, "0-08:00:00"),
     (36 * 3600, "1-12:00:00")],
)
def test_slurm_time_rounds_up_to_a_minute(seconds, text):
    assert slurm_time(seconds) == text


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("30", 1800), ("10:30", 630), ("12:00:00", 43200), ("1-02", 93600),
     ("1-02:30", 95400), ("2-00:00:01", 172801)],
)
def test_slurm_seconds_reads_slurms_time_formats(text, seconds):
    assert slurm_seconds(text) == seconds


def test_gres_for_whole_gpus_with_a_type_and_cpu():
    assert gres_for(Profile("2-gpus", "2 GPUs", 2, True), "a100") == "gpu:a100:2"
    assert gres_for(Profile("cpu", "CPU only", 0, True), "a100") == ""
