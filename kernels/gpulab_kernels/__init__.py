"""gpulab_kernels: the kernelspecs "Python 3 (gpulab GPU)" and "Python 3 (gpulab CPU)" and
the kernel provisioner that leases GPUs of the server's allocation to each kernel.

- ``leases``: the lease book (a locked JSON file in the runtime dir) and device choice;
- ``provisioner``: ``GpuLeaseProvisioner``, entry point ``gpulab-gpu-provisioner``;
- ``kernelspecs``: the two kernelspecs and ``gpulab kernels install`` (``cli``);
- ``notice``: the IPython extension that tells a CPU-fallback kernel's user why.

See docs/kernels.md.
"""
