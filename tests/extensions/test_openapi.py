"""The written OpenAPI description against the live extension, by schemathesis: generated
valid and invalid requests to every route; no 5xx, statuses and bodies as described."""

from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.specs.openapi.checks import missing_required_header

import gpulab_jupyterlab
from tests.extensions.live_server import LiveServer

OPENAPI = Path(gpulab_jupyterlab.__file__).with_name("openapi.yaml")


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    # A small worker limit: generated valid requests may start clusters, a few at most.
    server = LiveServer.start(tmp_path_factory.mktemp("openapi"),
                              {"GPULAB_MAX_DASK_WORKERS": "2"})
    yield server
    server.stop()


# Loaded at import (schemathesis' lazy `from_fixture` fails on pytest 9); the live server's
# URL is given to each call instead.
schema = schemathesis.openapi.from_path(OPENAPI)


@schema.parametrize()
@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                 HealthCheck.filter_too_much])
def test_the_api_is_as_described(case, live):
    # Jupyter server answers a request without credentials 403 (not 401), as every
    # Jupyter API does; the description says so, the generic 401 check is left out.
    case.call_and_validate(base_url=live.url.rstrip("/"), headers=live.auth,
                           excluded_checks=[missing_required_header])


def test_the_description_names_every_route():
    text = OPENAPI.read_text()
    for route in ("/gpulab/allocation:", "/gpulab/clusters:", "/gpulab/clusters/{cluster_id}:"):
        assert route in text
