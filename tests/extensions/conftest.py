"""pytest-jupyter's fixtures (jp_fetch: an in-process Jupyter server) for these tests only:
imported here rather than registered for the whole suite, because its autouse fixtures
(an event loop, a ServerApp clean-up) have no business in the hub and browser tests."""

import pytest
from pytest_jupyter.jupyter_core import *  # noqa: F403
from pytest_jupyter.jupyter_server import *  # noqa: F403

from tests.clusters.conftest import registry  # noqa: F401  (a private registry, no leftovers)


@pytest.fixture
def jp_server_config():
    return {"ServerApp": {"jpserver_extensions": {"gpulab_jupyterlab": True}}}
