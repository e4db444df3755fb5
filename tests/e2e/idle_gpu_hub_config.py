"""The embedded default with 1 static GPU whose readings the test writes to
``$GPULAB_STATE_DIR/telemetry.json``; GPUs idle for 3 s are culled; an accounting round
every second."""

import os
from pathlib import Path

load_subconfig(str(Path(__file__).resolve().parents[2] / "jupyterhub_config.py"))  # noqa: F821
c = get_config()  # noqa: F821

c.GpulabQuota.static_gpus = 1
c.GpulabQuota.static_telemetry_file = str(Path(os.environ["GPULAB_STATE_DIR"]) / "telemetry.json")
c.QuotaService.tick_seconds = 1
c.QuotaService.gpu_idle_seconds = 3
