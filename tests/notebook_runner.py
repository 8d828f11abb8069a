"""Execute a notebook with nbclient in a given environment; used by the notebook and assignment tests."""
from __future__ import annotations

import os
import time
from contextlib import contextmanager
from pathlib import Path

import nbformat

REPO = Path(__file__).resolve().parents[1]
NOTEBOOK_DIR = REPO / "notebooks"


@contextmanager
def _environ(env: dict):
    old = dict(os.environ)
    os.environ.clear()
    os.environ.update(env)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(old)


def execute(path: Path, env: dict, cell_timeout: int = 300, allow_errors: bool = False):
    """Run ``path`` top to bottom (cwd = its folder); return ``(executed notebook, wall seconds)``.

    The kernel inherits ``env`` (nbclient starts it from this process's environment).
    """
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(nb, timeout=cell_timeout, kernel_name="python3", allow_errors=allow_errors,
                            resources={"metadata": {"path": str(path.parent)}})
    t0 = time.perf_counter()
    with _environ(env):
        client.execute()
    return nb, time.perf_counter() - t0


def outputs_of(nb, output_type: str | None = None) -> list[dict]:
    """All outputs of all code cells (optionally of one type: stream, display_data, error ...)."""
    return [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
            if output_type is None or o.get("output_type") == output_type]


def cell_seconds(cell) -> float:
    """How long a code cell ran, from the timings nbclient records in ``metadata.execution``."""
    from datetime import datetime

    t = cell.get("metadata", {}).get("execution", {})
    start, end = t.get("iopub.execute_input"), t.get("shell.execute_reply")
    if not (start and end):
        raise AssertionError(f"no execution timing recorded for cell: {cell.source[:80]!r}")
    return (datetime.fromisoformat(end.replace("Z", "+00:00"))
            - datetime.fromisoformat(start.replace("Z", "+00:00"))).total_seconds()


def text_of(nb) -> str:
    """Every stream text and text/plain output, joined (for looking up printed messages)."""
    parts = []
    for o in outputs_of(nb):
        if o.get("output_type") == "stream":
            parts.append(o.get("text", ""))
        elif o.get("output_type") == "error":
            parts.append(f"{o.get('ename')}: {o.get('evalue')}")
        else:
            parts.append(o.get("data", {}).get("text/plain", ""))
    return "\n".join(parts)
