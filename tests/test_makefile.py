"""The Makefile's set-up (`make setup`, which `make demo` and `make test` run first): one line per step, the
package managers' errors and nothing else of theirs, and a failed step stops make.

pip, apt-get and the interpreter are stand-ins on PATH that print what the real ones print at each verbosity
(pip: progress lines unless -q, warnings unless -qq, errors always; apt-get/dpkg: unpacking lines on stdout
whatever -qq says), so that the test installs nothing and needs no network."""

import os
import shutil
import subprocess
from pathlib import Path

from tests.conftest import REPOSITORY_ROOT

FAKE_PYTHON = r"""#!/bin/bash
if [ "$1 $2" = "-m venv" ]; then mkdir -p "$3/bin" && cp "$0" "$3/bin/python"; exit 0; fi
[ "$1 $2 $3" = "-m pip install" ] || exit 3
shift 3
quiet=0
for arg in "$@"; do case $arg in -qq) quiet=2;; -q|--quiet) quiet=$((quiet + 1));; esac; done
[ $quiet -ge 1 ] || for i in $(seq 40); do echo "Collecting dependency-$i"; done
[ $quiet -ge 2 ] || for i in $(seq 30); do echo "WARNING: Location 'file:///opt/pypi-more/simple/p$i/' is ignored" >&2; done
case "$*" in *torchcodec*) if [ -n "$FAIL_TORCHCODEC" ]; then
  echo "ERROR: No matching distribution found for torchcodec==0.13.0" >&2; exit 1; fi;; esac
exit 0
"""
FAKE_APT_GET = r"""#!/bin/bash
for i in $(seq 60); do echo "Selecting previously unselected package p$i."; done
[ -z "$FAIL_APT" ] || { echo "E: Unable to locate package espeak-ng" >&2; exit 100; }
exit 0
"""


def run_setup(tmp_path: Path, **env) -> subprocess.CompletedProcess:
    """`make setup` into `tmp_path/venv` with only the stand-ins and a few coreutils on PATH: the speech tools are
    not found, so the Debian step runs (the stand-in apt-get)."""
    tools = tmp_path / "tools"
    tools.mkdir(exist_ok=True)
    for name, script in (("python3", FAKE_PYTHON), ("apt-get", FAKE_APT_GET), ("sudo", 'exec "$@"\n')):
        (tools / name).write_text(script if script.startswith("#!") else "#!/bin/bash\n" + script)
        (tools / name).chmod(0o755)
    for name in ("mkdir", "cp", "seq", "id", "touch"):
        if not (tools / name).exists():
            (tools / name).symlink_to(shutil.which(name))
    environment = {**os.environ, "PATH": str(tools), **env}
    return subprocess.run([shutil.which("make"), "--no-print-directory", "-C", str(REPOSITORY_ROOT), "setup",
                           f"VENV={tmp_path / 'venv'}", f"PYTHON={tools / 'python3'}"],
                          env=environment, capture_output=True, text=True, timeout=120)


def test_setup_prints_one_line_per_step_and_no_package_manager_chatter(tmp_path):
    result = run_setup(tmp_path)
    assert result.returncode == 0, result.stderr
    lines = (result.stdout + result.stderr).splitlines()
    assert len(lines) <= 3, lines  # (Debian packages,) the environment, nothing else
    assert any(line.startswith("setting up ") for line in lines)
    assert (tmp_path / "venv" / ".hubert-ee-installed").is_file()
    assert "setting up" not in run_setup(tmp_path).stdout  # set up already: nothing done again


def test_a_failed_setup_step_shows_its_error_and_stops_make(tmp_path):
    result = run_setup(tmp_path, FAIL_TORCHCODEC="1")
    assert result.returncode != 0
    assert "ERROR: No matching distribution found for torchcodec==0.13.0" in result.stderr
    assert not (tmp_path / "venv" / ".hubert-ee-installed").exists()
    result = run_setup(tmp_path, FAIL_APT="1")
    assert result.returncode != 0 and "E: Unable to locate package espeak-ng" in result.stderr
