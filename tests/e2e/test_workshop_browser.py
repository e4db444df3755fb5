"""Workshops in Chromium: an instructor sees their students' server states on the
instructor page and stops one; a student logs in with the one-time password, the spawn
form offers only the workshop's profiles, and their JupyterLab opens with the workshop's
course notebooks (``course_dir``) in its file browser."""

from __future__ import annotations

import json
import re

import pytest
from playwright.sync_api import expect

from tests.e2e.browser_steps import log_in
from tests.waiting import poll
from tests.workshops.hub_helpers import sign_up_and_approve

pytestmark = [pytest.mark.e2e, pytest.mark.browser]
INSTRUCTOR_PASSWORD = "teaching-pass-2026"
NEW_PASSWORD = "my-own-secret-77"
COURSE_NOTEBOOK = "bw-welcome.ipynb"


@pytest.fixture(scope="module")
def workshop(gpu_hub, gpu_admin, tmp_path_factory):
    course = tmp_path_factory.mktemp("bw-course")
    notebook = {"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}
    (course / COURSE_NOTEBOOK).write_text(json.dumps(notebook))
    assert gpu_admin.api("POST", "/users", json={"usernames": ["bina"]}).status_code == 201
    sign_up_and_approve(gpu_hub, gpu_admin, "bina", INSTRUCTOR_PASSWORD)
    created = gpu_admin.api(
        "POST",
        "/gpulab/workshops",
        json={
            "name": "bw",
            "students_csv": "username\nbstu1\nbstu2\n",
            "instructors": ["bina"],
            "profiles": ["cpu", "1-gpu"],
            "quota": {"max_gpus": 1, "gpu_hours": 3, "window": "1d"},
            "course_dir": str(course),
        },
    )
    assert created.status_code == 201, created.text
    passwords = {s["username"]: s["password"] for s in created.json()["students"]}
    started = gpu_admin.api("POST", "/users/bstu2/server", json={"profile": "cpu"})
    assert started.status_code in (201, 202), started.text
    poll(lambda: gpu_admin.api("GET", "/users/bstu2").json()["servers"].get("", {}).get("ready"),
         90, "bstu2's server")  # fmt: skip
    yield passwords
    for student in ("bstu1", "bstu2"):
        gpu_admin.api("DELETE", f"/users/{student}/server")


def test_instructor_sees_their_students_states_and_stops_one(gpu_hub, gpu_admin, workshop, page):
    log_in(page, gpu_hub.url, "bina", INSTRUCTOR_PASSWORD)
    page.goto(f"{gpu_hub.url}/hub/gpulab/instructor")
    section = page.locator('section[data-workshop="bw"]')
    expect(section.locator("h2")).to_have_text("bw")
    rows = section.locator("tr.gpulab-student")
    expect(rows).to_have_count(2)
    first, second = rows.nth(0), rows.nth(1)
    expect(first.locator("td").first).to_have_text("bstu1")
    expect(first.locator(".state")).to_have_text("stopped")
    expect(first.locator(".budget")).to_have_text("3.00 GPU-hours")
    expect(first.locator("a", has_text="start")).to_have_attribute("href", "/hub/spawn/bstu1")
    expect(first.locator("a.runs")).to_have_attribute(
        "href", "/services/dashboards/?student=bstu1")
    expect(second.locator(".state")).to_have_text("running")
    expect(second.locator("a", has_text="open")).to_have_attribute("href", "/user/bstu2/")
    expect(second.locator(".activity time")).to_have_count(1)

    second.locator("button", has_text="stop").click()
    page.wait_for_url(f"{gpu_hub.url}/hub/gpulab/instructor")
    poll(lambda: gpu_admin.api("GET", "/users/bstu2").json()["servers"] == {}, 60, "the stop")
    page.reload()
    expect(page.locator('tr[data-student="bstu2"] .state')).to_have_text("stopped")


def test_student_logs_in_with_the_one_time_password_and_gets_the_workshop(
    gpu_hub, gpu_admin, workshop, page
):
    log_in(page, gpu_hub.url, "bstu1", workshop["bstu1"])
    # Still on the one-time password: the login leads to the change-password page.
    expect(page).to_have_url(f"{gpu_hub.url}/hub/change-password")
    page.fill("#old_password_input", workshop["bstu1"])
    page.fill("#new_password_input", NEW_PASSWORD)
    page.fill("#new_password_confirmation_input", NEW_PASSWORD)
    page.click("#signup_submit")
    expect(page.locator(".alert-success")).to_contain_text("changed successfully")
    page.context.clear_cookies()
    log_in(page, gpu_hub.url, "bstu1", NEW_PASSWORD)
    assert "change-password" not in page.url
    page.goto(f"{gpu_hub.url}/hub/spawn")
    profiles = page.locator(".gpulab-profile")
    expect(profiles).to_have_count(2)  # the node offers cpu, 1-gpu and 2-gpus
    expect(page.locator('.gpulab-profile[data-profile="cpu"]')).to_have_count(1)
    expect(page.locator('.gpulab-profile[data-profile="1-gpu"]')).to_have_count(1)
    # Nor can the student see the instructor page's students.
    page.goto(f"{gpu_hub.url}/hub/gpulab/instructor")
    expect(page.locator("#no-workshops")).to_be_visible()

    # The student starts a server from the form: the course notebook is in JupyterLab.
    page.goto(f"{gpu_hub.url}/hub/spawn")
    page.check('.gpulab-profile[data-profile="cpu"] input')
    page.locator('form input[type="submit"], form button[type="submit"]').first.click()
    page.wait_for_url(re.compile(r"/user/bstu1/lab"), timeout=120_000)
    listing = page.locator(".jp-DirListing-item", has_text=COURSE_NOTEBOOK)
    expect(listing).to_be_visible(timeout=60_000)
    gpu_admin.api("DELETE", "/users/bstu1/server")
