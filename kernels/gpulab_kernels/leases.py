"""The lease book, as the kernel provisioner and ``gpulab kernels leases`` know it.

It lives in gpulab's core (``gpulab.leases``) because the server's GPU clusters lease in
the same book as the kernels, and the core must not import this package. Re-exported here
so that ``gpulab_kernels.leases`` keeps working.
"""

from gpulab.leases import (
    CLUSTER,
    FORMAT_VERSION,
    KERNEL,
    LEASE_FILE_NAME,
    Lease,
    LeaseBook,
    LeaseRequest,
    NoFreeGPU,
    choose,
    default_lease_file,
    free_them,
    process_identity,
    refusal,
)

__all__ = [
    "CLUSTER",
    "FORMAT_VERSION",
    "KERNEL",
    "LEASE_FILE_NAME",
    "Lease",
    "LeaseBook",
    "LeaseRequest",
    "NoFreeGPU",
    "choose",
    "default_lease_file",
    "free_them",
    "process_identity",
    "refusal",
]
