"""Course material on a real hub: a workshop group's ``gpulab_workshop.course_dir``
property, set through the hub's REST API, is copied into the student's home at spawn;
after the student edits a notebook and the instructor adds one, a respawn keeps the edit
and adds the new file."""

import pytest

from tests.e2e.test_gpu_spawns import wait_ready, wait_stopped

pytestmark = pytest.mark.e2e

GROUP = "course-e2e"


@pytest.fixture
def course_group(gpu_admin, tmp_path):
    course = tmp_path / "ml101"
    (course / "week1").mkdir(parents=True)
    (course / "intro.ipynb").write_text('{"cells": [], "nbformat": 4, "nbformat_minor": 5}')
    (course / "week1" / "lab.ipynb").write_text("lab v1")
    gpu_admin.api("POST", "/users", json={"usernames": ["stu"]})
    created = gpu_admin.api("POST", f"/groups/{GROUP}", json={"users": ["stu"]})
    assert created.status_code == 201, created.text
    yield course
    gpu_admin.api("DELETE", "/users/stu/server")
    wait_stopped(gpu_admin, "stu")
    gpu_admin.api("DELETE", f"/groups/{GROUP}")


def spawn(admin, name):
    response = admin.api("POST", f"/users/{name}/server", json={"profile": "cpu"})
    assert response.status_code in (201, 202), response.text
    wait_ready(admin, name)


def test_course_files_are_added_and_edits_kept(gpu_hub, gpu_admin, course_group):
    properties = {"gpulab_workshop": {"course_dir": str(course_group)}}
    response = gpu_admin.api("PUT", f"/groups/{GROUP}/properties", json=properties)
    assert response.status_code == 200, response.text
    assert gpu_admin.api("GET", f"/groups/{GROUP}").json()["properties"] == properties

    home = gpu_hub.state_dir / "home" / "stu"
    spawn(gpu_admin, "stu")
    assert (home / "intro.ipynb").is_file()
    assert (home / "week1" / "lab.ipynb").read_text() == "lab v1"

    (home / "week1" / "lab.ipynb").write_text("my answers")
    gpu_admin.api("DELETE", "/users/stu/server")
    wait_stopped(gpu_admin, "stu")
    (course_group / "week1" / "lab.ipynb").write_text("lab v2")
    (course_group / "week2").mkdir()
    (course_group / "week2" / "cnn.ipynb").write_text("new")

    spawn(gpu_admin, "stu")
    assert (home / "week1" / "lab.ipynb").read_text() == "my answers"
    assert (home / "week2" / "cnn.ipynb").read_text() == "new"
    # The server sees them: its contents API lists the new folder.
    listing = gpu_admin.get_as_user("/user/stu/api/contents/week2")
    assert listing.status_code == 200, listing.text
    assert [f["name"] for f in listing.json()["content"]] == ["cnn.ipynb"]
