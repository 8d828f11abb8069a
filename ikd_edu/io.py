"""Small file helpers: atomic writes, JSON, safe checkpoint loading, output checks and locks.

Every reader and writer of ikd-edu goes through here, so that every bad file or path ends
in one :class:`~ikd_edu.errors.UserError` line that names the file, says what is wrong and
what to do:

* :func:`atomic_write` / :func:`write_json` / :func:`save_torch` - temp file + ``os.replace``
  (a crash never leaves half a file), mode 0644 minus the umask, and disk-full / read-only /
  permission errors as one line;
* :func:`read_json` (``expect=dict`` / ``list`` checks the top level) and :func:`load_torch`
  (empty, truncated, foreign and refused-pickle checkpoints explained);
* :func:`check_output_dir` - before work starts: the folder is not a file, is writable and
  has the space a run needs;
* :func:`lock_output_dir` - an advisory lock file (``.ikd-edu.lock``: PID, host, start time)
  so that a second writer on the same folder is refused ("in use by PID N since ..."); a
  lock left by a killed process is taken over, and stale temp files of killed writers are
  removed (:func:`clean_stale_tmp`).
"""
from __future__ import annotations

import contextlib
import datetime
import errno
import json
import os
import re
import shutil
import socket
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Any, Iterator

from ikd_edu.errors import UserError, one_line, os_error_message

LOCK_NAME = ".ikd-edu.lock"
#: temp files of atomic_write (``.<name>.<random>.tmp``) and of image workers (``<name>.tmp<pid>``)
_STALE_TMP = re.compile(r"^\..+\.[A-Za-z0-9_]{6,}\.tmp$|^.+\.tmp\d+$")
_WRITE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EACCES, errno.EPERM, errno.EIO,
                 errno.ENOTDIR, errno.EEXIST, errno.EISDIR, errno.ENAMETOOLONG}


# --------------------------------------------------------------------------------------
# Writers
# --------------------------------------------------------------------------------------
def _umask() -> int:
    """The process umask (read without changing it where /proc allows)."""
    with contextlib.suppress(OSError, ValueError):
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _make_temp(path: Path) -> tuple[int, str]:
    """Create the temp file next to ``path`` (the one place that creates files: tests patch it)."""
    return tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)


def free_bytes(folder: str | os.PathLike) -> int:
    """Free bytes on the file system of ``folder`` (tests patch it to fake a full disk)."""
    return shutil.disk_usage(folder).free


def _write_error(exc: OSError, path: Path) -> UserError:
    return UserError(os_error_message(exc, path, "write"))


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "w") -> Iterator[Any]:
    """Open a temp file next to ``path``; on success ``os.replace`` it into place.

    A crash (or SIGKILL) mid-write leaves the old file untouched and no partial file (a
    killed writer's ``.<name>.*.tmp`` is removed by :func:`clean_stale_tmp` on the next
    start). The file gets mode ``0666 & ~umask`` (0644 with the usual umask), like ``open``.
    Disk full, read-only or permission problems raise a one-line :class:`UserError`.
    """
    path = Path(path)
    if path.is_dir():
        raise UserError(f"cannot write {path}: it is a folder, but a file is needed here; "
                        "remove the folder or choose another path")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = _make_temp(path)
    except OSError as exc:
        raise _write_error(exc, path) from None
    try:
        with contextlib.suppress(OSError, AttributeError):  # mkstemp makes 0600
            os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, mode) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(exc, OSError) and exc.errno in _WRITE_ERRNOS:
            raise _write_error(exc, path) from None
        raise


def write_json(path: str | os.PathLike, obj: Any, indent: int | None = 2) -> None:
    """Write JSON atomically."""
    with atomic_write(path) as fh:
        json.dump(obj, fh, indent=indent)


def save_torch(path: str | os.PathLike, obj: Any) -> None:
    """``torch.save`` atomically; a failed write (e.g. a full disk) is a one-line UserError."""
    import torch

    path = Path(path)
    try:
        with atomic_write(path, "wb") as fh:
            torch.save(obj, fh)
    except RuntimeError as exc:  # torch's zip writer: "[enforce fail at inline_container.cc] ... file write failed"
        with contextlib.suppress(OSError):
            if free_bytes(path.parent) < 1 << 20:
                raise UserError(f"cannot write {path}: no space left on the device; free some disk space "
                                "or choose another folder with --out") from None
        raise UserError(f"cannot write {path}: {one_line(exc, 200)}; check the disk and the folder") from None


