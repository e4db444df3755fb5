"""GPU leases of kernels in a real `jupyter server` with real ipykernel processes.

The server's allocation is two fake devices (GPULAB_ALLOCATED_DEVICES="GPU-aaa,GPU-bbb"):
the provisioner only reads and writes environment variables, so the lease logic runs as
it does on a GPU node. What a kernel sees is read by executing code in it.
"""

import json
import os
import signal

import psutil
import pytest

from tests.kernels.conftest import Kernels, KernelStartFailed, start_server
from tests.waiting import poll

ALLOCATION = "GPU-aaa,GPU-bbb"


@pytest.fixture(scope="module")
def server(tmp_path_factory, kernelspec_path):
    live = start_server(tmp_path_factory.mktemp("server"), ALLOCATION, kernelspec_path)
    yield live
    live.stop()


@pytest.fixture
def kernels(server):
    """The server's kernels; each test's kernels are shut down after it, which must leave
    no lease behind."""
    kernels = Kernels(server)
    yield kernels
    for kernel in kernels.api("GET", "api/kernels").json():
        kernels.shutdown(kernel["id"])
    assert kernels.leases() == {}


def env_of(kernels, kernel_id, *names):
    code = f"import json, os\nprint(json.dumps({{n: os.environ.get(n) for n in {names!r}}}))"
    return json.loads(kernels.run(kernel_id, code)["stdout"])


def test_kernelspecs_are_listed_with_their_provisioner(kernels):
    specs = kernels.api("GET", "api/kernelspecs").json()["kernelspecs"]
    assert specs["gpulab-gpu"]["spec"]["display_name"] == "Python 3 (gpulab GPU)"
    assert specs["gpulab-cpu"]["spec"]["display_name"] == "Python 3 (gpulab CPU)"
    provisioner = specs["gpulab-gpu"]["spec"]["metadata"]["kernel_provisioner"]
    assert provisioner == {"provisioner_name": "gpulab-gpu-provisioner",
                           "config": {"gpus": 1, "share": False, "fallback": "fail"}}


def test_each_kernel_gets_its_own_gpu_and_a_third_is_refused(kernels):
    first = kernels.open_notebook("gpulab-gpu", "first.ipynb")
    second = kernels.open_notebook("gpulab-gpu", "second.ipynb")
    seen = {kernels.visible_devices(first), kernels.visible_devices(second)}
    assert seen == {"GPU-aaa", "GPU-bbb"}
    assert kernels.leases() == {first: [kernels.visible_devices(first)],
                                second: [kernels.visible_devices(second)]}
    narrowed = env_of(kernels, first, "GPULAB_ALLOCATED_DEVICES", "GPULAB_GPUS",
                      "GPULAB_SERVER_DEVICES")
    assert narrowed == {"GPULAB_ALLOCATED_DEVICES": kernels.visible_devices(first),
                        "GPULAB_GPUS": "1", "GPULAB_SERVER_DEVICES": ALLOCATION}

    # What JupyterLab gets when it opens a notebook (sessions API) and from the kernels API.
    with pytest.raises(KernelStartFailed) as refused:
        kernels.open_notebook("gpulab-gpu", "third.ipynb")
    message = refused.value.body["message"]
    for kernel, notebook in [(first, "first.ipynb"), (second, "second.ipynb")]:
        device = kernels.visible_devices(kernel)
        assert f"{device} held by kernel {kernel[:8]} ({notebook})" in message
    assert "Shut down a kernel that holds a GPU" in message
    answer = kernels.api("POST", "api/kernels", json={"name": "gpulab-gpu"})
    assert answer.status_code == 409
    assert answer.json()["message"] == message and "traceback" not in answer.json()
    # The refusals left no kernel and no lease behind.
    assert {k["id"] for k in kernels.api("GET", "api/kernels").json()} == {first, second}
    assert set(kernels.leases()) == {first, second}

    # Shutting one down frees its device for the next kernel.
    freed = kernels.visible_devices(first)
    kernels.shutdown(first)
    assert set(kernels.leases()) == {second}
    third = kernels.open_notebook("gpulab-gpu", "third.ipynb")
    assert kernels.visible_devices(third) == freed


def test_cpu_and_fallback_kernels_run_without_a_gpu(kernels):
    kernels.open_notebook("gpulab-gpu")
    kernels.open_notebook("gpulab-gpu")
    cpu = kernels.open_notebook("gpulab-cpu")
    assert env_of(kernels, cpu, "CUDA_VISIBLE_DEVICES", "GPULAB_ALLOCATED_DEVICES") == {
        "CUDA_VISIBLE_DEVICES": "", "GPULAB_ALLOCATED_DEVICES": ""}
    fallback = kernels.open_notebook("gpulab-gpu-fallback", "fallback.ipynb")
    first_cell = kernels.run(fallback, "print('hello')")
    assert first_cell["stdout"] == "hello\n"
    assert "gpulab: this kernel runs on the CPU, without a GPU." in first_cell["stderr"]
    assert "No free GPU for this kernel" in first_cell["stderr"]
    assert kernels.run(fallback, "print('again')")["stderr"] == ""  # said once
    assert kernels.visible_devices(fallback) == ""
    assert cpu not in kernels.leases() and fallback not in kernels.leases()


