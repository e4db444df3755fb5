"""Port reservations and the check that a server listens on its own port."""

import asyncio
import socket
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest

from gpulab_hub.ports import PortBindError, PortReservations, free_port, wait_for_listener

LISTEN = """
import socket, sys, time
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1]))); s.listen(); time.sleep(60)
"""


def test_reserved_ports_are_never_handed_out_twice():
    reservations = PortReservations()
    with ThreadPoolExecutor(8) as pool:
        ports = list(pool.map(lambda _: reservations.reserve(), range(200)))
    assert len(set(ports)) == 200
    assert reservations.held == frozenset(ports)
    reservations.release(ports[0])
    assert ports[0] not in reservations.held


def test_reserved_context_releases_on_exit():
    reservations = PortReservations()
    with reservations.reserved() as port:
        assert port in reservations.held
    assert reservations.held == frozenset()


def run(coroutine):
    # In a thread of its own: Playwright's sync API (browser tests in the same session)
    # leaves an event loop running in the main thread, where asyncio.run() refuses.
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coroutine).result()


def alive(proc):
    return lambda: proc.poll() is None


def start(code, *args):
    return subprocess.Popen([sys.executable, "-c", code, *map(str, args)])


def test_wait_for_listener_returns_once_our_process_listens():
    port = free_port()
    proc = start(LISTEN, port)
    try:
        run(wait_for_listener(proc.pid, port, timeout=30, is_running=alive(proc)))
    finally:
        proc.kill()
        proc.wait()


def test_a_server_that_exits_on_a_taken_port_is_reported_as_exited():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = start(LISTEN, port)
        with pytest.raises(PortBindError, match="exited before listening") as error:
            run(wait_for_listener(proc.pid, port, timeout=30, is_running=alive(proc)))
        assert error.value.exited
        proc.wait()


def test_someone_else_answering_on_the_port_does_not_count():
    # The port answers (another process listens) but our process never binds it: this is
    # the case where the hub's plain HTTP check would route a user to the wrong server.
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        port = other.getsockname()[1]
        proc = start("import time; time.sleep(60)")
        try:
            with pytest.raises(PortBindError, match="did not listen") as error:
                run(wait_for_listener(proc.pid, port, timeout=1, is_running=lambda: True))
            assert not error.value.exited
        finally:
            proc.kill()
            proc.wait()


def test_a_remembered_port_survives_restarts_while_free(tmp_path):
    from gpulab_hub.ports import remembered_port

    path = tmp_path / "hub-api-port"
    port = remembered_port(path)
    assert remembered_port(path) == port
    with socket.socket() as squatter:  # someone else took it: a new one is remembered
        squatter.bind(("127.0.0.1", port))
        squatter.listen()
        assert remembered_port(path, claim=False) == port  # a reader moves nothing
        moved = remembered_port(path)
        assert moved != port
    assert remembered_port(path) == moved
    assert remembered_port(tmp_path / "none", claim=False) == 0
