"""Small file helpers: atomic writes, JSON, safe checkpoint loading."""
from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator

from ikd_edu.errors import UserError


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "w") -> Iterator[Any]:
    """Open a temp file next to ``path``; on success ``os.replace`` it into place.

    A crash (or SIGKILL) mid-write leaves the old file untouched and no partial file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_json(path: str | os.PathLike, obj: Any, indent: int | None = 2) -> None:
    """Write JSON atomically."""
    with atomic_write(path) as fh:
        json.dump(obj, fh, indent=indent)


def read_json(path: str | os.PathLike, what: str = "JSON file") -> Any:
    """Read JSON; a missing or malformed file raises a one-line :class:`UserError`."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{what} not found: {path}")
    try:
        with open(path) as fh:
            return json.load(fh)
    except json.JSONDecodeError as exc:
        raise UserError(f"{what} {path} is not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})") from None
    except UnicodeDecodeError:
        raise UserError(f"{what} {path} is not a text file (is it an image or archive?)") from None


def save_torch(path: str | os.PathLike, obj: Any) -> None:
    """``torch.save`` atomically."""
    import torch

    with atomic_write(path, "wb") as fh:
        torch.save(obj, fh)


def load_torch(path: str | os.PathLike, map_location: str = "cpu") -> Any:
    """``torch.load(weights_only=True)`` with a clear error for missing/corrupt files."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint not found: {path}")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # pickle errors, truncated zip files, ...
        raise UserError(f"cannot read checkpoint {path}: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}") from None
