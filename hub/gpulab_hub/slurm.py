"""gpulab on Slurm: ``GpulabSlurmSpawner``, batchspawner's SlurmSpawner under gpulab's quota.
See docs/deploy-slurm.md and deploy/slurm/jupyterhub_config.py.

Each server is a batch job. What the quota decides becomes the job's request:

- ``--gres=gpu:N`` for N whole GPUs (``gpu:<type>:N`` with ``gres_gpu_type``), and
  ``--gres=gpu:<mig type>:1`` for a MIG slice (``mig_gres_types`` maps gpulab's profile,
  "1g.10gb", to the type gres.conf names, e.g. "a100_1g.10gb"; by default the profile
  itself);
- ``--time``: a GPU server's is the user's ``max_session`` (at most ``req_runtime`` when
  that is set); a CPU server's is ``req_runtime`` (no ``--time`` when that is empty: the
  partition's default). Slurm ends the job at its walltime, the same moment the quota
  service's session limit would stop it.

Slurm, not the hub, picks the GPUs: the ledger counts the partition's GPUs as slots
(``pool_inventory``), and the job gets no ``CUDA_VISIBLE_DEVICES`` from the hub (Slurm
sets it for the gres). ``GPULAB_SESSION_ENDS_AT`` (Unix seconds) tells gpulab.clusters'
Slurm backend how long its workers' jobs may run; ``GPULAB_MAX_GPU_WORKERS`` how many GPU
workers the user's policy leaves ("" for no limit).

``profile_resources`` per profile: ``mem_limit`` (``--mem``), ``cpu_limit``
(``--cpus-per-task``), ``partition``, ``qos``, ``account``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from typing import Any

from batchspawner import SlurmSpawner
from traitlets import Dict, Unicode

from gpulab.quota.profiles import Profile
from gpulab_hub.profile_resources import (
    COMMON_SETTINGS,
    ProfileResourcesMixin,
    scheduler_placed_env,
)
from gpulab_hub.quota_spawner import QuotaSpawnerMixin, user_facing_error

SLURM_SETTINGS = (*COMMON_SETTINGS, "partition", "qos", "account")


def slurm_time(seconds: float) -> str:
    """Slurm's ``--time`` for ``seconds`` (rounded up to a minute): ``D-HH:MM:SS``."""
    if seconds <= 0:
        raise ValueError(f"a job's time must be positive, not {seconds!r} s")
    minutes = math.ceil(seconds / 60)
    days, minutes = divmod(minutes, 24 * 60)
    hours, minutes = divmod(minutes, 60)
    return f"{days}-{hours:02d}:{minutes:02d}:00"


def slurm_seconds(value: str) -> float:
    """Seconds of a Slurm time ("MM", "MM:SS", "HH:MM:SS", "D-HH", "D-HH:MM",
    "D-HH:MM:SS")."""
    text = value.strip()
    days = 0
    if "-" in text:
        head, text = text.split("-", 1)
        days = int(head)
        parts = [int(p) for p in text.split(":")] + [0, 0]
        hours, minutes, seconds = parts[:3]
    else:
        parts = [int(p) for p in text.split(":")]
        if len(parts) == 1:
            hours, minutes, seconds = 0, parts[0], 0
        elif len(parts) == 2:
            hours, (minutes, seconds) = 0, parts
        else:
            hours, minutes, seconds = parts[:3]
    return float(((days * 24 + hours) * 60 + minutes) * 60 + seconds)


def gres_for(profile: Profile, gpu_type: str = "", mig_types: Mapping[str, str] | None = None
             ) -> str:
    """The ``--gres`` value of ``profile`` ("" for a CPU profile)."""
    if profile.gpus == 0:
        return ""
    if profile.mig is not None:
        return f"gpu:{(mig_types or {}).get(profile.mig, profile.mig)}:1"
    return f"gpu:{gpu_type}:{profile.gpus}" if gpu_type else f"gpu:{profile.gpus}"


