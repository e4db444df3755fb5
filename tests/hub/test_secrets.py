"""Secrets in the state folder: made once, mode 0600, never remade or reported as new."""

import stat
from concurrent.futures import ThreadPoolExecutor

import pytest

from gpulab_hub.secrets import read_or_create_secret


def test_first_call_creates_a_private_secret_and_later_calls_read_it(tmp_path):
    path = tmp_path / "admin-password"
    value, created = read_or_create_secret(path)
    assert created
    assert len(value) >= 20
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert read_or_create_secret(path) == (value, False)
    assert list(tmp_path.iterdir()) == [path]  # no temporary file left behind


def test_secrets_differ_between_files(tmp_path):
    assert read_or_create_secret(tmp_path / "a")[0] != read_or_create_secret(tmp_path / "b")[0]


def test_concurrent_creators_agree_and_only_one_reports_created(tmp_path):
    path = tmp_path / "token"
    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(lambda _: read_or_create_secret(path), range(64)))
    assert len({value for value, _ in results}) == 1
    assert sum(created for _, created in results) == 1


def test_an_empty_secret_file_is_an_error_that_says_what_to_do(tmp_path):
    path = tmp_path / "proxy-token"
    path.write_text("\n")
    with pytest.raises(ValueError, match="delete it to make a new secret"):
        read_or_create_secret(path)
