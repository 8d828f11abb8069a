"""The README's commands that use the quickstart's files work when copied.

Every command in a fenced ``bash`` block of README.md that names a file under
``runs/quickstart/`` (other than the quickstart command that writes them) runs exactly as
written, from a folder holding a ``ikd-edu quickstart --fast`` output at
``runs/quickstart``. Only ``ikd-edu`` is spelled ``python -m ikd_edu.cli`` (the installed
script may point at another checkout). A command that serves the App passes once the App
is up (then it is stopped), or when it falls back to the static gallery because no MongoDB
runs here (exit 3): both mean every path it was given was found and loaded.
"""
from __future__ import annotations

import os
import queue
import re
import shlex
import subprocess
import sys
import threading
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PREFIX = "runs/quickstart/"


def readme_commands_using_quickstart_files() -> list[str]:
    text = (ROOT / "README.md").read_text()
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        for line in block.splitlines():
            line = line.strip()
            if PREFIX in line and line.startswith("ikd-edu ") and not line.startswith("ikd-edu quickstart"):
                commands.append(line)
    return commands


def test_readme_lists_the_app_command():
    commands = readme_commands_using_quickstart_files()
    assert any(c.startswith("ikd-edu app ") for c in commands), commands


@pytest.fixture(scope="module")
def quickstart_cwd(tmp_path_factory) -> Path:
    from ikd_edu.apps import quickstart as Q

    cwd = tmp_path_factory.mktemp("readme")
    Q.run_quickstart(cwd / "runs" / "quickstart", seed=0, fast=True)
    return cwd


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
@pytest.mark.parametrize("command", readme_commands_using_quickstart_files())
def test_readme_command_runs_as_written(command, quickstart_cwd):
    argv = shlex.split(command, comments=True)
    for arg in argv:  # every quickstart file the command names exists where the quickstart wrote it
        if arg.startswith(PREFIX):
            assert (quickstart_cwd / arg).exists(), f"{arg} (from the README) is not what the quickstart writes"
    argv = [sys.executable, "-m", "ikd_edu.cli", *argv[1:]]
    env = dict(os.environ, PYTHONPATH=str(ROOT), FIFTYONE_DO_NOT_TRACK="true",
               IKD_EDU_APP_PORT=str(_free_port()), MPLBACKEND="Agg")
    proc = subprocess.Popen(argv, cwd=quickstart_cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=lambda: [lines.put(x) for x in proc.stdout] + [lines.put(None)], daemon=True).start()
    seen, served = [], False
    try:
        while True:
            line = lines.get(timeout=900)  # a guard against a hang, not a speed check
            if line is None:
                break
            seen.append(line)
            if line.startswith("FiftyOne App: http"):
                served = True
                break
    finally:
        if proc.poll() is None:
            proc.terminate()
        proc.wait(timeout=60)
    output = "".join(seen)
    if served:
        return
    assert proc.returncode in (0, 3), f"`{command}` failed (exit {proc.returncode}):\n{output[-3000:]}"
    if proc.returncode == 3:  # no MongoDB here: the fallback gallery, after loading everything
        assert "static gallery" in output, output[-3000:]
