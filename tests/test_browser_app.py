"""Real browser: serve the FiftyOne App on 127.0.0.1 and render it in headless Debian chromium.

The page's DOM must contain the samples grid (``data-cy="fo-grid"``) with image tiles
(``data-cy="looker"``). Two screenshots of the grid, with the teacher's heatmap field on (as
the dataset opens) and turned off, must differ on the tiles (the overlay renders), and the
page must show the fixed colours of :data:`ikd_edu.browse.COLOURS`. The screenshots are kept
in the pytest tmp folder and copied to ``test-artifacts/fiftyone_app.png`` and
``fiftyone_app_no_heatmap.png`` (git-ignored). The App server, the dataset and the session's
private MongoDB are all gone at the end.
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

pytestmark = [pytest.mark.browser, pytest.mark.slow]  # headless Chromium: ~25 s

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


GRID = (slice(150, 320), slice(310, 1400))  # rows, columns of the first tile row (1400x900 window)


def _screenshot(url: str, path: Path, tries: int = 4) -> np.ndarray:
    """Screenshot ``url`` until the grid's tiles have drawn (a busy machine can need a second load)."""
    from PIL import Image

    pixels = None
    for _ in range(tries):
        proc = _chromium(url, f"--screenshot={path}")
        assert path.is_file(), proc.stderr[-2000:]
        pixels = np.asarray(Image.open(path).convert("RGB"), dtype=np.float64)
        if pixels[GRID].std() > 40:  # image tiles, not the dark placeholder grid
            break
        time.sleep(2)
    return pixels


def _near(pixels: np.ndarray, hex_colour: str, tol: float = 12) -> int:
    """How many pixels are within ``tol`` (per channel) of ``hex_colour``."""
    rgb = np.array([int(hex_colour[i: i + 2], 16) for i in (1, 3, 5)], dtype=np.float64)
    return int((np.abs(pixels - rgb).max(axis=-1) <= tol).sum())


def _peaked_heatmaps(data, joint: int = 0, sigma: float = 3.0) -> None:
    """Teacher heatmaps of ``joint``: a Gaussian at the GT joint (the crop centre where unlabelled)."""
    from ikd_edu.geometry import affine_points, get_affine_transform

    mats = get_affine_transform(data.centers, data.scales, np.zeros(data.num_persons), (32, 24))
    q = affine_points(data.gt[:, joint: joint + 1, :2], mats)[:, 0].numpy()  # (N, 2) heatmap px
    q = np.where(data.gt[:, joint: joint + 1, 2] > 0, q, [12.0, 16.0])
    ys, xs = np.mgrid[0:32, 0:24]
    data.heatmaps["teacher"] = np.exp(-((xs - q[:, :1, None]) ** 2 + (ys - q[:, 1:, None]) ** 2)
                                      / (2 * sigma ** 2)).astype(np.float32)
    data.heatmap_joint = joint


@pytest.mark.skipif(CHROMIUM is None, reason="Debian chromium not installed: apt-get install -y chromium")
def test_app_renders_the_samples_grid_in_headless_chromium(fo_db, synthetic_root, tmp_path):
    assert fo_db is not None, FO_REASON
    data = browse.load_split(synthetic_root, "val", max_images=6)
    fake_predictions(data)
    _peaked_heatmaps(data)
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
        on = _screenshot(url, shot)
        assert on.shape == (900, 1400, 3) and on[GRID].std() > 40, "the grid's tiles never drew"
        # the fixed colours are on the page: sidebar swatches and the skeletons on the tiles
        for key in ("teacher", "student", "occluded"):
            assert _near(on, browse.COLOURS[key]) > 50, f"no {key} colour {browse.COLOURS[key]} in the App"

        # the same grid with the heatmap field off: the tiles change where the overlay was
        ds.app_config.active_fields.paths = [p for p in ds.app_config.active_fields.paths if not p.endswith("_heatmap")]
        ds.save()
        session.refresh()
        off_shot = tmp_path / "fiftyone_app_no_heatmap.png"
        off = _screenshot(url, off_shot)
        assert off[GRID].std() > 40, "the grid's tiles never drew (heatmap off)"
        changed = (np.abs(on[GRID] - off[GRID]).sum(axis=-1) > 60).mean()
        assert changed > 0.01, f"the teacher_heatmap overlay does not show: {changed:.4f} of the tile pixels change"
        artifacts = REPO / "test-artifacts"
        artifacts.mkdir(exist_ok=True)
        shutil.copy(shot, artifacts / "fiftyone_app.png")
        shutil.copy(off_shot, artifacts / "fiftyone_app_no_heatmap.png")
    finally:
        if session is not None:
            session.close()
        ds.delete()
    deadline = time.time() + 20
    while _listening(port) and time.time() < deadline:
        time.sleep(0.5)
    assert not _listening(port), "the App server is still running after session.close()"
    assert not fo_db.dataset_exists("ikd-edu-test-browser")
