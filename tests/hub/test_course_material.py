"""Course material copied into a student's home: only what is missing, edits never
overwritten, deleted files back, sub-folders kept, symlinks out of the course and in the
home never followed; group properties checked."""

from types import SimpleNamespace

import pytest

from gpulab_hub.course import CourseConfigError, copy_course, course_of, courses_of


@pytest.fixture
def course(tmp_path):
    root = tmp_path / "course"
    (root / "week1" / "data").mkdir(parents=True)
    (root / "intro.ipynb").write_text('{"cells": []}')
    (root / "week1" / "lab.ipynb").write_text("lab v1")
    (root / "week1" / "data" / "digits.csv").write_text("1,2,3\n")
    (root / "run.sh").write_text("#!/bin/sh\n")
    (root / "run.sh").chmod(0o555)
    (root / ".ipynb_checkpoints").mkdir()
    (root / ".ipynb_checkpoints" / "intro-checkpoint.ipynb").write_text("old")
    (root / ".hidden").write_text("x")
    return root


def files(folder):
    return sorted(
        str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file() or p.is_symlink()
    )


def test_first_spawn_copies_everything_with_its_folders(course, tmp_path):
    home = tmp_path / "home" / "sam"
    report = copy_course(course, home)
    assert files(home) == ["intro.ipynb", "run.sh", "week1/data/digits.csv", "week1/lab.ipynb"]
    assert sorted(report.copied) == files(home) and report.kept == []
    assert (home / "week1" / "lab.ipynb").read_text() == "lab v1"
    # Students may edit what they got, read-only course files or not.
    assert (home / "intro.ipynb").stat().st_mode & 0o777 == 0o644
    assert (home / "run.sh").stat().st_mode & 0o777 == 0o755
    assert not [p for p in home.rglob("*") if "gpulab-partial" in p.name]


def test_later_spawns_add_new_files_and_never_overwrite_edits(course, tmp_path):
    home = tmp_path / "home"
    copy_course(course, home)
    (home / "week1" / "lab.ipynb").write_text("my answers")
    (home / "intro.ipynb").unlink()  # deleted: comes back fresh
    (home / "mine.ipynb").write_text("my own")
    (course / "week1" / "lab.ipynb").write_text("lab v2")  # the instructor's fix
    (course / "week2").mkdir()
    (course / "week2" / "new.ipynb").write_text("new")

    report = copy_course(course, home)

    assert (home / "week1" / "lab.ipynb").read_text() == "my answers"
    assert (home / "week2" / "new.ipynb").read_text() == "new"
    assert (home / "intro.ipynb").read_text() == '{"cells": []}'
    assert (home / "mine.ipynb").read_text() == "my own"
    assert sorted(report.copied) == ["intro.ipynb", "week2/new.ipynb"]
    assert "week1/lab.ipynb" in report.kept
    assert copy_course(course, home).copied == []  # nothing left to add


def test_symlinks_out_of_the_course_are_skipped_and_inside_ones_copied(course, tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("hub secret")
    (course / "leak.txt").symlink_to(secret)
    (course / "alias.ipynb").symlink_to(course / "intro.ipynb")
    (course / "linked-dir").symlink_to(tmp_path)
    home = tmp_path / "home"
    report = copy_course(course, home)
    assert not (home / "leak.txt").exists() and not (home / "linked-dir").exists()
    assert (home / "alias.ipynb").read_text() == '{"cells": []}'
    assert not (home / "alias.ipynb").is_symlink()
    assert dict(report.skipped) == {
        "leak.txt": "a symlink to outside the course folder",
        "linked-dir": "a symlinked folder",
    }


def test_symlinks_in_the_home_are_never_followed(course, tmp_path):
    other = tmp_path / "other-student"
    other.mkdir()
    home = tmp_path / "home"
    home.mkdir()
    (home / "week1").symlink_to(other)  # a student's attempt to write elsewhere
    (home / "intro.ipynb").symlink_to(tmp_path / "nowhere")  # dangling: still "theirs"
    report = copy_course(course, home)
    assert list(other.iterdir()) == []
    assert (home / "intro.ipynb").is_symlink()
    assert {path for path, _ in report.skipped} == {"week1/lab.ipynb", "week1/data/digits.csv"}
    assert "run.sh" in report.copied


def test_a_home_subdir_holds_the_course(course, tmp_path):
    home = tmp_path / "home"
    copy_course(course, home, "courses/ml101")
    assert (home / "courses" / "ml101" / "week1" / "lab.ipynb").is_file()


def test_a_missing_course_folder_copies_nothing(tmp_path):
    report = copy_course(tmp_path / "nope", tmp_path / "home")
    assert report.copied == [] and report.skipped[0][1] == "the course folder does not exist"


@pytest.mark.parametrize(
    ("properties", "message"),
    [
        ({"gpulab_workshop": "x"}, "property gpulab_workshop must be an object"),
        ({"gpulab_workshop": {"course_dir": "rel/path"}}, "course_dir must be an absolute path"),
        ({"gpulab_workshop": {"course_dir": 3}}, "course_dir must be an absolute path"),
        ({"gpulab_workshop": {"course_dir": "/c", "home_subdir": "../x"}}, "without '..'"),
        ({"gpulab_workshop": {"course_dir": "/c", "home_subdir": "/abs"}}, "without '..'"),
    ],
)
def test_bad_group_properties_name_the_field(properties, message):
    with pytest.raises(CourseConfigError, match=message):
        course_of("ml101", properties)


def test_courses_come_from_the_groups_properties_by_group_name(tmp_path, caplog):
    groups = [
        SimpleNamespace(name="zz", properties={"gpulab_workshop": {"course_dir": "/b"}}),
        SimpleNamespace(name="aa", properties={"gpulab_workshop": {"course_dir": "/a"}}),
        SimpleNamespace(name="plain", properties={}),
        SimpleNamespace(name="bad", properties={"gpulab_workshop": {"course_dir": "x"}}),
        SimpleNamespace(name="nocourse", properties={"gpulab_workshop": {"profile": "cpu"}}),
    ]
    assert [(c.group, str(c.course_dir)) for c in courses_of(groups)] == [
        ("aa", "/a"),
        ("zz", "/b"),
    ]
    assert "group 'bad' property gpulab_workshop.course_dir" in caplog.text
