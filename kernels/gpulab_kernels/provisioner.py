"""``gpulab-gpu-provisioner``: starts a local kernel on GPUs leased out of the server's
allocation (``GPULAB_ALLOCATED_DEVICES``, which gpulab's spawner sets).

A kernelspec names it in its metadata::

    "metadata": {"kernel_provisioner": {"provisioner_name": "gpulab-gpu-provisioner",
                 "config": {"gpus": 1, "share": false, "fallback": "fail"}}}

Before the kernel starts, ``pre_launch`` leases its devices in the lease book
(``gpulab.leases``, shared with the server's GPU clusters) and narrows the kernel's
environment to them:

- ``CUDA_VISIBLE_DEVICES`` and ``GPULAB_ALLOCATED_DEVICES``: the leased devices only, so
  CUDA, PyTorch and ``gpulab.clusters`` started from the kernel use those and no other;
- ``GPULAB_GPUS``: their number; ``GPULAB_GPU_INFO``: the hub's description of those;
- ``GPULAB_SERVER_DEVICES``: the whole allocation of the server, for information.

When too few devices are free the kernel does not start: ``KernelLeaseError`` carries a
message naming the kernels (by notebook) and the Dask clusters (by id) that hold the
devices, which JupyterLab shows in its "Error Starting Kernel" dialog. With
``fallback: "cpu"`` the kernel starts without a GPU instead (``CUDA_VISIBLE_DEVICES=""``)
and prints why under the first cell it runs (``gpulab_kernels.notice``). The lease is
released when the kernel shuts down or restarts; a restart leases again, preferring the
devices it had.
"""

from __future__ import annotations

import asyncio
import json
import os
from typing import Any

from tornado.web import HTTPError
from traitlets import Any as AnyTrait
from traitlets import Unicode

from gpulab.leases import LeaseBook, LeaseRequest, NoFreeGPU, default_lease_file
from gpulab_kernels.niced import SessionNicedProvisioner
from gpulab_kernels.notice import NOTICE_ENV


class KernelLeaseError(HTTPError):
    """A kernel that can't start for want of GPUs (409) or a bad kernelspec (500).

    An HTTPError so the server's kernels API answers with this message rather than
    "Unhandled error"; ``str()`` is the message alone because the sessions API (what
    JupyterLab calls to open a notebook) answers with ``str(error)``.
    """

    def __init__(self, status_code: int, message: str):
        super().__init__(status_code, message.replace("%", "%%"))
        self.message = message

    def __str__(self) -> str:
        return self.message


