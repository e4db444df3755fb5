"""gpulab_hub: the JupyterHub adapters of gpulab (spawner, authenticator, the embedded
default's pieces and the ``gpulab hub`` command). Thin: domain logic lives in ``gpulab``."""