def check_output_dir(folder: str | os.PathLike, need_bytes: int = 0, what: str = "output folder") -> Path:
    """Make sure ``folder`` can take the output before any work starts; returns it.

    Creates it if needed. Raises a one-line :class:`UserError` when it (or a parent) is a
    file, cannot be written (read-only, permissions) or has less than ``need_bytes`` free.
    """
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise UserError(f"{what} {folder} is a file, not a folder; remove it or choose another --out")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = _make_temp(folder / ".write-test")
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise UserError(os_error_message(exc, f"{what} {folder}", "write")) from None
    if need_bytes > 0:
        free = free_bytes(folder)
        if free < need_bytes:
            raise UserError(f"{what} {folder}: needs about {_mib(need_bytes)} but only {_mib(free)} is free on its disk; "
                            "free some space or choose another folder with --out")
    return folder


def _mib(n: int) -> str:
    return f"{n / 2**20:.1f} MiB" if n < 2**30 else f"{n / 2**30:.2f} GiB"


def clean_stale_tmp(folder: str | os.PathLike) -> list[Path]:
    """Remove temp files left in ``folder`` by killed writers (call it while holding its lock)."""
    removed = []
    folder = Path(folder)
    with contextlib.suppress(OSError):
        for p in folder.iterdir():
            if _STALE_TMP.match(p.name) and p.is_file():
                with contextlib.suppress(OSError):
                    p.unlink()
                    removed.append(p)
    return removed


# --------------------------------------------------------------------------------------
# Advisory lock on an output folder
# --------------------------------------------------------------------------------------
_HELD: dict[str, list] = {}  # resolved lock path -> [fd, depth] (re-entrant within a process)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True


def _read_lock(path: Path) -> dict:
    with contextlib.suppress(OSError, ValueError, RecursionError):
        info = json.loads(path.read_text())
        if isinstance(info, dict):
            return info
    return {}


def _in_use(folder: Path, lock: Path, info: dict) -> UserError:
    pid, since, cmd = info.get("pid", "?"), info.get("since", "?"), info.get("command", "")
    host = f" on {info['host']}" if info.get("host") and info.get("host") != socket.gethostname() else ""
    return UserError(f"{folder} is in use by PID {pid}{host} since {since}" + (f" ({one_line(cmd, 80)})" if cmd else "")
                     + f"; wait for it to finish or choose another --out (if no such process runs, delete {lock})")


def _try_flock(fd: int) -> bool | None:
    """True: locked; False: held by another process; None: no ``fcntl`` here."""
    try:
        import fcntl
    except ImportError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False
    except OSError:  # a file system without flock: fall back to the PID check
        return None


@contextlib.contextmanager
def lock_output_dir(folder: str | os.PathLike, what: str = "output folder") -> Iterator[Path]:
    """Hold ``folder/.ikd-edu.lock`` while writing into ``folder`` (re-entrant within one process).

    The lock is an ``flock`` on the lock file (released by the kernel when the process
    dies, so a killed run never blocks the next one) plus its content - PID, host, start
    time and command - for the message a second writer gets. Where ``flock`` is missing,
    a lock whose PID is no longer alive on this host is taken over. On taking the lock,
    temp files of killed writers in ``folder`` are removed.
    """
    folder = check_output_dir(folder, what=what)
    lock = folder / LOCK_NAME
    key = str(lock.resolve())
    if key in _HELD:
        _HELD[key][1] += 1
        try:
            yield folder
        finally:
            _HELD[key][1] -= 1
        return
    fd = _acquire(folder, lock)
    _HELD[key] = [fd, 1]
    try:
        clean_stale_tmp(folder)
        yield folder
    finally:
        del _HELD[key]
        with contextlib.suppress(OSError):
            lock.unlink()
        with contextlib.suppress(OSError):
            os.close(fd)


def _acquire(folder: Path, lock: Path) -> int:
    for _ in range(5):
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise _write_error(exc, lock) from None
        got = _try_flock(fd)
        if got is False:
            os.close(fd)
            raise _in_use(folder, lock, _read_lock(lock))
        if got is None:  # no flock: trust the PID in the file
            info = _read_lock(lock)
            same_host = info.get("host") in (None, socket.gethostname())
            pid = info.get("pid")
            if isinstance(pid, int) and pid != os.getpid() and (not same_host or _pid_alive(pid)):
                os.close(fd)
                raise _in_use(folder, lock, info)
        # the file we locked must still be the one at that path (a releasing holder unlinks it)
        try:
            same = os.fstat(fd).st_ino == os.stat(lock).st_ino
        except FileNotFoundError:
            same = False
        if not same:
            os.close(fd)
            continue
        info = {"pid": os.getpid(), "host": socket.gethostname(),
                "since": datetime.datetime.now().isoformat(timespec="seconds"),
                "command": " ".join(["ikd-edu", *sys.argv[1:]]) if sys.argv else ""}
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps(info).encode())
        return fd
    raise UserError(f"{folder}: could not take the lock {lock} (other processes keep replacing it); try again")


