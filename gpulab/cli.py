"""The ``gpulab`` command-line tool.

Sub-commands are plugins: each entry point in the ``gpulab.commands`` group names a
function ``register(subparsers)`` that adds one sub-command and sets its handler with
``parser.set_defaults(handler=fn)``; ``fn(args)`` returns the exit status. This keeps the
core free of adapter imports: ``gpulab hub`` is registered by ``gpulab_hub``.
"""

from __future__ import annotations

import argparse
import sys
from importlib.metadata import entry_points

from gpulab import __version__


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gpulab",
        description="gpulab: JupyterHub, Dask and PyTorch for shared GPU datacenters.",
    )
    parser.add_argument("--version", action="version", version=f"gpulab {__version__}")
    subparsers = parser.add_subparsers(title="commands", metavar="COMMAND")
    for entry_point in sorted(entry_points(group="gpulab.commands"), key=lambda e: e.name):
        register = entry_point.load()
        register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler = getattr(args, "handler", None)
    if handler is None:
        parser.print_help()
        return 2
    return handler(args)


if __name__ == "__main__":
    sys.exit(main())
