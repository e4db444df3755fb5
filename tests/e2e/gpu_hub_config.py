"""The embedded default on a node with 2 GPUs that NVML can't see (a static inventory),
as the GPU quota tests run it: everyone may hold 1 GPU at once, the admin 2."""

from pathlib import Path

load_subconfig(str(Path(__file__).resolve().parents[2] / "jupyterhub_config.py"))  # noqa: F821
c = get_config()  # noqa: F821

c.GpulabQuota.static_gpus = 2
c.GpulabQuota.default_policy = {"max_gpus": 1}
c.GpulabQuota.user_policies = {"admin": {"max_gpus": 2}}
