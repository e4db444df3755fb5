"""gpulab_kernels: kernelspecs and a kernel provisioner that leases GPUs to kernels.

Only the package exists so far: the provisioner and the GPU/CPU kernelspecs are built
by the kernels issue (#8). No kernelspec is installed from here yet.
"""
