"""Two sweep workers against a PostgreSQL server started here on 127.0.0.1 (slow; skipped when impossible).

The server comes from Debian's packages (``postgresql``), installed with apt-get when absent and when
running as root; it runs as the ``postgres`` system user (PostgreSQL refuses to run as root) in a
temporary data directory on a free port, with trust authentication for 127.0.0.1 only, and is
stopped afterwards. ``psycopg2`` (``pip install psycopg2-binary``, in the ``test`` extra) is the driver.
"""

import glob
import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from microexp.sweep.storage import open_storage
from microexp.sweep.studies import study_name

from test_sweep import _sweep, _trials, space_file, tiny_data  # noqa: F401  (fixtures)

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore:classes .* have no training samples")]


def _server_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    return Path(found[-1]).parent if found else None


def _install_server() -> str:
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        return "not root or no apt-get"
    for command in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "postgresql"]):
        result = subprocess.run(command, capture_output=True, text=True, timeout=600,
                                env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
        if result.returncode != 0:
            return f"{' '.join(command)} failed: {(result.stderr or result.stdout).strip()[-200:]}"
    return ""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def postgres_url():
    pytest.importorskip("psycopg2", reason="PostgreSQL test needs psycopg2: pip install psycopg2-binary")
    bin_dir = _server_bin()
    if bin_dir is None:
        problem = _install_server()
        bin_dir = _server_bin()
        if bin_dir is None:
            pytest.skip(f"PostgreSQL server not installed and could not be installed ({problem or 'no pg_ctl'})")
    as_user: list[str] = []
    root = Path(tempfile.mkdtemp(prefix="microexp-pg-"))
    root.chmod(0o755)
    if os.geteuid() == 0:  # postgres refuses to run as root: run it as the package's system user
        if shutil.which("runuser") is None:
            pytest.skip("running as root without runuser: cannot start PostgreSQL as a non-root user")
        try:
            shutil.chown(root, user="postgres")
        except (LookupError, PermissionError) as exc:
            pytest.skip(f"no 'postgres' system user to run the server as ({exc})")
        as_user = ["runuser", "-u", "postgres", "--"]
    data, log, port = root / "data", root / "server.log", _free_port()

    def run(*command: str) -> subprocess.CompletedProcess:
        return subprocess.run([*as_user, *command], capture_output=True, text=True, timeout=120)

    steps = [
        (str(bin_dir / "initdb"), "-D", str(data), "-U", "microexp", "--auth=trust", "-E", "UTF8"),
        (str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(log), "-w", "-o",
         f"-p {port} -c listen_addresses=127.0.0.1 -k {root}", "start"),
        (str(bin_dir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "microexp", "sweep"),
    ]
    for step in steps:
        result = run(*step)
        if result.returncode != 0:
            tail = log.read_text()[-300:] if log.exists() else ""
            run(str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop")
            shutil.rmtree(root, ignore_errors=True)
            pytest.skip(f"PostgreSQL could not be started ({Path(step[0]).name}: "
                        f"{(result.stderr or result.stdout).strip()[-300:]} {tail})")
    yield f"postgresql+psycopg2://microexp@127.0.0.1:{port}/sweep"
    run(str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop")
    shutil.rmtree(root, ignore_errors=True)


def test_two_workers_share_a_postgresql_study(tiny_data, space_file, tmp_path, postgres_url):  # noqa: F811
    out = tmp_path / "sweep"
    args = ("--trials", 4, "--workers", 2, "--outer-folds", 0, "--storage", postgres_url, "--no-finalize",
            "--sampler", "random")
    assert _sweep(tiny_data, space_file, out, *args) == 0
    study = optuna.load_study(study_name=study_name("tiny", 0), storage=open_storage(postgres_url, heartbeat=False))
    finished = study.get_trials(states=(TrialState.COMPLETE, TrialState.PRUNED))
    numbers = [t.number for t in study.trials]
    assert len(finished) == 4 and len(numbers) == len(set(numbers))
    assert len(_trials(out)) == 4

    # a second "machine" (another process, same URL) resumes the same study up to 6 trials
    assert _sweep(tiny_data, space_file, out, *args[:1], 6, *args[2:]) == 0
    study = optuna.load_study(study_name=study_name("tiny", 0), storage=open_storage(postgres_url, heartbeat=False))
    assert len(study.get_trials(states=(TrialState.COMPLETE, TrialState.PRUNED))) == 6
