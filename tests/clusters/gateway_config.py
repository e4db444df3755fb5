"""dask-gateway-server config for tests/clusters/test_gateway.py (``dask-gateway-server -f``).

A real gateway on 127.0.0.1 whose clusters are processes of the account running the tests
(``UnsafeLocalBackend``: no user separation, for tests only), users checked by one shared
password (``SimpleAuthenticator``, also for tests only), and two cluster options. The test
passes the ports, the password and the state folder in the environment.
"""

import os
import sys

from dask_gateway_server.options import Float, Integer, Options

c = get_config()  # noqa: F821  (traitlets defines it for config files)

env = os.environ
c.DaskGateway.address = f"127.0.0.1:{env['GPULAB_TEST_GATEWAY_API_PORT']}"
c.Proxy.address = f"127.0.0.1:{env['GPULAB_TEST_GATEWAY_HTTP_PORT']}"
c.Proxy.tcp_address = f"127.0.0.1:{env['GPULAB_TEST_GATEWAY_TCP_PORT']}"
c.DaskGateway.backend_class = "dask_gateway_server.backends.local.UnsafeLocalBackend"
c.DaskGateway.authenticator_class = "dask_gateway_server.auth.SimpleAuthenticator"
c.SimpleAuthenticator.password = env["GPULAB_TEST_GATEWAY_PASSWORD"]
c.LocalBackend.clusters_directory = os.path.join(env["GPULAB_TEST_GATEWAY_STATE"], "clusters")

# This interpreter's Dask, whatever PATH says (distributed no longer installs the
# dask-scheduler and dask-worker scripts the gateway's defaults name).
c.ClusterConfig.scheduler_cmd = [sys.executable, "-m", "distributed.cli.dask_scheduler"]
c.ClusterConfig.worker_cmd = [sys.executable, "-m", "distributed.cli.dask_worker"]
c.ClusterConfig.idle_timeout = 600  # a cluster a failed test leaves stops by itself
# Workers and schedulers stop quickly when a cluster stops (the default waits 10 s per signal).
c.LocalBackend.sigint_timeout = 3


def _options_to_config(options):
    return {
        "worker_cores": options.worker_cores,
        "worker_memory": int(options.worker_memory * 2**30),
    }


c.Backend.cluster_options = Options(
    Integer("worker_cores", default=1, min=1, max=4, label="Worker cores"),
    Float("worker_memory", default=1, min=0.25, max=4, label="Worker memory (GiB)"),
    handler=_options_to_config,
)
