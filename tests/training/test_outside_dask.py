"""The run logger and checkpoints in a script under torchrun: no Dask, same run store."""

import subprocess
import sys
from pathlib import Path

from gpulab.runs import RunStore

SCRIPT = Path(__file__).with_name("torchrun_script.py")
REPO = Path(__file__).resolve().parents[2]


def test_a_torchrun_script_logs_every_rank_into_the_run(tmp_path):
    store = RunStore(tmp_path / "runs")
    run = store.create("ada", "under torchrun", world_size=2)
    torchrun = Path(sys.executable).with_name("torchrun")
    done = subprocess.run([str(torchrun), "--standalone", "--nproc_per_node=2", str(SCRIPT),
                           run.url], cwd=REPO, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]
    records, _ = run.read_metrics()
    for rank in (0, 1):
        steps = [r["step"] for r in records if r["rank"] == rank]
        assert steps == list(range(20)), rank
    assert {r["world"] for r in records} == {2}
    step, state = run.load_latest()
    assert step == 19 and set(state["model"]) == {"weight", "bias"}