class GpuLeaseProvisioner(SessionNicedProvisioner):
    """A local provisioner (session niced, ``gpulab_kernels.niced``) whose kernels see only
    the GPUs leased to them.

    Override points: ``allocated_devices()`` (the server's devices) and ``lease_book()``.
    The three settings come from the kernelspec's ``config`` (traitlets config such as
    ``c.GpuLeaseProvisioner.fallback = "cpu"`` gives defaults for kernelspecs that omit
    them); they are checked when a kernel starts, and a bad one fails that start with a
    message naming the kernelspec and the field.
    """

    gpus = AnyTrait(1, help="""How many GPUs each kernel leases (a whole number >= 0;
        0: a CPU kernel).""").tag(config=True)
    share = AnyTrait(False, help="""True: the leased devices may be shared with other
        kernels that share (never with one that holds its devices to itself). False
        (default): the devices are this kernel's alone.""").tag(config=True)
    fallback = AnyTrait("fail", help="""What a kernel does when too few GPUs are free:
        "fail" (default) refuses to start with a message naming the kernels that hold
        them; "cpu" starts without a GPU and prints why under its first cell.""").tag(
        config=True)
    lease_file = Unicode("", help="""The lease book's file. Default: $GPULAB_KERNEL_LEASES,
        else gpulab-kernel-leases.json in the Jupyter runtime dir.""").tag(config=True)

    _held: list[str] | None = None  # what this kernel had, preferred on restart

    def __init__(self, **kwargs: Any):
        # The kernelspec's config arrives as keyword arguments; a misspelt key would
        # otherwise be dropped with a warning and the kernel run on defaults.
        known = set(self.class_trait_names()) | {"parent", "config", "log"}
        self._unknown = {key: kwargs.pop(key) for key in list(kwargs) if key not in known}
        super().__init__(**kwargs)

    def lease_book(self) -> LeaseBook:
        return LeaseBook(self.lease_file or default_lease_file())

    def allocated_devices(self) -> list[str]:
        """The server's devices, read from the server's own environment (not the kernel's,
        which a kernelspec's ``env`` may change)."""
        from gpulab.clusters.limits import allocated_devices

        return allocated_devices(os.environ)

    def _kernel_name(self) -> str:
        # The kernelspec's name lives on the KernelManager, not on the KernelSpec.
        return getattr(self.parent, "kernel_name", "") or "?"

    def _request(self) -> LeaseRequest:
        where = f"kernelspec {self._kernel_name()!r} (metadata.kernel_provisioner.config)"
        try:
            return LeaseRequest.parse(
                {**self._unknown, "gpus": self.gpus, "share": self.share,
                 "fallback": self.fallback}, where)
        except ValueError as e:
            self._forget_failed_start()
            raise KernelLeaseError(500, f"This kernel can't start: {e}. Ask your "
                                   "operator to fix the kernelspec.") from None

    async def pre_launch(self, **kwargs: Any) -> dict[str, Any]:
        request = self._request()
        env = kwargs.get("env") or os.environ
        allocated = await asyncio.to_thread(self.allocated_devices)
        book = self.lease_book()
        notice, devices = "", []
        if request.gpus:  # a CPU kernel (gpus 0) holds nothing and leaves no lease
            try:
                lease = await asyncio.to_thread(
                    book.acquire, self.kernel_id, request, allocated,
                    prefer=self._held or (), kernel_name=self._kernel_name(),
                    session=env.get("JPY_SESSION_NAME", ""))
                devices = lease.devices
            except NoFreeGPU as e:
                if request.fallback != "cpu":
                    self.log.warning("kernel %s refused: %s", self.kernel_id, e)
                    self._forget_failed_start()
                    raise KernelLeaseError(409, str(e)) from None
                notice = f"gpulab: this kernel runs on the CPU, without a GPU. {e}"
                self.log.warning("kernel %s falls back to the CPU: %s", self.kernel_id, e)
        self._held = devices
        try:
            kwargs = await super().pre_launch(**kwargs)
        except BaseException:
            await asyncio.to_thread(book.release, self.kernel_id)
            raise
        kwargs["env"].update(kernel_env(devices, allocated, os.environ))
        if notice:
            kwargs["env"][NOTICE_ENV] = notice
            # The notice extension prints it under the kernel's first cell.
            kwargs["cmd"] = [*kwargs["cmd"], "--IPKernelApp.extra_extensions=gpulab_kernels.notice"]
        else:
            kwargs["env"].pop(NOTICE_ENV, None)
        self.log.info("kernel %s: GPUs %s", self.kernel_id, ",".join(devices) or "none")
        return kwargs

    async def launch_kernel(self, cmd: list[str], **kwargs: Any):
        book = self.lease_book()
        try:
            info = await super().launch_kernel(cmd, **kwargs)
        except BaseException:
            await asyncio.to_thread(book.release, self.kernel_id)
            raise
        await asyncio.to_thread(book.attach, self.kernel_id, self.pid)
        return info

    async def cleanup(self, restart: bool = False) -> None:
        await super().cleanup(restart=restart)
        # On restart too: the kernel process is gone, pre_launch leases again.
        await asyncio.to_thread(self.lease_book().release, self.kernel_id)

    def _forget_failed_start(self) -> None:
        """Drop this kernel from the server's pending kernels once its start has failed.

        jupyter_client 8's MultiKernelManager keeps a kernel whose start raised in
        ``_pending_kernels``; at exit the server's ``shutdown_all`` then fails on it ("Kernel
        does not exist") and the server hangs until killed. Refusals are routine here, so
        the entry goes once the failed start has unwound.
        """
        manager = getattr(self.parent, "parent", None)
        pending = getattr(manager, "_pending_kernels", None)
        if isinstance(pending, dict):
            kernel_id = self.kernel_id
            asyncio.get_running_loop().call_soon(pending.pop, kernel_id, None)

    async def get_provisioner_info(self) -> dict:
        info = await super().get_provisioner_info()
        info["gpulab_devices"] = self._held
        return info

    async def load_provisioner_info(self, provisioner_info: dict) -> None:
        await super().load_provisioner_info(provisioner_info)
        self._held = provisioner_info.get("gpulab_devices")


def kernel_env(devices: list[str], allocated: list[str], server_env: Any) -> dict[str, str]:
    """The variables that narrow a kernel to ``devices`` (see the module docstring)."""
    try:
        described = json.loads(server_env.get("GPULAB_GPU_INFO") or "[]")
        info = [gpu for gpu in described if gpu.get("uuid") in devices]
    except (ValueError, TypeError, AttributeError):
        info = []
    return {
        "CUDA_VISIBLE_DEVICES": ",".join(devices),
        "GPULAB_ALLOCATED_DEVICES": ",".join(devices),
        "GPULAB_GPUS": str(len(devices)),
        "GPULAB_GPU_INFO": json.dumps(info),
        "GPULAB_SERVER_DEVICES": ",".join(allocated),
    }
