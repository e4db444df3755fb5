"""Course material: a workshop's notebooks copied into each student's home at spawn.

Where it comes from: a JupyterHub group's properties (set by the workshop tools, or by an
operator: ``PUT /hub/api/groups/NAME/properties``, which needs ``admin:groups``)::

    {"gpulab_workshop": {"course_dir": "/srv/courses/ml101", "home_subdir": "ml101"}}

``course_dir`` is an absolute folder on the hub's machine; ``home_subdir`` (optional, a
relative path without "..") is where in the home it lands (default: the home itself).

What a spawn does (``add_course_material``, called by the quota spawner before the server
starts, for each of the user's groups that names a course, in group-name order):

- copies every file of the course folder, sub-folders kept, that the student does not
  have at that path; a file the student has, edited or not, is never touched (the copy is
  created with O_EXCL and renamed in with ``link()``, which fails rather than replace);
- a file the student deleted comes back at the next spawn: deleting a notebook is how a
  student gets a fresh copy of it;
- skipped: symlinks whose target is outside the course folder (and symlinked folders),
  anything not a regular file, ``.ipynb_checkpoints``, ``__pycache__`` and hidden files;
- never follows a symlink in the student's home (a student can't redirect the copy into
  someone else's folder): a destination folder that is a symlink is skipped whole.

Copies are mode 0644 (0755 when the course file is executable), owned by the process
that copies: the hub's account, which is the servers' account with the local spawner.
Errors on one file are logged and skipped; the server still starts.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import stat
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

PROPERTY = "gpulab_workshop"
SKIPPED_NAMES = frozenset({".ipynb_checkpoints", "__pycache__"})
_CHUNK = 1 << 20

log = logging.getLogger(__name__)


class CourseConfigError(ValueError):
    """A group's ``gpulab_workshop`` property is unusable; the message names the field."""


@dataclass
class CopyReport:
    copied: list[str] = field(default_factory=list)  # relative paths, as added
    kept: list[str] = field(default_factory=list)  # the student has them already
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, why)


@dataclass(frozen=True)
class Course:
    group: str
    course_dir: Path
    home_subdir: str = ""


def course_of(group: str, properties: Mapping | None) -> Course | None:
    """The course a group's properties name, None when none; ``CourseConfigError`` when
    the property is there but wrong."""
    config = (properties or {}).get(PROPERTY)
    if config is None:
        return None
    where = f"group {group!r} property {PROPERTY}"
    if not isinstance(config, Mapping):
        raise CourseConfigError(f"{where} must be an object, not {config!r:.80}")
    course_dir = config.get("course_dir")
    if course_dir in (None, ""):
        return None  # a workshop without course material
    if not isinstance(course_dir, str) or not os.path.isabs(course_dir):
        raise CourseConfigError(
            f"{where}.course_dir must be an absolute path, not {course_dir!r:.80}"
        )
    subdir = config.get("home_subdir") or ""
    parts = PurePosixPath(subdir).parts if isinstance(subdir, str) else None
    if parts is None or (parts and parts[0] == "/") or ".." in parts:
        raise CourseConfigError(
            f"{where}.home_subdir must be a relative path without '..', not {subdir!r:.80}"
        )
    return Course(group, Path(course_dir), "/".join(parts))


def courses_of(groups: Iterable) -> list[Course]:
    """The courses of a user's JupyterHub groups (objects with ``name`` and
    ``properties``), by group name; unusable properties are logged and skipped."""
    found = []
    for group in sorted(groups, key=lambda g: g.name):
        try:
            course = course_of(group.name, getattr(group, "properties", None))
        except CourseConfigError as e:
            log.warning("No course material: %s", e)
            continue
        if course is not None:
            found.append(course)
    return found


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def _sources(course_dir: Path, report: CopyReport) -> Iterable[tuple[str, str]]:
    """(relative path, real source path) of each file to offer, sub-folders first-level
    order; what is skipped goes into ``report``."""
    root = os.path.realpath(course_dir)
    if not os.path.isdir(root):
        report.skipped.append((str(course_dir), "the course folder does not exist"))
        return
    for folder, dirs, files in os.walk(root, followlinks=False):
        rel_folder = os.path.relpath(folder, root)
        for name in list(dirs):
            rel = os.path.normpath(os.path.join(rel_folder, name))
            if name in SKIPPED_NAMES or name.startswith("."):
                dirs.remove(name)
            elif os.path.islink(os.path.join(folder, name)):
                dirs.remove(name)
                report.skipped.append((rel, "a symlinked folder"))
        dirs.sort()
        for name in sorted(files):
            rel = os.path.normpath(os.path.join(rel_folder, name))
            path = os.path.join(folder, name)
            if name.startswith("."):
                continue
            real = os.path.realpath(path)
            if os.path.islink(path) and not _inside(real, root):
                report.skipped.append((rel, "a symlink to outside the course folder"))
                continue
            if not os.path.isfile(real):
                report.skipped.append((rel, "not a regular file"))
                continue
            yield rel, real


