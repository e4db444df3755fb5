"""gpulab on Slurm: the hub on a login node, each user's server a batch job.

Start it with ``jupyterhub -f deploy/slurm/jupyterhub_config.py`` as a user that may
``sudo -u <user> sbatch`` (batchspawner's exec_prefix), with this environment:

- ``GPULAB_LEDGER_URL``: the quota ledger (PostgreSQL: the hub, its quota service and the
  users' servers on compute nodes share it through the quota service);
- ``GPULAB_QUOTA_FILE``: the policies and the GPU partition's pool (deploy/slurm/quota.yaml);
- ``GPULAB_HUB_IP``: this node's address as compute nodes reach it (the hub API, the quota
  service);
- ``GPULAB_RUNS_DIR``: the runs root on the shared file system (or an fsspec URL);
- ``GPULAB_PUBLIC_HOSTS``: the hub's public host[:port] (dashboards' websocket origins);
- ``GPULAB_ADMINS`` (optional): comma-separated operators.

What differs from the embedded default: see docs/deploy-slurm.md.
"""

import os

from gpulab_hub.deploy_services import register_services
from gpulab_hub.quota_file import apply_quota_settings

c = get_config()  # noqa: F821 - provided by JupyterHub when it loads this file
env = os.environ
hub_ip = env["GPULAB_HUB_IP"]

# --- Where it listens ----------------------------------------------------------------
# Jobs on compute nodes call the hub's API back (batchspawner reports its port there).
c.JupyterHub.hub_bind_url = "http://0.0.0.0:8081"
c.JupyterHub.hub_connect_ip = hub_ip

# --- Who can log in ------------------------------------------------------------------
# The cluster's own accounts (JupyterHub's default PAM authenticator): each hub user is an
# OS account on the login node, which the batch job runs as.
admins = {name.strip() for name in env.get("GPULAB_ADMINS", "").split(",") if name.strip()}
c.Authenticator.admin_users = admins
c.Authenticator.allow_all = True

# --- Servers: one batch job each, sized by the quota ---------------------------------
c.JupyterHub.spawner_class = "gpulab-slurm"
c.Spawner.default_url = "/lab"
c.Spawner.start_timeout = 600  # a job may wait in the queue
c.Spawner.http_timeout = 120
c.GpulabSlurmSpawner.req_partition = "gpu"
# A CPU server's time; a GPU server's is the user's max_session (at most this).
c.GpulabSlurmSpawner.req_runtime = "12:00:00"
c.GpulabSlurmSpawner.gres_gpu_type = ""  # "a100": --gres=gpu:a100:N
c.GpulabSlurmSpawner.mig_gres_types = {"1g.10gb": "a100_1g.10gb"}  # gres.conf's names
c.GpulabSlurmSpawner.profile_resources = {
    "cpu": {"mem_limit": "8G", "cpu_limit": 4, "partition": "cpu"},
    "*": {"mem_limit": "64G", "cpu_limit": 16},
}
# Dask clusters the users start (sidebar, gpulab.clusters.start) run their workers as Slurm
# jobs: one --gres=gpu:1 job per GPU worker, ending with the session.
c.Spawner.environment = {
    "GPULAB_SLURM_CLUSTER": "1",
    "GPULAB_SLURM_QUEUE": "gpu",
    "GPULAB_SLURM_WALLTIME": "04:00:00",
    "GPULAB_SLURM_SHARED_DIR": "~/.gpulab/jobqueue",
}

# --- GPUs and quotas -----------------------------------------------------------------
apply_quota_settings(c)
register_services(
    c,
    env=env,
    quota_url=f"http://{hub_ip}:10101",  # reached by the jobs on compute nodes
    dashboards_url="http://127.0.0.1:10102",
    runs_dir=env["GPULAB_RUNS_DIR"],
    origins=[h.strip() for h in env["GPULAB_PUBLIC_HOSTS"].split(",") if h.strip()],
    operators=sorted(admins),
)
