"""Sweep storage URLs that users get wrong: a missing driver, passwords in messages, missing folders."""

import importlib.util

import pytest

from microexp.errors import ConfigError
from microexp.sweep.storage import default_storage_url, open_storage, redact_url

_HAS = {name: importlib.util.find_spec(name) is not None for name in ("psycopg", "psycopg2")}


@pytest.mark.skipif(_HAS["psycopg"] or not _HAS["psycopg2"], reason="needs psycopg2 installed and psycopg 3 absent")
def test_bare_postgresql_url_names_the_psycopg3_dialect_and_both_fixes():
    url = "postgresql://sweeper:hunter22@127.0.0.1:1/db"
    with pytest.raises(ConfigError) as info:
        open_storage(url)
    message = str(info.value)
    assert "\n" not in message
    assert "postgresql+psycopg" in message and "psycopg module" in message  # the dialect and driver tried
    assert "pip install 'psycopg[binary]'" in message  # fix 1: install psycopg 3
    assert "postgresql+psycopg2://sweeper:***@127.0.0.1:1/db" in message  # fix 2: name the installed driver
    assert "psycopg2-binary" not in message.split("either", 1)[0]  # not the old, wrong diagnosis
    assert "hunter22" not in message


@pytest.mark.skipif(_HAS["psycopg"] or not _HAS["psycopg2"], reason="needs psycopg2 installed and psycopg 3 absent")
def test_query_string_password_is_hidden_in_driver_errors():
    url = "postgresql://sweeper@127.0.0.1:1/db?password=hunter22&sslmode=disable"
    with pytest.raises(ConfigError) as info:
        open_storage(url)
    assert "hunter22" not in str(info.value)
    assert "password=***" in str(info.value)


def test_query_string_password_is_hidden_in_connection_errors():
    pytest.importorskip("psycopg2")
    url = "postgresql+psycopg2://sweeper@127.0.0.1:1/db?password=hunter22&connect_timeout=2"
    with pytest.raises(ConfigError) as info:
        open_storage(url, heartbeat=False)  # nothing listens on port 1: the driver's own error is shown
    assert "hunter22" not in str(info.value) and "cannot open" in str(info.value)


@pytest.mark.parametrize("url, expected", [
    ("postgresql://u:s3cret@h/db", "postgresql://u:***@h/db"),
    ("postgresql://u@h/db?password=s3cret", "postgresql://u@h/db?password=***"),
    ("postgresql://u@h/db?sslmode=require&PASSWORD=s3cret&x=1", "postgresql://u@h/db?sslmode=require&PASSWORD=***&x=1"),
    ("mysql+pymysql://u:p%40ss@h/db?passwd=s3cret", "mysql+pymysql://u:***@h/db?passwd=***"),
    ("sqlite:////tmp/x.db", "sqlite:////tmp/x.db"),
    ("postgresql://u@h/db?password_file=/etc/pw", "postgresql://u@h/db?password_file=/etc/pw"),
])
def test_redact_url_hides_both_password_forms(url, expected):
    assert redact_url(url) == expected


def test_short_password_is_not_scrubbed_out_of_every_word():
    with pytest.raises(ConfigError) as info:
        open_storage("mysql://u:p@127.0.0.1:1/db")  # no MySQL driver here (or a refused connection)
    assert "im***ort" not in str(info.value) and "u:***@" in str(info.value)


def test_sqlite_url_in_a_missing_folder_is_refused_without_creating_it(tmp_path):
    missing = tmp_path / "nonexistent" / "dir"
    with pytest.raises(ConfigError) as info:
        open_storage(f"sqlite:///{missing}/x.db")
    assert str(missing) in str(info.value) and "does not exist" in str(info.value)
    assert "\n" not in str(info.value)
    assert not (tmp_path / "nonexistent").exists()


def test_journal_url_in_a_missing_folder_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        open_storage(f"journal://{tmp_path}/no/such/j.log")
    assert not (tmp_path / "no").exists()


def test_default_storage_may_create_the_sweep_folder(tmp_path):
    url = default_storage_url(tmp_path / "sweep")
    open_storage(url, heartbeat=False, create_folder=True)
    assert (tmp_path / "sweep" / "study.db").is_file()



@pytest.fixture()
def read_only_dir(tmpfs):
    return tmpfs("ro", size="64k", read_only=True)  # root ignores file permissions: a read-only mount


def test_sweep_reports_into_a_read_only_folder_are_one_line_output_errors(read_only_dir):
    from microexp.sweep.report import BestTrial, write_best, write_trials_csv
    from microexp.fileio import OutputError

    with pytest.raises(OutputError, match="read-only file system") as info:
        write_trials_csv(read_only_dir / "sweep", {})
    assert str(read_only_dir / "sweep" / "trials.csv") in str(info.value)
    trial = BestTrial(fold=0, number=3, value=0.5, params={"train.lr": 0.01}, config={"seed": 0})
    with pytest.raises(OutputError, match="best.yaml: read-only file system"):
        write_best(read_only_dir, {0: trial}, study="s", metric="uf1")
