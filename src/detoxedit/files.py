"""Reading users' text files and writing ours, with the failures a user can fix turned into one line.

Every file detoxedit writes goes through `atomic_write_text` / `atomic_write_bytes` (or an
append-only log, `evaluation/records.py`): the text lands in a temp file beside the target, is
fsynced, then renamed over it, so a kill, a full disk or a read-only folder never leaves a
half-written `metrics.json`; the old file, if any, stays whole. Every text file a user gives is
read by `read_text_file`, which names the file and the byte offset of a non-UTF-8 byte.
"""

from __future__ import annotations

import errno
import os
import tempfile
from pathlib import Path

from detoxedit.errors import DetoxeditError

_DISK_ERRORS = {
    errno.ENOSPC: "the disk is full",
    errno.EDQUOT: "the disk quota is exceeded",
    errno.EROFS: "the file system is read-only",
    errno.EACCES: "permission denied",
    errno.EPERM: "permission denied",
}


class WriteError(DetoxeditError):
    """A file could not be written (full disk, read-only folder, no permission)."""


def disk_error_message(err: OSError, path: str | Path | None = None) -> str | None:
    """One line for an OSError a user can fix (full disk, read-only, permissions); None for others."""
    reason = _DISK_ERRORS.get(err.errno or -1)
    if reason is None:
        return None
    where = path if path is not None else (err.filename or "a file")
    return f"cannot write {where}: {reason} ({os.strerror(err.errno)}); free space or choose another folder"


def read_text_file(path: str | Path, what: str = "file") -> str:
    """The file's text as UTF-8; a missing file or a non-UTF-8 byte is a one-line DetoxeditError."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError as err:
        raise DetoxeditError(f"{what} not found: {path}") from err
    except IsADirectoryError as err:
        raise DetoxeditError(f"{what} {path} is a folder; give a file") from err
    except OSError as err:
        raise DetoxeditError(f"cannot read {what} {path}: {err.strerror or err}") from err
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        raise DetoxeditError(
            f"{path}: not UTF-8 text: byte 0x{data[err.start]:02x} at offset {err.start} (line {line}); "
            "save the file as UTF-8 (e.g. iconv -f latin1 -t utf-8)"
        ) from err


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Writes `data` to a temp file beside `path`, fsyncs, renames it over `path`: all or nothing."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, staging = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as err:
        raise WriteError(disk_error_message(err, path) or f"cannot write {path}: {err}") from err
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(data)
            stream.flush()
            os.fsync(stream.fileno())
        os.chmod(staging, _mode_for(path))
        os.replace(staging, path)
    except OSError as err:
        Path(staging).unlink(missing_ok=True)
        raise WriteError(disk_error_message(err, path) or f"cannot write {path}: {err}") from err
    return path


def _mode_for(path: Path) -> int:
    """The replaced file's mode, or what the umask gives a new file (mkstemp's 0600 would hide results
    from colleagues on a shared machine)."""
    if path.exists():
        return path.stat().st_mode & 0o777
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def atomic_write_text(path: str | Path, text: str) -> Path:
    """`atomic_write_bytes` for UTF-8 text."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def check_writable_folder(folder: str | Path, what: str = "--out") -> Path:
    """Creates `folder` if needed and proves a file can be written there, before any slow work starts."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise WriteError(f"{what} {folder} is a file; give a folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        handle, probe = tempfile.mkstemp(prefix=".write-probe.", dir=folder)
        os.close(handle)
        os.unlink(probe)
    except OSError as err:
        raise WriteError(f"{what} {folder}: " + (disk_error_message(err, folder) or str(err))) from err
    return folder