class GpulabSlurmMixin(ProfileResourcesMixin):
    """Turns the admitted profile into the batch job's request (between the quota mixin and
    SlurmSpawner): ``get_req_subvars`` is what batchspawner formats the script with."""

    profile_settings_allowed = SLURM_SETTINGS

    gres_gpu_type = Unicode(
        "",
        config=True,
        help="""The GPU type of whole GPUs in gres.conf ("a100" gives --gres=gpu:a100:N);
        empty: any type (--gres=gpu:N).""",
    )

    mig_gres_types = Dict(
        config=True,
        help="""gres.conf's type for each MIG profile gpulab offers, e.g.
        {"1g.10gb": "a100_1g.10gb"}; a profile not listed is asked for by its own name.""",
    )

    def _runtime_seconds(self, profile: Profile) -> float | None:
        configured = slurm_seconds(self.req_runtime) if self.req_runtime else None
        policy = self._spawn_policy
        session = policy.max_session_seconds if policy is not None and profile.gpus else None
        limits = [s for s in (configured, session) if s is not None]
        return min(limits) if limits else None

    def get_req_subvars(self):
        # Applied first: mem_limit and cpu_limit of the profile are read below.
        profile = self.apply_admitted_profile()
        try:
            subvars = super().get_req_subvars()
        except KeyError:  # req_homedir: the user's OS account
            raise self._no_account() from None
        if profile is None:  # not admitted: nothing of the quota's to add
            return subvars
        settings = self.settings_for(profile)
        subvars["gres"] = gres_for(profile, self.gres_gpu_type, self.mig_gres_types)
        seconds = self._runtime_seconds(profile)
        subvars["runtime"] = slurm_time(seconds) if seconds else ""
        if "mem_limit" in settings:
            subvars["memory"] = _slurm_memory(self.mem_limit)
        if "cpu_limit" in settings:
            subvars["nprocs"] = str(math.ceil(self.cpu_limit))
        for key in ("partition", "qos", "account"):
            if key in settings:
                subvars[key] = str(settings[key])
        return subvars

    def user_env(self, env):
        try:
            return super().user_env(env)
        except KeyError:
            raise self._no_account() from None

    def _no_account(self):
        # batchspawner reads the home folder and shell from the user's OS account: on Slurm
        # every hub user needs one on the hub's machine too (usually from LDAP).
        return user_facing_error(
            403,
            f"{self.user.name} has no account on the cluster's login node; ask an operator "
            "to create it",
        )


def _slurm_memory(limit: Any) -> str:
    # Slurm's --mem takes megabytes by default; mem_limit is bytes.
    return f"{math.ceil(int(limit) / 2**20)}M"


class GpulabSlurmSpawner(QuotaSpawnerMixin, GpulabSlurmMixin, SlurmSpawner):
    """SlurmSpawner whose jobs ask for the GPUs and time gpulab's quota admitted
    (``c.JupyterHub.spawner_class = "gpulab-slurm"``)."""

    def get_env(self):
        # After the quota mixin's: Slurm, not the hub, picks the GPUs.
        env = scheduler_placed_env(super().get_env(), tuple(self.granted_devices))
        profile = self.admitted_profile()
        if profile is None:
            return env
        seconds = self._runtime_seconds(profile)
        if seconds:
            env["GPULAB_SESSION_ENDS_AT"] = str(int(time.time() + seconds))
        # GPU workers of Dask clusters on Slurm: what max_gpus leaves beside the GPUs the
        # user holds now (this server's included), at spawn.
        policy = self._spawn_policy
        if policy.max_gpus is None:
            env["GPULAB_MAX_GPU_WORKERS"] = ""
        else:
            held = self.quota.ledger.usage(
                self.user.name, since_seconds_ago=policy.window_seconds
            ).open_gpus
            env["GPULAB_MAX_GPU_WORKERS"] = str(max(0, policy.max_gpus - held))
        return env
