"""A class-time reservation on a real hub (the 2-static-GPU hub of ``gpu_hub_config.py``):
during the window a researcher's GPU spawn is refused with the workshop and the time, a
member of the workshop's group gets a reserved GPU; once the window has passed, the
researcher gets one too."""

from datetime import timedelta

import pytest
from sqlalchemy import update

from gpulab.quota.ledger import Ledger
from gpulab.quota.reservations import (
    cancel,
    clock,
    list_reservations,
    reservations_table,
    reserve,
)
from tests.e2e.test_gpu_spawns import server_environment, wait_ready, wait_stopped

pytestmark = pytest.mark.e2e

GROUP = "ml101-e2e"


@pytest.fixture
def ledger(gpu_hub):
    with Ledger(f"sqlite:///{gpu_hub.state_dir / 'ledger.sqlite'}") as ledger:
        yield ledger


@pytest.fixture
def workshop(gpu_admin, ledger):
    """The group ``GROUP`` with the student ``sam`` (and the researcher ``dan`` outside
    it), and a reservation of both GPUs for it, running now for an hour; all undone after."""
    gpu_admin.api("POST", "/users", json={"usernames": ["sam", "dan"]})
    created = gpu_admin.api("POST", f"/groups/{GROUP}", json={"users": ["sam"]})
    assert created.status_code == 201, created.text
    now = ledger.db_now()
    reservation = reserve(
        ledger, GROUP, 2, now - timedelta(minutes=1), now + timedelta(hours=1), capacity=2
    )
    yield reservation
    for name in ("sam", "dan"):
        gpu_admin.api("DELETE", f"/users/{name}/server")
        wait_stopped(gpu_admin, name)
    cancel(ledger, reservation.id)
    gpu_admin.api("DELETE", f"/groups/{GROUP}")


def test_a_researcher_is_refused_reserved_gpus_while_a_student_gets_one(
    gpu_admin, ledger, workshop
):
    refused = gpu_admin.api("POST", "/users/dan/server", json={"gpus": 1})
    assert refused.status_code == 409, refused.text
    message = refused.json()["message"]
    until = clock(workshop.ends_at, ledger.db_now())  # "HH:MM UTC" (with a date if not today)
    assert f"2 GPUs for workshop '{GROUP}' until {until}" in message
    assert "Only 0 of the 2 free GPUs can be given to you; this request needs 1" in message
    assert gpu_admin.api("GET", "/users/dan").json()["servers"] == {}
    assert ledger.audit(user="dan", limit=1)[0].reason == "reserved"

    response = gpu_admin.api("POST", "/users/sam/server", json={"gpus": 1})
    assert response.status_code in (201, 202), response.text
    wait_ready(gpu_admin, "sam")
    assert server_environment("sam")["CUDA_VISIBLE_DEVICES"].startswith("GPU-")
    [granted] = ledger.audit(user="sam", action="granted", limit=1)
    assert granted.detail["reservation_id"] == workshop.id
    assert list_reservations(ledger, group=GROUP)[0].in_use == 1

    # The window passes (moved into the past, the test hook for time): no longer held.
    with ledger.engine.begin() as conn:
        conn.execute(
            update(reservations_table)
            .where(reservations_table.c.id == workshop.id)
            .values(
                starts_at=workshop.starts_at - timedelta(hours=3),
                ends_at=workshop.ends_at - timedelta(hours=3),
            )
        )
    response = gpu_admin.api("POST", "/users/dan/server", json={"gpus": 1})
    assert response.status_code in (201, 202), response.text
    wait_ready(gpu_admin, "dan")
    assert server_environment("dan")["GPULAB_GPUS"] == "1"
