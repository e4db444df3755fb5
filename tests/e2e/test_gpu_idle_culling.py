"""GPU-aware culling on a real hub: a server busy on its GPU is kept and marked active
(so HTTP-idle culling spares it); once its GPU sits idle past the limit it is stopped and
the ledger says ``gpu_idle``. The GPU's utilisation comes from a telemetry file the test
writes (``c.GpulabQuota.static_telemetry_file``)."""

import json
import os
import time
from pathlib import Path

import pytest

from gpulab.quota.ledger import Ledger
from tests.e2e.harness import RunningHub
from tests.e2e.test_gpu_spawns import wait_ready

pytestmark = pytest.mark.e2e
GPU = "GPU-static-0000"


def write_telemetry(state: Path, utilization: float) -> None:
    tmp = state / "telemetry.json.tmp"
    tmp.write_text(json.dumps({GPU: {"utilization_percent": utilization}}))
    os.replace(tmp, state / "telemetry.json")


def test_busy_gpus_keep_a_server_and_idle_ones_end_it(tmp_path):
    state = tmp_path / "state"
    hub = RunningHub.start_with_config(state, "idle_gpu_hub_config.py")
    try:
        admin = hub.admin_session()
        admin.api("POST", "/users/lea")
        write_telemetry(state, 60)
        assert admin.api("POST", "/users/lea/server", json={"gpus": 1}).ok
        wait_ready(admin, "lea")

        def last_activity():
            return admin.api("GET", "/users/lea").json()["servers"][""]["last_activity"]

        time.sleep(4)  # past the 3 s idle limit, but busy
        first = last_activity()
        time.sleep(3)
        assert admin.api("GET", "/users/lea").json()["servers"], "a busy GPU server was culled"
        assert last_activity() > first, "the busy server was not marked active"

        write_telemetry(state, 0)
        deadline = time.monotonic() + 60
        while admin.api("GET", "/users/lea").json()["servers"]:
            assert time.monotonic() < deadline, "the idle GPU server was not stopped"
            time.sleep(0.5)
        ledger = Ledger(f"sqlite:///{state / 'ledger.sqlite'}")
        (allocation,) = ledger.allocations_since(3600)
        assert allocation.end_reason == "gpu_idle"
        assert ledger.audit("lea", action="culled", limit=1)[0].reason == "gpu_idle"
    finally:
        hub.stop()
