"""Output files: every file a `hubert-ee` command writes is written whole or not at all, at a path checked first.

A file is written to a temporary file in the same folder, flushed to the disk, then renamed over the target
(`os.replace`, atomic on one file system): a failure midway (a full disk, a crash) leaves the previous file as it
was and no partial one beside it. Output paths are checked before a command starts its work (`check_output_path`,
and `output_file` for argparse), so a path that cannot be written is an error at once, not after the work.

Standard library only: the benchmark imports this on bare GPU machines too.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import stat
import uuid
from pathlib import Path
from typing import Any, Iterator

__all__ = ["OutputPathError", "check_output_path", "output_file", "replacing", "write_bytes", "write_json",
           "write_text", "write_texts"]


class OutputPathError(ValueError):
    """An output path that cannot be written (a folder, a file where a folder should be, no permission)."""


def check_output_path(path: str | Path, what: str = "output") -> Path:
    """`path` as a Path if a file can be written there, else `OutputPathError` saying why.

    The path must not be a folder; an existing file must be writable; folders that do not exist yet are created
    when writing, so the nearest existing ancestor must be a writable folder."""
    path = Path(path).expanduser()
    if path.is_dir():
        raise OutputPathError(f"{what} {path} is a folder; give the path of a file to write")
    if path.exists() and not os.access(path, os.W_OK):
        raise OutputPathError(f"{what} {path} is not writable")
    ancestor = path.parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise OutputPathError(f"{what} {path} cannot be created: {ancestor} is a file, not a folder")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise OutputPathError(f"{what} {path} cannot be created: the folder {ancestor} is not writable")
    return path


def output_file(text: str) -> str:
    """argparse `type=` for an output file flag: the path is checked when the flags are parsed (exit code 2)."""
    try:
        check_output_path(text, "")
    except OutputPathError as error:
        raise argparse.ArgumentTypeError(str(error).strip()) from None
    return text


@contextlib.contextmanager
def replacing(path: str | Path, mode: str = "w", encoding: str | None = "utf-8") -> Iterator[Any]:
    """Open a temporary file beside `path` for writing; on a clean exit it replaces `path`, on an error it is
    removed and `path` is left as it was. Parent folders are created."""
    with _staged(path, mode, encoding) as (handle, temporary, target):
        yield handle
    _replace(temporary, target)
    _sync_folder(target.parent)


def write_text(path: str | Path, text: str) -> Path:
    """Write `text` (UTF-8) to `path`, whole or not at all."""
    with replacing(path, "w") as handle:
        handle.write(text)
    return Path(path)


def write_bytes(path: str | Path, data: bytes) -> Path:
    """Write `data` to `path`, whole or not at all."""
    with replacing(path, "wb", encoding=None) as handle:
        handle.write(data)
    return Path(path)


def write_json(data: Any, path: str | Path) -> Path:
    """`data` as indented UTF-8 JSON at `path`, whole or not at all."""
    return write_text(path, json.dumps(data, indent=2, ensure_ascii=False) + "\n")


def write_texts(files: dict[str | Path, str]) -> list[Path]:
    """Write several text files that belong together (a model's config.json and its card): every temporary file
    is written and flushed first, and only then are they renamed into place, so a failure while writing changes
    none of them."""
    staged = []
    with contextlib.ExitStack() as stack:
        for path, text in files.items():
            handle, temporary, target = stack.enter_context(_staged(path, "w", "utf-8"))
            handle.write(text)
            staged.append((temporary, target))
        # leaving the stack closes and syncs every temporary file (or removes them all on an error)
    for temporary, target in staged:
        _replace(temporary, target)
    for folder in {target.parent for _, target in staged}:
        _sync_folder(folder)
    return [target for _, target in staged]


@contextlib.contextmanager
def _staged(path: str | Path, mode: str, encoding: str | None):
    """(open handle, temporary path, target path) of a hidden temporary file beside `path`; closed and synced on a
    clean exit, removed on an error. It gets the target's permissions, or those a new file gets (umask)."""
    target = Path(path).expanduser()
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}.tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        if target.exists():
            os.chmod(temporary, stat.S_IMODE(target.stat().st_mode))
        with open(descriptor, mode, encoding=encoding, closefd=True) as handle:
            yield handle, temporary, target
            handle.flush()
            os.fsync(handle.fileno())
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def _replace(temporary: Path, target: Path) -> None:
    """Rename `temporary` over `target`; on failure (e.g. `target` became a folder) the temporary file goes."""
    try:
        os.replace(temporary, target)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def _sync_folder(folder: Path) -> None:
    """Make a rename in `folder` durable (POSIX; a no-op where folders cannot be opened)."""
    try:
        descriptor = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)
