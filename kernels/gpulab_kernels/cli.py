"""``gpulab kernels install|leases``: install the GPU and CPU kernelspecs; list which
kernels hold which GPUs of this server.

Exit status: 0 done; 2 bad input (nothing written).
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict

from gpulab_kernels.leases import LeaseBook, LeaseRequest, default_lease_file


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "kernels", help="gpulab's GPU and CPU kernelspecs and their GPU leases",
        description="Install the kernelspecs \"Python 3 (gpulab GPU)\" and \"Python 3 "
        "(gpulab CPU)\", or list the GPUs leased to running kernels.")
    commands = parser.add_subparsers(title="commands", metavar="COMMAND")

    install = commands.add_parser(
        "install", help="write the kernelspecs (default: into this Python's sys.prefix)",
        description="Write gpulab-gpu and gpulab-cpu into PREFIX/share/jupyter/kernels "
        "(default: this Python's sys.prefix, the environment the servers run from).")
    where = install.add_mutually_exclusive_group()
    where.add_argument("--prefix", help="install under this prefix instead of sys.prefix")
    where.add_argument("--user", action="store_true", help="install for this user only")
    install.add_argument("--fallback", default="fail", choices=LeaseRequest.FALLBACKS,
                         help="what the GPU kernel does with no GPU free: fail to start "
                         "(default) or run on the CPU with a notice")
    install.add_argument("--share", action="store_true",
                         help="GPU kernels share devices instead of holding one each")
    install.set_defaults(handler=run_install)

    leases = commands.add_parser(
        "leases", help="list which kernels hold which GPUs",
        description="List the live GPU leases of this server's kernels (dropping those of "
        "kernels that are gone). The file: $GPULAB_KERNEL_LEASES, else "
        "gpulab-kernel-leases.json in the Jupyter runtime dir.")
    leases.add_argument("--file", help="the lease file (default: see above)")
    leases.add_argument("--json", action="store_true", help="print JSON")
    leases.set_defaults(handler=run_leases)

    def usage(_args: argparse.Namespace) -> int:
        parser.print_help()
        return 2

    parser.set_defaults(handler=usage)


def run_install(args: argparse.Namespace) -> int:
    from gpulab_kernels.kernelspecs import install

    for path in install(args.prefix, user=args.user, fallback=args.fallback, share=args.share):
        print(f"installed kernelspec {path}")
    return 0


def run_leases(args: argparse.Namespace) -> int:
    book = LeaseBook(args.file or default_lease_file())
    leases = book.leases()
    if args.json:
        print(json.dumps([asdict(lease) for lease in leases], indent=1))
        return 0
    if not leases:
        print(f"no GPU is leased to a kernel or a Dask cluster ({book.path})")
        return 0
    for lease in leases:
        mode = "shared" if lease.shared else "exclusive"
        where = f"  {lease.session}" if lease.session else ""
        holder = "Dask cluster" if getattr(lease, "kind", "kernel") == "cluster" else "kernel"
        print(f"{','.join(lease.devices) or '-':40} {mode:9} {holder} {lease.kernel_id} "
              f"pid {lease.pid or '-'}{where}")
    return 0
