"""The embedded default with 2 static GPUs and a budget small enough to run out during a
test: 0.002 GPU-hours (7.2 GPU-seconds) a day, warnings an hour ahead, 3 s of grace, an
accounting round every second."""

from pathlib import Path

load_subconfig(str(Path(__file__).resolve().parents[2] / "jupyterhub_config.py"))  # noqa: F821
c = get_config()  # noqa: F821

c.GpulabQuota.static_gpus = 2
c.GpulabQuota.default_policy = {"max_gpus": 1, "gpu_hours": 0.002, "window": "1d"}
c.GpulabQuota.user_policies = {"admin": {"max_gpus": 2, "gpu_hours": None}}
c.QuotaService.tick_seconds = 1
c.QuotaService.warn_before_seconds = 3600
c.QuotaService.grace_seconds = 3
c.QuotaService.reconcile_after_seconds = 5