def test_shared_kernels_share_a_device(kernels):
    exclusive = kernels.open_notebook("gpulab-gpu")
    one = kernels.open_notebook("gpulab-gpu-shared")
    two = kernels.open_notebook("gpulab-gpu-shared")
    held = kernels.visible_devices(exclusive)
    other = ({"GPU-aaa", "GPU-bbb"} - {held}).pop()
    assert kernels.visible_devices(one) == kernels.visible_devices(two) == other
    # Neither the exclusive device nor the shared one is free for an exclusive kernel.
    with pytest.raises(KernelStartFailed, match=f"{other} shared by kernel"):
        kernels.open_notebook("gpulab-gpu")


def test_restart_releases_and_leases_again(kernels):
    kernel = kernels.open_notebook("gpulab-gpu")
    device = kernels.visible_devices(kernel)
    (before,) = kernels.book.leases()
    assert kernels.api("POST", f"api/kernels/{kernel}/restart").status_code == 200
    (after,) = kernels.book.leases()
    assert after.kernel_id == kernel and after.devices == [device]
    assert after.pid != before.pid and not psutil.pid_exists(before.pid)
    assert kernels.visible_devices(kernel) == device
    pid = int(kernels.run(kernel, "import os; print(os.getpid())")["stdout"])
    assert pid == after.pid


def test_a_broken_kernelspec_says_which_field(kernels):
    with pytest.raises(KernelStartFailed) as refused:
        kernels.open_notebook("gpulab-gpu-broken")
    message = refused.value.body["message"]
    assert "kernelspec 'gpulab-gpu-broken'" in message
    assert "'fallback' must be 'cpu' or 'fail', not 'maybe'" in message
    with pytest.raises(KernelStartFailed, match="kernelspec 'gpulab-gpu-misspelt'.*'gpu'"):
        kernels.open_notebook("gpulab-gpu-misspelt")


def test_a_cpu_server_refuses_or_falls_back_as_the_kernelspec_says(tmp_path, kernelspec_path):
    live = start_server(tmp_path, "", kernelspec_path)
    try:
        kernels = Kernels(live)
        with pytest.raises(KernelStartFailed, match=r"this server has none \(a CPU session\)"):
            kernels.open_notebook("gpulab-gpu")
        fallback = kernels.open_notebook("gpulab-gpu-fallback")
        shown = kernels.run(fallback, "import os; print(repr(os.environ['CUDA_VISIBLE_DEVICES']))")
        assert shown["stdout"] == "''\n"
        assert "runs on the CPU" in shown["stderr"] and "a CPU session" in shown["stderr"]
        assert kernels.leases() == {}
    finally:
        live.stop()


def test_leases_reconcile_after_the_server_restarts(tmp_path, kernelspec_path):
    live = start_server(tmp_path, ALLOCATION, kernelspec_path)
    kernels = Kernels(live)
    survivor_pid = None
    try:
        ends = kernels.open_notebook("gpulab-gpu", "ends.ipynb")
        survives = kernels.open_notebook("gpulab-gpu", "survives.ipynb")
        held = kernels.leases()
        # Stands in for a kernel stuck in a long GPU call that outlives its server: its
        # parent watcher's os._exit is made harmless.
        survivor_pid = int(kernels.run(survives, "import os\nos._exit = lambda *a: None\n"
                                                 "print(os.getpid())")["stdout"])
        ended_pid = next(x.pid for x in kernels.book.leases() if x.kernel_id == ends)
        live.stop(signal.SIGKILL)
        poll(lambda: not psutil.pid_exists(ended_pid)
             or psutil.Process(ended_pid).status() == psutil.STATUS_ZOMBIE,
             30, "the other kernel to notice its server is gone")
        assert psutil.pid_exists(survivor_pid)

        live = start_server(tmp_path, ALLOCATION, kernelspec_path)
        kernels = Kernels(live)
        assert kernels.leases() == {survives: held[survives]}
        fresh = kernels.open_notebook("gpulab-gpu")
        assert kernels.visible_devices(fresh) == held[ends][0]
        with pytest.raises(KernelStartFailed) as refused:
            kernels.open_notebook("gpulab-gpu")
        message = refused.value.body["message"]
        assert (f"{held[survives][0]} held by kernel {survives[:8]} (survives.ipynb), "
                f"pid {survivor_pid}, left running by an earlier server process") in message
        assert f"kill {survivor_pid}" in message
    finally:
        if survivor_pid and psutil.pid_exists(survivor_pid):
            os.kill(survivor_pid, signal.SIGKILL)
        live.stop()