# --------------------------------------------------------------------------------------
# Readers
# --------------------------------------------------------------------------------------
_TYPE_NAMES = {dict: "a JSON object {...}", list: "a JSON list [...]"}
#: what went wrong, by exception, when a file is no JSON at all (after JSONDecodeError, before OSError)
_UNREADABLE_JSON = {
    UnicodeDecodeError: "is not a text file (is it an image or archive?)",
    RecursionError: "is nested too deeply to read (thousands of brackets)",
    MemoryError: "is too large to read into memory",
}


def read_json(path: str | os.PathLike, what: str = "JSON file", expect: type | None = None,
              fix: str = "") -> Any:
    """Read JSON; a missing, unreadable, malformed or (with ``expect``) wrongly typed file raises a one-line UserError.

    ``fix`` says what to do about a bad file (default: check or regenerate it).
    """
    path = Path(path)
    todo = fix or "check the file or regenerate it"
    if not path.is_file():
        if path.is_dir():
            raise UserError(f"{what} {path} is a folder, not a file; pass the JSON file")
        raise UserError(f"{what} not found: {path}")
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except json.JSONDecodeError as exc:
        if exc.pos == 0 and not exc.doc.strip():
            raise UserError(f"{what} {path} is not valid JSON (the file is empty); {todo}") from None
        raise UserError(f"{what} {path} is not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg}); "
                        f"{todo}") from None
    except tuple(_UNREADABLE_JSON) as exc:
        problem = next(text for kind, text in _UNREADABLE_JSON.items() if isinstance(exc, kind))
        raise UserError(f"{what} {path} {problem}; {todo}") from None
    except OSError as exc:
        raise UserError(os_error_message(exc, path, "read")) from None
    if expect is not None and not isinstance(data, expect):
        want = _TYPE_NAMES.get(expect, expect.__name__)
        raise UserError(f"{what} {path} should hold {want} but holds {_json_kind(data)}; {todo}")
    return data


def _json_kind(value: Any) -> str:
    if isinstance(value, dict):
        return "a JSON object"
    if isinstance(value, list):
        return "a JSON list"
    if value is None:
        return "null"
    return f"a {type(value).__name__} ({one_line(repr(value), 40)})"


def _checkpoint_problem(path: Path, exc: BaseException) -> str:
    """What is wrong with a checkpoint ``torch.load`` refused, and what to do, in one line.

    Never suggests ``weights_only=False``: a file that needs it can run code when loaded.
    """
    text = one_line(exc, 4000)
    weights_only = ("use a file of weights only: a state dict saved with torch.save(model.state_dict(), path) "
                    "from a source you trust")
    found = re.search(r"GLOBAL ([\w.]+)", text)
    if found:
        return (f"it holds a Python object ({found.group(1)}) that is not a tensor, and unpickling it could run "
                f"code from the file, so ikd-edu refuses to load it; {weights_only}")
    head = b""
    with contextlib.suppress(OSError):
        head = path.read_bytes()[:8]
    if head[:2] == b"PK" or isinstance(exc, EOFError) or "central directory" in text:
        return "it is truncated or damaged (an interrupted copy or download, or a full disk?); copy it again, or retrain"
    if head[:1] in (b"{", b"[") or head[:1].isspace():
        return "it is a text (JSON?) file, not a PyTorch checkpoint; pass the .pt/.pth file"
    if head[:1] == b"\x80" and "Weights only load failed" in text:
        return f"it is a Python pickle that is not a plain file of tensors, so ikd-edu refuses to unpickle it; {weights_only}"
    return "it is not a PyTorch checkpoint (wrong file?); pass a .pt/.pth file saved by torch.save"


def load_torch(path: str | os.PathLike, map_location: str = "cpu", what: str = "checkpoint") -> Any:
    """``torch.load(weights_only=True)`` with a one-line UserError for missing, empty, truncated, foreign or unsafe files."""
    import torch

    path = Path(path)
    if not path.is_file():
        if path.is_dir():
            raise UserError(f"{what} {path} is a folder, not a file; pass the .pt/.pth file inside it")
        raise UserError(f"{what} not found: {path}")
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise UserError(os_error_message(exc, path, "read")) from None
    if size == 0:
        raise UserError(f"cannot read {what} {path}: the file is empty (0 bytes; an interrupted copy or a full "
                        "disk?); copy it again, or retrain")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. torch's multi-line note on pickle protocols
            return torch.load(path, map_location=map_location, weights_only=True)
    except OSError as exc:
        raise UserError(os_error_message(exc, path, "read")) from None
    except RecursionError:
        raise UserError(f"cannot read {what} {path}: it is nested too deeply; it is not a checkpoint ikd-edu "
                        "can use") from None
    except Exception as exc:  # pickle errors, truncated zip files, foreign formats, ...
        raise UserError(f"cannot read {what} {path}: {_checkpoint_problem(path, exc)}") from None
