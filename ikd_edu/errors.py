"""Errors meant for the user: the message says what is wrong and what to do.

:func:`user_message` is the one place that turns a failure into that line. The CLI
(``ikd_edu.cli.main``) prints it as ``ikd-edu: error: <line>`` with no traceback (set
``IKD_DEBUG=1`` to see the traceback too); library code raises :class:`UserError` with
a message of the form *file: what is wrong; what to do*.
"""
from __future__ import annotations

import errno
import os
import re

DEBUG_ENV = "IKD_DEBUG"  # IKD_DEBUG=1: the CLI prints the traceback as well
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


class UserError(Exception):
    """Bad input (file, config, argument). The CLI prints the message without a traceback."""


def debug_enabled() -> bool:
    """True when ``IKD_DEBUG`` is set to something other than '', '0', 'false', 'no'."""
    return os.environ.get(DEBUG_ENV, "").strip().lower() not in ("", "0", "false", "no")


def one_line(text: object, limit: int = 1000) -> str:
    """``text`` as a single clean line: no ANSI colour codes, no line breaks, at most ``limit`` characters."""
    s = _ANSI.sub("", str(text))
    s = " ".join(part.strip() for part in s.splitlines() if part.strip())
    return s if len(s) <= limit else s[: limit - 3] + "..."


# what to say for an OSError while *writing* path, by errno
_WRITE_ADVICE = {
    errno.ENOSPC: ("no space left on the device", "free some disk space or choose another folder with --out"),
    errno.EDQUOT: ("disk quota exceeded", "free some space or choose another folder with --out"),
    errno.EFBIG: ("the file is too large for this file system", "choose another folder with --out"),
    errno.EROFS: ("the file system is read-only", "choose a writable folder with --out"),
    errno.EACCES: ("permission denied", "choose a folder you can write to with --out, or fix its permissions"),
    errno.EPERM: ("operation not permitted", "choose a folder you can write to with --out"),
    errno.ENOTDIR: ("a file is in the way where a folder is needed", "remove that file or choose another --out"),
    errno.EEXIST: ("a file is in the way where a folder is needed", "remove that file or choose another --out"),
    errno.EISDIR: ("it is a folder, but a file is needed here", "remove the folder or choose another path"),
    errno.ENAMETOOLONG: ("the path is too long", "choose a shorter --out"),
}


def os_error_message(exc: OSError, path: object = None, action: str = "write") -> str:
    """One line for an ``OSError`` while ``action``-ing ``path``: file, what is wrong, what to do."""
    where = path if path is not None else exc.filename
    what, todo = _WRITE_ADVICE.get(exc.errno or -1, (exc.strerror or one_line(exc) or type(exc).__name__, ""))
    if action == "read":
        if exc.errno == errno.ENOENT:
            what, todo = "not found", "check the path"
        elif exc.errno in (errno.EACCES, errno.EPERM):
            what, todo = "permission denied", "fix its permissions or copy it somewhere readable"
        elif exc.errno == errno.EISDIR:
            what, todo = "it is a folder, but a file is needed here", "pass the file inside it"
        elif exc.errno not in _WRITE_ADVICE:
            todo = "check the file and the disk"
    elif not todo:
        todo = "check the folder and the disk, or choose another --out"
    return f"cannot {action} {where}: {what}; {todo}"


def _unwrap_worker_message(text: str) -> str:
    """A DataLoader worker re-raises ``Caught X in DataLoader worker ... Original Traceback ...``: keep X's line."""
    if "Original Traceback" not in text:
        return text
    last = [line for line in text.strip().splitlines() if line.strip()][-1]
    return re.sub(r"^[\w.]+(Error|Exception)\w*: ", "", last.strip())


def user_message(exc: BaseException) -> str | None:
    """The one-line message for a failure caused by the user's files, paths or arguments, else None.

    None means a bug: the CLI then says "internal error" (and shows the traceback with IKD_DEBUG=1).
    """
    if isinstance(exc, UserError):
        return one_line(_unwrap_worker_message(str(exc))) or type(exc).__name__
    if isinstance(exc, RecursionError):
        return ("an input file is nested too deeply to read (a JSON or YAML file with thousands of levels "
                "of brackets?); check the files you passed")
    if isinstance(exc, MemoryError):
        return "out of memory; use smaller inputs (images, batch size) or close other programs"
    if isinstance(exc, OSError) and exc.errno is not None:
        action = "write" if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EFBIG) else "use"
        if isinstance(exc, FileNotFoundError):
            action = "read"
        return one_line(os_error_message(exc, action=action))
    if isinstance(exc, (FileNotFoundError, ValueError)):
        return one_line(_unwrap_worker_message(str(exc))) or type(exc).__name__
    text = str(exc)
    if "Original Traceback" in text and "UserError" in text:  # a UserError re-raised by a DataLoader worker
        return one_line(_unwrap_worker_message(text))
    return None
