"""The lease book on its own: device choice, refusals, reconciliation, the lock."""

import json
import multiprocessing
import os
import subprocess
import sys

import pytest

from gpulab.cli import main
from gpulab_kernels.leases import Lease, LeaseBook, LeaseRequest, NoFreeGPU, process_identity

ONE = LeaseRequest(gpus=1)
SHARED = LeaseRequest(gpus=1, share=True)
DEVICES = ["GPU-aaa", "GPU-bbb"]


@pytest.fixture
def book(tmp_path):
    return LeaseBook(tmp_path / "runtime" / "leases.json")


def lease(book, kernel_id, request=ONE, devices=DEVICES, **kw):
    """Lease for a kernel that is this (live) test process."""
    held = book.acquire(kernel_id, request, devices, **kw)
    book.attach(kernel_id, os.getpid())
    return held


def test_exclusive_kernels_get_different_devices_and_a_third_is_refused(book):
    assert lease(book, "k1", session="/home/u/a.ipynb").devices == ["GPU-aaa"]
    assert lease(book, "k2", session="/home/u/b.ipynb").devices == ["GPU-bbb"]
    before = book.path.read_text()
    with pytest.raises(NoFreeGPU) as refused:
        book.acquire("k3", ONE, DEVICES)
    message = str(refused.value)
    assert "GPU-aaa held by kernel k1 (a.ipynb)" in message
    assert "GPU-bbb held by kernel k2 (b.ipynb)" in message
    assert "Shut down a kernel" in message and "Python 3 (gpulab CPU)" in message
    assert book.path.read_text() == before  # a refusal leases nothing
    assert book.release("k1").devices == ["GPU-aaa"]
    assert lease(book, "k3").devices == ["GPU-aaa"]


def test_shared_kernels_share_a_device_an_exclusive_one_never(book):
    lease(book, "excl", devices=DEVICES)
    assert lease(book, "s1", SHARED).devices == ["GPU-bbb"]
    assert lease(book, "s2", SHARED).devices == ["GPU-bbb"]
    with pytest.raises(NoFreeGPU, match="GPU-bbb shared by kernel s1; kernel s2"):
        book.acquire("e2", ONE, DEVICES)
    book.release("excl")
    # Shared kernels spread over the devices before they double up.
    assert lease(book, "s3", SHARED).devices == ["GPU-aaa"]
    with pytest.raises(NoFreeGPU, match="GPU-aaa shared by kernel s3"):
        book.acquire("e3", ONE, DEVICES)


def test_a_restarting_kernel_gets_its_devices_back(book):
    lease(book, "k1")
    lease(book, "k2")
    book.release("k2")
    book.release("k1")
    assert lease(book, "k2", prefer=["GPU-bbb"]).devices == ["GPU-bbb"]
    # Re-leasing replaces the kernel's lease rather than adding one.
    assert lease(book, "k2", prefer=["GPU-bbb"]).devices == ["GPU-bbb"]
    assert [x.kernel_id for x in book.leases()] == ["k2"]


def test_leases_of_dead_kernels_are_dropped_live_ones_kept(book, tmp_path):
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    try:
        book.acquire("alive", ONE, DEVICES)
        book.attach("alive", sleeper.pid)
        book.acquire("dead", ONE, DEVICES)
        book.attach("dead", gone.pid)
        # A lease whose pid now names another process (started at another time).
        book.acquire("reused", ONE, DEVICES + ["GPU-ccc"])
        book.attach("reused", sleeper.pid)
        data = json.loads(book.path.read_text())
        for item in data["leases"]:
            if item["kernel_id"] == "reused":
                item["pid_started"] -= 3600
        # A kernel whose server died while starting it (no pid yet).
        data["leases"].append({"kernel_id": "launching", "devices": ["GPU-ddd"],
                               "shared": False, "server_pid": gone.pid,
                               "server_started": 1.0})
        book.path.write_text(json.dumps(data))

        assert {x.kernel_id: x.devices for x in book.leases()} == {"alive": ["GPU-aaa"]}
        assert "dead" not in book.path.read_text()  # reconciled in the file too
        assert lease(book, "next").devices == ["GPU-bbb"]
    finally:
        sleeper.kill()
        sleeper.wait()
    assert [x.kernel_id for x in book.leases()] == ["next"]


def test_a_lease_being_launched_lives_while_its_server_does(book):
    book.acquire("starting", ONE, DEVICES)
    (held,) = book.leases()
    assert held.pid is None and held.server_pid == os.getpid()


def _grab(path, results):
    book = LeaseBook(path)
    try:
        held = book.acquire(f"k{os.getpid()}", ONE, DEVICES)
        book.attach(held.kernel_id, os.getppid())  # the test process: alive
        results.put(held.devices[0])
    except NoFreeGPU:
        results.put("refused")


