"""Request to a usable ``Client``: ``gpulab.clusters.start`` against a plain ``LocalCluster``.

    .venv/bin/python -m bench.cluster_start [--quick] [--workers N] [--rounds R]

In one run, alternating (plain, gpulab | gpulab, plain | ...) so a busy machine's drift
weighs on both alike, each round timed from the call to the first task's result on a
``Client``:

- ``plain``: ``distributed.LocalCluster(n_workers=N)`` with what gpulab's cluster has too:
  a fresh TLS certificate (``Security.temporary()``), workers on 127.0.0.1, a dashboard on a
  free port, then ``Client(cluster)``;
- ``gpulab``: ``gpulab.clusters.start(workers=N)`` (limits checked, devices chosen, the
  registry record written and kept current, control handlers installed), then
  ``cluster.client()`` (a client from the record, as another process would connect);
- ``plain tcp`` / ``gpulab tcp``: the same without TLS (``protocol="tcp"``), to show
  what the certificate costs on its own.

No hub: the quota service's admission (one HTTP call) is not in these figures.
The last line is ``key=value``: ``start_ratio`` = gpulab / plain medians (TLS, the
default), ``tcp_ratio`` the same for tcp, ``tls_cost_s`` = plain TLS - plain tcp.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import tempfile
import time


def _plain(workers: int, protocol: str) -> float:
    from distributed import Client, LocalCluster
    from distributed.security import Security

    t0 = time.perf_counter()
    security = Security.temporary() if protocol == "tls" else None
    cluster = LocalCluster(n_workers=workers, host="127.0.0.1", protocol=f"{protocol}://",
                           security=security, dashboard_address="127.0.0.1:0",
                           silence_logs=logging.ERROR)
    client = Client(cluster)
    client.submit(int, 1).result()
    elapsed = time.perf_counter() - t0
    client.close()
    cluster.close()
    return elapsed


def _gpulab(workers: int, protocol: str, registry) -> float:
    from gpulab import clusters

    t0 = time.perf_counter()
    cluster = clusters.start(workers=workers, protocol=protocol, progress=False,
                             registry=registry, quota=None)
    client = cluster.client()
    client.submit(int, 1).result()
    elapsed = time.perf_counter() - t0
    client.close()
    cluster.stop()
    return elapsed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 rounds (about a minute)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=None)
    args = parser.parse_args(argv)
    rounds = args.rounds or (3 if args.quick else 10)

    from gpulab.clusters import Registry

    registry = Registry(tempfile.mkdtemp(prefix="gpulab-bench-clusters-"))
    kinds = {
        "plain": lambda: _plain(args.workers, "tls"),
        "gpulab": lambda: _gpulab(args.workers, "tls", registry),
        "plain tcp": lambda: _plain(args.workers, "tcp"),
        "gpulab tcp": lambda: _gpulab(args.workers, "tcp", registry),
    }
    # Warm-up: imports (distributed, bokeh) and first-use caches, for both, not measured.
    kinds["plain"]()
    kinds["gpulab"]()
    times: dict[str, list[float]] = {k: [] for k in kinds}
    for r in range(rounds):
        order = list(kinds) if r % 2 == 0 else list(reversed(kinds))
        for kind in order:
            times[kind].append(kinds[kind]())
            print(f"round {r + 1}/{rounds} {kind:<11} {times[kind][-1]:.3f} s", file=sys.stderr)

    print(f"\n{'kind':<12}{'workers':>8}{'rounds':>8}{'median s':>10}{'min s':>8}{'max s':>8}")
    med = {}
    for kind, values in times.items():
        med[kind] = statistics.median(values)
        print(f"{kind:<12}{args.workers:>8}{len(values):>8}{med[kind]:>10.3f}"
              f"{min(values):>8.3f}{max(values):>8.3f}")
    print(
        f"\nworkers={args.workers} rounds={rounds} plain_s={med['plain']:.3f} "
        f"gpulab_s={med['gpulab']:.3f} start_ratio={med['gpulab'] / med['plain']:.3f} "
        f"tcp_ratio={med['gpulab tcp'] / med['plain tcp']:.3f} "
        f"tls_cost_s={med['plain'] - med['plain tcp']:.3f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
