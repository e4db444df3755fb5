"""The config file gpulab's quota service reads (``--config``) in the scale-out deployments
(Kubernetes, Slurm, systemd): the quota settings every process shares, from
``GPULAB_QUOTA_FILE`` and ``GPULAB_LEDGER_URL`` (gpulab_hub.quota_file), so the hub, the
quota service and the Dask Gateway apply the same policies. The embedded default passes
its own jupyterhub_config.py instead."""

from gpulab_hub.quota_file import apply_quota_settings

c = get_config()  # noqa: F821 - provided by traitlets when it loads this file

apply_quota_settings(c)
# Accounting rounds, the warning before a budget or session runs out, and the grace
# period before the server is stopped, as in the embedded default.
c.QuotaService.tick_seconds = 30
c.QuotaService.warn_before_seconds = 15 * 60
c.QuotaService.grace_seconds = 5 * 60
