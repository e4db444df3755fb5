"""A process that starts a cluster and keeps it, as a notebook kernel would.

    python -m tests.clusters.owner_process WORKERS NAME

Prints the cluster's id on one line once it runs, then waits: it exits (stopping the
cluster) when its stdin closes, or dies with it when killed.
"""

import sys

from gpulab import clusters


def main() -> None:
    workers, name = int(sys.argv[1]), sys.argv[2]
    cluster = clusters.start(workers=workers, name=name, progress=False)
    print(cluster.id, flush=True)
    sys.stdin.read()  # until the test closes our stdin


if __name__ == "__main__":
    main()