def _open_dir(parent_fd: int, name: str, create: bool) -> int:
    """A folder under ``parent_fd``, never through a symlink; created when missing."""
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW
    try:
        return os.open(name, flags, dir_fd=parent_fd)
    except FileNotFoundError:
        if not create:
            raise
    with contextlib.suppress(FileExistsError):
        os.mkdir(name, 0o755, dir_fd=parent_fd)
    return os.open(name, flags, dir_fd=parent_fd)


def _copy_one(source: str, dir_fd: int, name: str) -> bool:
    """Copy ``source`` to ``name`` in ``dir_fd`` unless something is there; True if
    copied. Written to a hidden partial file first, so a failed copy leaves nothing the
    student would later "have"."""
    try:
        os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        return False  # the student has it (a file, a folder or a link): keep it
    except FileNotFoundError:
        pass
    mode = 0o755 if os.stat(source).st_mode & stat.S_IXUSR else 0o644
    partial = f".{name}.gpulab-partial-{os.getpid()}"
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
    out = os.open(partial, flags, mode, dir_fd=dir_fd)
    try:
        with open(source, "rb") as src, os.fdopen(out, "wb", closefd=False) as dst:
            while chunk := src.read(_CHUNK):
                dst.write(chunk)
        os.fchmod(out, mode)
        try:
            os.link(partial, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        except FileExistsError:
            return False  # created meanwhile: the student's wins
        return True
    finally:
        os.close(out)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(partial, dir_fd=dir_fd)


def copy_course(
    course_dir: str | os.PathLike, home: str | os.PathLike, subdir: str = ""
) -> CopyReport:
    """Copy into ``home`` (``/subdir``) the files of ``course_dir`` it lacks (see the
    module docstring). ``home`` is created if missing; returns what was done."""
    report = CopyReport()
    os.makedirs(home, 0o755, exist_ok=True)
    home_fd = os.open(home, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for rel, source in _sources(Path(course_dir), report):
            parts = [p for p in (subdir.split("/") if subdir else []) if p]
            parts += rel.split(os.sep)
            fds = [home_fd]
            try:
                for part in parts[:-1]:
                    fds.append(_open_dir(fds[-1], part, create=True))
                if _copy_one(source, fds[-1], parts[-1]):
                    report.copied.append(rel)
                else:
                    report.kept.append(rel)
            except OSError as e:
                why = (
                    "a folder on its way in the home is a symlink or a file"
                    if e.errno in (errno.ELOOP, errno.ENOTDIR, errno.EEXIST)
                    else e.strerror or str(e)
                )
                report.skipped.append((rel, why))
            finally:
                for fd in fds[1:]:
                    os.close(fd)
    finally:
        os.close(home_fd)
    return report


async def add_course_material(spawner) -> list[CopyReport]:
    """Copy the course material of ``spawner.user``'s groups into its home folder
    (``spawner.home_dir``: the local spawners'). Spawners without a local home folder
    are left alone. Never raises for a course problem: it is logged, the spawn goes on."""
    home = getattr(spawner, "home_dir", None)
    courses = courses_of(spawner.user.groups)
    if not courses:
        return []
    if not home:
        spawner.log.warning(
            "Course material of %s not copied: %s has no local home folder",
            spawner.user.name,
            type(spawner).__name__,
        )
        return []
    reports = []
    for course in courses:
        try:
            report = await asyncio.to_thread(
                copy_course, course.course_dir, home, course.home_subdir
            )
        except OSError as e:
            spawner.log.warning(
                "Course material of %s for %s failed: %s", course.group, spawner.user.name, e
            )
            continue
        spawner.log.info(
            "Course material of %s for %s: %d added, %d kept, %d skipped %s",
            course.group,
            spawner.user.name,
            len(report.copied),
            len(report.kept),
            len(report.skipped),
            report.skipped[:5],
        )
        reports.append(report)
    return reports
