"""hubert_ee.outputs: output files are written whole or not at all, and their paths are checked before the work."""

from __future__ import annotations

import argparse
import json
import os
import stat

import pytest

from hubert_ee.outputs import OutputPathError, check_output_path, output_file, write_json, write_text, write_texts
from tests.conftest import run_with_file_size_limit

PREVIOUS = {"previous": "result", "kept": True}


def test_a_full_disk_midway_leaves_every_previous_file_as_it_was(tmp_path):
    """A write that fails midway (here: a file size limit, as on a full disk) must not leave a truncated file in
    place of the previous one, nor a temporary file beside it; the error reaches the caller."""
    (tmp_path / "result.json").write_text(json.dumps(PREVIOUS))
    (tmp_path / "report.md").write_text("previous report\n")
    (tmp_path / "config.json").write_text("{}\n")
    before = {path.name: path.read_bytes() for path in tmp_path.iterdir()}
    code = f"""
import json, sys
from pathlib import Path
from hubert_ee.outputs import write_json
from hubert_ee.outputs import write_texts
from hubert_ee.plots import pyplot, save_figure
folder = Path({str(tmp_path)!r})
failures = 0
for write in (
    lambda: write_json({{"rows": ["x" * 100] * 100}}, folder / "result.json"),
    lambda: write_texts({{folder / "config.json": "{{}}", folder / "report.md": "y" * 10000}}),
    lambda: save_figure(pyplot().subplots()[0], folder / "plot.png"),
):
    try:
        write()
    except OSError as error:
        failures += 1
        print(error, file=sys.stderr)
sys.exit(0 if failures == 3 else 1)
"""
    finished = run_with_file_size_limit(code, limit_bytes=2000)
    assert finished.returncode == 0, finished.stderr
    assert "File too large" in finished.stderr
    assert {path.name: path.read_bytes() for path in tmp_path.iterdir()} == before


def test_a_write_replaces_the_file_whole_and_keeps_its_permissions(tmp_path):
    target = tmp_path / "sub" / "result.json"
    write_json(PREVIOUS, target)  # creates the folder
    assert json.loads(target.read_text()) == PREVIOUS
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~_umask()  # as open() would have made it
    os.chmod(target, 0o640)
    write_text(target, "{}\n")
    assert target.read_text() == "{}\n" and stat.S_IMODE(target.stat().st_mode) == 0o640
    assert sorted(path.name for path in target.parent.iterdir()) == ["result.json"]


def test_files_written_together_change_none_when_one_fails(tmp_path):
    first, second = tmp_path / "config.json", tmp_path / "README.md"
    first.write_text("old config")
    second.write_text("old card")
    with pytest.raises(UnicodeEncodeError):  # a write that raises after the first file is written
        write_texts({first: "new config", second: "\udc80 (a lone surrogate: UTF-8 cannot encode it)"})
    assert (first.read_text(), second.read_text()) == ("old config", "old card")
    assert sorted(path.name for path in tmp_path.iterdir()) == ["README.md", "config.json"]


def test_a_write_that_cannot_be_renamed_into_place_leaves_no_temporary_file(tmp_path):
    (tmp_path / "taken").mkdir()  # the path became a folder after it was checked
    with pytest.raises(IsADirectoryError):
        write_text(tmp_path / "taken", "results")
    assert [path.name for path in tmp_path.iterdir()] == ["taken"] and not any((tmp_path / "taken").iterdir())


def test_output_paths_that_cannot_be_written_are_named(tmp_path):
    (tmp_path / "a_file").write_text("x")
    with pytest.raises(OutputPathError, match=r"--json .* is a folder"):
        check_output_path(tmp_path, "--json")
    with pytest.raises(OutputPathError, match=r"a_file is a file, not a folder"):
        check_output_path(tmp_path / "a_file" / "out.json", "--json")
    assert check_output_path(tmp_path / "new" / "deeper" / "out.json") == tmp_path / "new" / "deeper" / "out.json"
    with pytest.raises(argparse.ArgumentTypeError, match="is a folder"):
        output_file(str(tmp_path))
    if os.geteuid() != 0:  # root may write anywhere
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        with pytest.raises(OutputPathError, match="is not writable"):
            check_output_path(locked / "out.json", "--json")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
