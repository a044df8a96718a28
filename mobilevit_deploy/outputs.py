"""Writing results safely: output folders validated up front, staging folders, atomic replacement.

Every result is written into a hidden staging folder inside its output folder (same file system,
so the final rename is atomic) and renamed into place only when complete. A staging folder carries
its run's process id; a later run removes staging folders whose process is gone (a run killed with
SIGKILL), never those of a run still going.
"""
from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

from .errors import OutputError

STAGING_PREFIX = ".mvdeploy-tmp-"
_STAGING = re.compile(re.escape(STAGING_PREFIX) + r"(\d+)-")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def ensure_folder(path: Path, flag: str = "--out") -> bool:
    """Create `path` (and parents) if needed; -> True when this call created it. Refuses, in one line,
    a path that is a file, under a file, or not writable."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise OutputError(f"{flag} {path} is a file, not a folder: choose a folder")
    created = not path.exists()
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OutputError(f"cannot create {flag} folder {path}: {e.strerror or e}") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise OutputError(f"{flag} folder {path} is not writable")
    remove_stale_staging(path)
    return created


def remove_stale_staging(folder: Path) -> None:
    """Staging folders left by runs that no longer exist (killed before they could clean up)."""
    for entry in Path(folder).glob(STAGING_PREFIX + "*"):
        match = _STAGING.match(entry.name)
        if match and not _alive(int(match.group(1))):
            shutil.rmtree(entry, ignore_errors=True)


@contextlib.contextmanager
def staging(folder: Path) -> Iterator[Path]:
    """A fresh hidden folder inside `folder`, removed on the way out whatever happens."""
    try:
        tmp = tempfile.mkdtemp(prefix=f"{STAGING_PREFIX}{os.getpid()}-", dir=folder)
    except OSError as e:
        raise OutputError(f"cannot write in {folder}: {e.strerror or e}") from None
    try:
        yield Path(tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def move_into_place(src: Path, dst: Path) -> None:
    """Rename a staged file or folder over `dst`, replacing what was there."""
    if dst.is_dir() and not dst.is_symlink():
        shutil.rmtree(dst)
    os.replace(src, dst)


def write_text_atomic(path: Path, text: str) -> None:
    """Write a small text file beside its final name, then rename: a full disk never leaves half a file."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        reason = "the disk is full" if e.errno == errno.ENOSPC else (e.strerror or str(e))
        raise OutputError(f"cannot write {path}: {reason}") from None


def require_writable_folder(path: Path, flag: str = "--out") -> None:
    """Will `ensure_folder(path)` work? Validated before any work, creating nothing."""
    path = Path(path)
    if path.exists():
        if not path.is_dir():
            raise OutputError(f"{flag} {path} is a file, not a folder: choose a folder")
        if not os.access(path, os.W_OK | os.X_OK):
            raise OutputError(f"{flag} folder {path} is not writable")
        return
    parent = path.absolute().parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise OutputError(f"cannot create {flag} folder {path}: {parent} is a file")
    if not os.access(parent, os.W_OK | os.X_OK) or str(parent.resolve()).startswith(("/proc", "/sys")):
        raise OutputError(f"cannot create {flag} folder {path}: {parent} is not writable")