def test_concurrent_starts_never_share_a_device(book):
    context = multiprocessing.get_context("fork")
    results = context.Queue()
    workers = [context.Process(target=_grab, args=(book.path, results)) for _ in range(6)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
    got = sorted(results.get(timeout=10) for _ in workers)
    assert got == ["GPU-aaa", "GPU-bbb"] + ["refused"] * 4
    assert sorted(d for x in book.leases() for d in x.devices) == DEVICES


def test_a_clusters_lease_is_exclusive_and_named_in_refusals(book):
    """A Dask cluster of the server holds its devices alone, for as long as its owner
    process runs (this one here), and a refusal says how to free each kind of holder."""
    lease(book, "k1", session="/home/u/a.ipynb")
    held = book.acquire("c0ffee123456", SHARED, DEVICES, kind="cluster", pid=os.getpid(),
                        session="prep")
    assert (held.devices, held.shared, held.kind, held.pid) == (
        ["GPU-bbb"], False, "cluster", os.getpid())
    with pytest.raises(NoFreeGPU) as refused:
        book.acquire("k2", SHARED, DEVICES)  # a sharing kernel gets no cluster's device
    message = str(refused.value)
    assert "GPU-aaa held by kernel k1 (a.ipynb)" in message
    assert "GPU-bbb held by Dask cluster c0ffee123456 ('prep')" in message
    assert "Shut down a kernel that holds a GPU" in message
    assert "or stop a Dask cluster that holds one" in message
    assert set(refused.value.held_by) == {"GPU-aaa", "GPU-bbb"}
    with pytest.raises(ValueError, match="kind must be 'kernel' or 'cluster', not 'job'"):
        book.acquire("x", ONE, DEVICES, kind="job")
    # A lease file written before clusters leased (no "kind") reads as kernels' leases.
    stored = json.loads(book.path.read_text())
    for item in stored["leases"]:
        item.pop("kind")
    book.path.write_text(json.dumps(stored))
    assert {x.kind for x in book.leases()} == {"kernel"}


def test_refusals_on_a_cpu_server_and_beyond_the_allocation(book):
    with pytest.raises(NoFreeGPU, match=r"needs 1 GPU but this server has none \(a CPU"):
        book.acquire("k", ONE, [])
    with pytest.raises(NoFreeGPU, match="needs 3 GPUs but this server has 2"):
        book.acquire("k", LeaseRequest(gpus=3), DEVICES)
    assert book.leases() == []


def test_a_corrupt_lease_file_starts_over(book):
    book.path.parent.mkdir(parents=True)
    book.path.write_text("{not json")
    assert lease(book, "k").devices == ["GPU-aaa"]
    book.path.write_text(json.dumps({"leases": [{"kernel_id": "no devices"}]}))
    assert lease(book, "k").devices == ["GPU-aaa"]


@pytest.mark.parametrize("config, field", [
    ({"gpus": -1}, "'gpus'"), ({"gpus": "1"}, "'gpus'"), ({"gpus": True}, "'gpus'"),
    ({"share": "yes"}, "'share'"), ({"fallback": "maybe"}, "'fallback'"),
    ({"gpu": 1}, "unknown key"),
])
def test_bad_kernelspec_config_names_the_field(config, field):
    with pytest.raises(ValueError, match=field) as bad:
        LeaseRequest.parse(config, "kernelspec 'x'")
    assert "kernelspec 'x'" in str(bad.value)


def test_process_identity():
    assert process_identity(os.getpid()) is not None
    assert Lease("k", [], False, os.getpid(), process_identity(os.getpid())).alive()


def test_install_and_leases_commands(tmp_path, capsys):
    assert main(["kernels", "install", "--prefix", str(tmp_path), "--fallback", "cpu",
                 "--share"]) == 0
    kernels = tmp_path / "share" / "jupyter" / "kernels"
    gpu = json.loads((kernels / "gpulab-gpu" / "kernel.json").read_text())
    cpu = json.loads((kernels / "gpulab-cpu" / "kernel.json").read_text())
    assert gpu["display_name"] == "Python 3 (gpulab GPU)"
    assert gpu["metadata"]["kernel_provisioner"] == {
        "provisioner_name": "gpulab-gpu-provisioner",
        "config": {"gpus": 1, "share": True, "fallback": "cpu"}}
    assert cpu["display_name"] == "Python 3 (gpulab CPU)"
    assert cpu["env"]["CUDA_VISIBLE_DEVICES"] == ""
    assert cpu["metadata"]["kernel_provisioner"]["config"] == {"gpus": 0}
    assert (kernels / "gpulab-gpu" / "logo-64x64.png").is_file()

    book = LeaseBook(tmp_path / "leases.json")
    lease(book, "k1", session="/home/u/a.ipynb")
    capsys.readouterr()
    assert main(["kernels", "leases", "--file", str(book.path)]) == 0
    out = capsys.readouterr().out
    assert "GPU-aaa" in out and "exclusive" in out and "kernel k1" in out and "a.ipynb" in out
    book.acquire("c1", ONE, DEVICES, kind="cluster", pid=os.getpid(), session="demo")
    assert main(["kernels", "leases", "--file", str(book.path)]) == 0
    assert "Dask cluster c1" in capsys.readouterr().out
    assert main(["kernels", "leases", "--file", str(book.path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["pid"] == os.getpid()
    with pytest.raises(SystemExit):
        main(["kernels", "install", "--fallback", "sometimes"])
