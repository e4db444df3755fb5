"""The quota ledger's database unreachable for a while: spawns fail closed, then resume.

The hub's ledger is a real PostgreSQL started by the test (``tests/quota/postgres_server.py``,
named in the state folder's ``ledger-url``, see ``fault_hub_config.py``). With the
database stopped, a spawn is refused with HTTP 503 and a message saying the quota ledger
is unreachable (no traceback in the hub's log, no server left behind), the spawn form
says the same, and servers already running go on answering. Once the database is back,
the next spawn is admitted and the ledger matches the hub again.
"""

import pytest

from tests.quota.postgres_server import PostgresServer, PostgresUnavailable
from tests.reliability.conftest import (
    assert_consistent,
    hub_ledger,
    start_fault_hub,
    stop_all,
    wait_ready,
)

pytestmark = pytest.mark.e2e

UNREACHABLE = "quota ledger is unreachable"


def pause(pg: PostgresServer) -> None:
    pg._run("pg_ctl", "stop", "-D", str(pg.data), "-m", "fast")


def resume(pg: PostgresServer) -> None:
    """Start the same cluster again, on the same port (as a restarted database server)."""
    options = f"-h 127.0.0.1 -p {pg.port} -k {pg.folder} -c fsync=off"
    log = str(pg.folder / "server.log")
    pg._run("pg_ctl", "start", "-D", str(pg.data), "-l", log, "-w", "-t", "60", "-o", options)


@pytest.fixture(scope="module")
def pg():
    try:
        server = PostgresServer().start()
    except PostgresUnavailable as e:
        pytest.skip(str(e))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def pg_hub(pg, tmp_path_factory):
    state = tmp_path_factory.mktemp("pg-hub") / "state"
    state.mkdir()
    (state / "ledger-url").write_text(pg.create_database("ledger"))
    hub = start_fault_hub(state)
    yield hub
    hub.stop()


def test_spawns_fail_closed_while_the_ledger_is_down_and_resume(pg, pg_hub):
    admin = pg_hub.admin_session()
    admin.api("POST", "/users", json={"usernames": ["ivy", "kim"]})
    assert admin.api("POST", "/users/ivy/server", json={"gpus": 1}).ok
    wait_ready(admin, "ivy")

    pause(pg)
    try:
        lines_before = len(pg_hub.lines)
        refused = admin.api("POST", "/users/kim/server", json={"gpus": 1})
        assert refused.status_code == 503, refused.text
        assert UNREACHABLE in refused.json()["message"]
        assert admin.api("GET", "/users/kim").json()["servers"] == {}
        form = admin.http.get(f"{pg_hub.url}/hub/spawn/kim", timeout=60)
        assert form.status_code == 503 and UNREACHABLE in form.text
        # A running server is not the ledger's business until it stops.
        assert admin.get_as_user("/user/ivy/api/status").status_code == 200
        logged = "".join(pg_hub.lines[lines_before:])
        assert "quota ledger unreachable" in logged.lower() and "Traceback" not in logged
    finally:
        resume(pg)

    spawned = admin.api("POST", "/users/kim/server", json={"gpus": 1})
    assert spawned.status_code in (201, 202), spawned.text
    wait_ready(admin, "kim")
    with hub_ledger(pg_hub.state_dir) as ledger:
        assert ledger.backend == "postgresql"
        assert_consistent(admin, ledger, pg_hub.state_dir)
        stop_all(admin, pg_hub.state_dir)
        assert ledger.open_allocations() == []
