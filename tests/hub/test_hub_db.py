"""The hub's own database in WAL mode (gpulab_hub.hub_db), through JupyterHub's own
session factory, as the hub opens it."""

import sqlite3

from jupyterhub import orm

from gpulab_hub.hub_db import sqlite_wal_kwargs


def test_the_hub_database_opens_in_wal_mode_with_jupyterhubs_tables(tmp_path):
    path = tmp_path / "jupyterhub.sqlite"
    session = orm.new_session_factory(f"sqlite:///{path}", **sqlite_wal_kwargs(path))()
    try:
        session.add(orm.User(name="ada"))
        session.commit()
        connection = session.connection()
        assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert connection.exec_driver_sql("PRAGMA synchronous").scalar() == 1  # NORMAL
        # JupyterHub's own connection setting stays: foreign keys on.
        assert connection.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
    finally:
        session.close()
    # Committed and readable by another connection (the mode is kept in the file).
    other = sqlite3.connect(path)
    assert other.execute("SELECT name FROM users").fetchall() == [("ada",)]
    assert other.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    other.close()


def test_a_killed_hubs_commits_are_kept(tmp_path):
    """A commit is in the log before it returns: a process that dies without closing
    (no checkpoint) loses nothing."""
    import subprocess
    import sys

    path = tmp_path / "jupyterhub.sqlite"
    script = (
        "import os\n"
        "from jupyterhub import orm\n"
        "from gpulab_hub.hub_db import sqlite_wal_kwargs\n"
        "from pathlib import Path\n"
        f"path = Path({str(path)!r})\n"
        "session = orm.new_session_factory(f'sqlite:///{path}', **sqlite_wal_kwargs(path))()\n"
        "for name in ('ada', 'grace'):\n"
        "    session.add(orm.User(name=name))\n"
        "    session.commit()\n"
        "os.kill(os.getpid(), 9)\n"
    )
    result = subprocess.run([sys.executable, "-c", script], timeout=120)
    assert result.returncode == -9
    assert (tmp_path / "jupyterhub.sqlite-wal").exists()  # never checkpointed
    other = sqlite3.connect(path)
    names = [row[0] for row in other.execute("SELECT name FROM users ORDER BY name")]
    other.close()
    assert names == ["ada", "grace"]
