"""Real browser: serve the FiftyOne App on 127.0.0.1 and render it in headless Debian chromium.

The page's DOM must contain the samples grid (``data-cy="fo-grid"``) with image tiles
(``data-cy="looker"``); the screenshot is kept as a test artifact in the pytest tmp folder
and copied to ``test-artifacts/fiftyone_app.png`` (git-ignored). The App server, the
dataset and the session's private MongoDB are all gone at the end.
"""
from __future__ import annotations

import re
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest

from ikd_edu import browse
from test_browse import FO_REASON, fake_predictions, private_fiftyone_db

pytestmark = pytest.mark.browser

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run", "--window-size=1400,900",
    "--virtual-time-budget=15000",
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _chromium(url: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    with tempfile.TemporaryDirectory() as profile:  # a throwaway profile per run
        return subprocess.run([CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args, url],
                              capture_output=True, text=True, timeout=timeout)


def _listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture(scope="session")
def fo_db(tmp_path_factory):  # shares test_browse's database when that module ran first
    with private_fiftyone_db(tmp_path_factory.mktemp("fiftyone_db_browser")) as fo:
        yield fo


@pytest.mark.skipif(CHROMIUM is None, reason="Debian chromium not installed: apt-get install -y chromium")
def test_app_renders_the_samples_grid_in_headless_chromium(fo_db, synthetic_root, tmp_path):
    from PIL import Image

    assert fo_db is not None, FO_REASON
    data = browse.load_split(synthetic_root, "val", max_images=6)
    fake_predictions(data)
    ds = browse.build_dataset(data, name="ikd-edu-test-browser")
    port = _free_port()
    session = None
    try:
        session = browse.launch_app(ds, port=port, address="127.0.0.1", remote=True)
        assert _listening(port)
        # the App listens on 127.0.0.1 only: not on this machine's other addresses
        others = [a for a in socket.gethostbyname_ex(socket.gethostname())[2] if not a.startswith("127.")]
        for address in others[:1]:
            with socket.socket() as s:
                s.settimeout(0.5)
                assert s.connect_ex((address, port)) != 0, f"App reachable on {address}"

        url = f"http://127.0.0.1:{port}/datasets/{ds.name}"
        dom = ""
        for _ in range(3):  # the first load can be slow on a busy machine
            dom = _chromium(url, "--dump-dom").stdout
            if 'data-cy="looker"' in dom:
                break
            time.sleep(2)
        assert 'data-cy="fo-grid"' in dom, "no samples grid in the App's DOM:\n" + dom[:2000]
        tiles = len(re.findall(r'data-cy="looker"', dom))
        assert 1 <= tiles, "the samples grid has no image tiles"
        assert ds.name in dom

        shot = tmp_path / "fiftyone_app.png"
        proc = _chromium(url, f"--screenshot={shot}")
        assert shot.is_file(), proc.stderr[-2000:]
        pixels = np.asarray(Image.open(shot).convert("RGB"), dtype=np.float64)
        assert pixels.shape == (900, 1400, 3) and pixels.std() > 10  # a rendered page, not a blank one
        artifacts = REPO / "test-artifacts"
        artifacts.mkdir(exist_ok=True)
        shutil.copy(shot, artifacts / "fiftyone_app.png")
    finally:
        if session is not None:
            session.close()
        ds.delete()
    deadline = time.time() + 20
    while _listening(port) and time.time() < deadline:
        time.sleep(0.5)
    assert not _listening(port), "the App server is still running after session.close()"
    assert not fo_db.dataset_exists("ikd-edu-test-browser")
