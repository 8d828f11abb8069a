"""Real browser: a course widget renders in JupyterLab, in headless Debian chromium.

What happens (~30 s on 2 cores):

1. a one-cell notebook builds an :class:`ikd_edu.viz.widgets.HeatmapExplorer` on random
   heatmaps; nbclient runs it with ``store_widget_state=True``, so the widget models
   (sliders, dropdown, toggle buttons, the PNG of the figure) are saved in the notebook's
   metadata, as when a learner saves a notebook in JupyterLab;
2. the notebook is signed (trusted: JupyterLab only renders widget outputs of trusted
   notebooks) and served by ``jupyter lab`` on 127.0.0.1 with a random token, with its
   own config, data, settings and workspace folders in the pytest tmp folder;
3. chromium opens it, driven over the DevTools protocol (``websocket-client``, a
   jupyter_server dependency): the page is polled until the widget's controls are in the
   DOM and its image has loaded (rendered from the saved state) and the DOM is checked;
4. the test then clicks into the cell and presses Shift+Enter, so JupyterLab's own kernel
   runs it and the widgets are live, and clicks the ``student`` view button: the Python
   callback redraws the figure and the page's image changes. A screenshot is saved to
   ``test-artifacts/jupyterlab_widget.png`` (git-ignored).

Without chromium the test fails and says how to install it (``bash scripts/install.sh
--browser``). Everything started here (JupyterLab, its kernel, chromium) is stopped at the end.
"""
from __future__ import annotations

import base64
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import nbformat
import pytest

pytestmark = [pytest.mark.browser, pytest.mark.slow]  # headless Chromium: ~25 s

REPO = Path(__file__).resolve().parents[1]
JUPYTER = Path(sys.executable).with_name("jupyter")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
WINDOW = (1400, 900)

WIDGET_CELL = """\
import torch
from ikd_edu.viz.widgets import HeatmapExplorer

g = torch.Generator().manual_seed(0)
images = torch.rand(3, 3, 128, 96, generator=g)        # 3 crops (N, 3, H, W)
teacher = torch.rand(3, 17, 32, 24, generator=g)      # (N, K, h, w) heatmaps
student = torch.rand(3, 17, 32, 24, generator=g)
explorer = HeatmapExplorer(images, teacher, student)
explorer.widget"""

# what the page must show, counted by chromium itself once the notebook has rendered
PROBE_JS = """(() => {
  const q = (s) => Array.from(document.querySelectorAll(s));
  const img = q('.jupyter-widgets.widget-image')[0];
  return JSON.stringify({
    notebook: q('.jp-Notebook').length,
    sliders: q('.jupyter-widgets.widget-slider').length,
    dropdowns: q('.jupyter-widgets.widget-dropdown').length,
    toggles: q('.widget-toggle-buttons button').map(b => b.textContent.trim()),
    labels: q('.jupyter-widgets .widget-label').map(l => l.textContent.trim()),
    image_loaded: !!(img && img.complete && img.naturalWidth > 0),
    image_size: img ? [img.naturalWidth, img.naturalHeight] : null,
    lm_widgets: q('.lm-Widget.jupyter-widgets').length,
    errors: q('.jp-RenderedText[data-mime-type="application/vnd.jupyter.stderr"]').length
      + (document.body.innerText.includes('Error displaying widget') ? 1 : 0),
    loading: document.body.innerText.includes('Loading widget...'),
    disconnected: q('.jupyter-widgets-disconnected').length,
    image_src: img ? img.src : null,
    active_view: q('.widget-toggle-buttons button.mod-active').map(b => b.textContent.trim()),
    kernel_idle: document.body.innerText.includes('| Idle'),
  });
})()"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _http_json(url: str, method: str = "GET", timeout: float = 5.0):
    with urllib.request.urlopen(urllib.request.Request(url, method=method), timeout=timeout) as response:
        return json.loads(response.read().decode())


def _wait_for(what: str, check, timeout: float, interval: float = 0.25):
    """Call ``check()`` until it returns something truthy; fail with ``what`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    last_error = None
    while time.monotonic() < deadline:
        try:
            value = check()
            if value:
                return value
        except Exception as exc:  # not up yet
            last_error = exc
        time.sleep(interval)
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}" + (f" (last error: {last_error})" if last_error else ""))


def _stop(proc: subprocess.Popen | None, grace: float = 10.0) -> None:
    """SIGTERM the process group we started (server + its kernels / browser + helpers), then SIGKILL."""
    if proc is None or proc.poll() is not None and not _group_alive(proc.pid):
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(timeout=grace)


def _runtime_processes(runtime_dir: Path) -> list[int]:
    """Pids whose command line names ``runtime_dir`` (the kernels our JupyterLab started)."""
    found = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="ignore")
        except OSError:
            continue
        if str(runtime_dir) in cmdline:
            found.append(int(proc.name))
    return found


def _group_alive(pgid: int) -> bool:
    """Whether a live (not zombie) process of process group ``pgid`` is left."""
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            stat = (proc / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()  # state, ppid, pgrp, ...
        if int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False


class _DevTools:
    """A minimal Chrome DevTools Protocol client over one page's websocket."""

    def __init__(self, ws_url: str) -> None:
        import websocket  # websocket-client (a jupyter_server dependency)

        self.ws = websocket.create_connection(ws_url, timeout=30, suppress_origin=True)
        self.next_id = 0

    def call(self, method: str, **params):
        self.next_id += 1
        self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:  # skip events until our answer arrives
            message = json.loads(self.ws.recv())
            if message.get("id") == self.next_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message["result"]

    def click(self, selector: str, text: str | None = None) -> None:
        """A real mouse click (pressed + released) in the middle of the first element matching."""
        find = (f"Array.from(document.querySelectorAll({json.dumps(selector)}))"
                + (f".filter(e => e.textContent.trim() === {json.dumps(text)})" if text else "") + "[0]")
        rect = self.evaluate(f"(() => {{ const e = {find}; if (!e) return null; e.scrollIntoView({{block: 'center'}});"
                             " const r = e.getBoundingClientRect(); return [r.x + r.width / 2, r.y + r.height / 2]; })()")
        assert rect, f"nothing to click: {selector} {text or ''}"
        for kind in ("mousePressed", "mouseReleased"):
            self.call("Input.dispatchMouseEvent", type=kind, x=rect[0], y=rect[1], button="left", clickCount=1)

    def shift_enter(self) -> None:
        for kind in ("rawKeyDown", "keyUp"):
            self.call("Input.dispatchKeyEvent", type=kind, modifiers=8, key="Enter", code="Enter",
                      windowsVirtualKeyCode=13, nativeVirtualKeyCode=13)

    def evaluate(self, expression: str):
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        return result["result"].get("value")

    def close(self) -> None:
        self.ws.close()


def _widget_notebook(path: Path, data_dir: Path) -> None:
    """Write the one-cell notebook, executed with its widget state saved, and trusted (signed)."""
    from nbclient import NotebookClient
    from nbformat.sign import NotebookNotary

    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}
    nb.cells = [nbformat.v4.new_markdown_cell("# HeatmapExplorer in JupyterLab"), nbformat.v4.new_code_cell(WIDGET_CELL)]
    NotebookClient(nb, kernel_name="python3", timeout=120, store_widget_state=True,
                   resources={"metadata": {"path": str(REPO)}}).execute()
    state = nb.metadata.get("widgets", {}).get("application/vnd.jupyter.widget-state+json", {}).get("state", {})
    models = {m["model_name"] for m in state.values()}
    assert {"IntSliderModel", "DropdownModel", "ToggleButtonsModel", "ImageModel"} <= models, \
        f"nbclient saved no widget state for the explorer (models: {sorted(models)})"
    NotebookNotary(data_dir=str(data_dir)).sign(nb)  # the server checks it with the same secret
    nbformat.write(nb, path)


def test_heatmap_explorer_renders_in_jupyterlab(tmp_path):
    if CHROMIUM is None:
        pytest.fail("Debian chromium is not installed, so the real-browser test cannot run. "
                    "Install it with `bash scripts/install.sh --browser` (apt-get install chromium).")
    if not JUPYTER.is_file():
        pytest.fail(f"{JUPYTER} not found: install the course extra (`bash scripts/install.sh`) for JupyterLab")
    t0 = time.monotonic()
    served, data_dir = tmp_path / "served", tmp_path / "jupyter-data"
    for folder in (served, data_dir):
        folder.mkdir()
    settings = tmp_path / "lab-settings" / "@jupyterlab" / "apputils-extension"
    settings.mkdir(parents=True)
    (settings / "notification.jupyterlab-settings").write_text(json.dumps({"fetchNews": "false"}))  # no news pop-up
    _widget_notebook(served / "widget.ipynb", data_dir)

    env = dict(os.environ)
    env.update(JUPYTER_DATA_DIR=str(data_dir), JUPYTER_CONFIG_DIR=str(tmp_path / "jupyter-config"),
               JUPYTER_RUNTIME_DIR=str(tmp_path / "jupyter-runtime"),
               JUPYTERLAB_SETTINGS_DIR=str(tmp_path / "lab-settings"),
               JUPYTERLAB_WORKSPACES_DIR=str(tmp_path / "lab-workspaces"),
               PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    token, port = secrets.token_hex(16), _free_port()
    lab_cmd = [str(JUPYTER), "lab", "--no-browser", "--ip", "127.0.0.1", "--port", str(port),
               f"--ServerApp.token={token}", "--notebook-dir", str(served), "--ServerApp.port_retries=0"]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        lab_cmd.append("--allow-root")  # containers often run as root; JupyterLab refuses without it
    lab_log = tmp_path / "jupyterlab.log"
    lab = browser = devtools = None
    try:
        with open(lab_log, "w") as log:
            lab = subprocess.Popen(lab_cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        base = f"http://127.0.0.1:{port}"
        _wait_for("JupyterLab to answer /api/status",
                  lambda: lab.poll() is None and _http_json(f"{base}/api/status?token={token}"), timeout=45)
        # the server listens on 127.0.0.1 only
        others = [a for a in socket.gethostbyname_ex(socket.gethostname())[2] if not a.startswith("127.")]
        for address in others[:1]:
            with socket.socket() as s:
                s.settimeout(0.5)
                assert s.connect_ex((address, port)) != 0, f"JupyterLab reachable on {address}"

        profile = tmp_path / "chromium-profile"
        url = f"{base}/lab/tree/widget.ipynb?token={token}"
        browser = subprocess.Popen(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", "--no-first-run", "--remote-debugging-port=0",
             "--remote-allow-origins=*", f"--window-size={WINDOW[0]},{WINDOW[1]}", f"--user-data-dir={profile}",
             url],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        active = profile / "DevToolsActivePort"
        cdp_port = _wait_for("chromium's DevTools port", lambda: active.is_file() and active.read_text().split()[0],
                             timeout=30)
        page = _wait_for("the notebook page in chromium", lambda: next(
            (t for t in _http_json(f"http://127.0.0.1:{cdp_port}/json/list")
             if t.get("type") == "page" and "widget.ipynb" in t.get("url", "")), None), timeout=30)
        devtools = _DevTools(page["webSocketDebuggerUrl"])
        devtools.call("Emulation.setDeviceMetricsOverride", width=WINDOW[0], height=WINDOW[1],
                      deviceScaleFactor=1, mobile=False)  # the viewport (window-size includes the frame)

        def probe():
            return json.loads(devtools.evaluate(PROBE_JS) or "{}")

        def waiting(what: str, check, timeout: float = 45):
            try:
                return _wait_for(what, check, timeout)
            except pytest.fail.Exception:
                raise AssertionError(f"timed out waiting for {what}; last probe {probe()}; JupyterLab log:\n"
                                     + lab_log.read_text()[-3000:]) from None

        # 1. the saved widget state renders as soon as the notebook opens (no kernel involved)
        saved = waiting("the saved HeatmapExplorer (controls + image)",
                        lambda: (p := probe()).get("sliders", 0) >= 2 and p.get("image_loaded") and p)
        dom = devtools.evaluate("document.documentElement.outerHTML")
        # 2. run the cell in the browser (click into it, Shift+Enter): live widgets on JupyterLab's kernel
        waiting("JupyterLab's kernel to be idle", lambda: probe().get("kernel_idle"), timeout=30)
        devtools.click(".jp-CodeCell .jp-InputArea-editor")
        devtools.shift_enter()
        live = waiting("the live HeatmapExplorer after running the cell", lambda: (p := probe()).get("sliders", 0) >= 2
                       and p.get("image_loaded") and not p.get("disconnected") and p)
        # 3. click the 'student' view: the kernel redraws the figure and sends a new PNG to the page
        devtools.click(".widget-toggle-buttons button", "student")
        after = waiting("the figure to change after choosing the 'student' view", lambda: (p := probe()).get(
            "active_view") == ["student"] and p.get("image_loaded") and p.get("image_src") != live["image_src"] and p)
        time.sleep(0.5)  # let the layout settle before the screenshot
        shot = base64.b64decode(devtools.call("Page.captureScreenshot", format="png")["data"])
    finally:
        if devtools is not None:
            devtools.close()
        _stop(browser)
        _stop(lab)
        runtime = Path(env["JUPYTER_RUNTIME_DIR"])
        deadline = time.monotonic() + 10  # kernels exit with their server (they poll their parent)
        while _runtime_processes(runtime) and time.monotonic() < deadline:
            time.sleep(0.25)
        leftover = _runtime_processes(runtime)
        for pid in leftover:  # only kernels of this test's server: their command line names its runtime dir
            os.kill(pid, signal.SIGKILL)

    # the explorer's controls, rendered by ipywidgets from the saved state (class names on elements, not CSS)
    assert saved["notebook"] == 1
    assert saved["sliders"] == 2 and saved["dropdowns"] == 1, saved
    assert saved["toggles"] == ["teacher", "student", "difference"], saved
    assert {"sample", "person", "joint", "view"} <= set(saved["labels"]), saved
    assert saved["image_loaded"] and saved["image_size"][0] > 100, saved
    assert not saved["errors"] and not saved["loading"], saved
    for cls in ("jupyter-widgets", "widget-slider", "widget-dropdown", "widget-image", "lm-Widget"):
        assert f" {cls}" in dom or f'"{cls}' in dom, f"no element of class {cls} in the page"
    assert 'class="lm-Widget' in dom and "widget-slider widget-hslider" in dom
    # ... and live: connected to a kernel, and a click in the browser ran the Python callback
    assert live["sliders"] == 2 and live["active_view"] == ["teacher"] and not live["errors"], live
    assert after["active_view"] == ["student"] and after["image_src"] != live["image_src"], after

    from io import BytesIO

    import numpy as np
    from PIL import Image

    image = Image.open(BytesIO(shot)).convert("RGB")
    pixels = np.asarray(image, dtype=np.float64)
    assert pixels.shape[:2] == (WINDOW[1], WINDOW[0]) and pixels.std() > 10, "a blank screenshot"
    artifacts = REPO / "test-artifacts"
    artifacts.mkdir(exist_ok=True)
    image.save(artifacts / "jupyterlab_widget.png")
    # every process we started is gone (JupyterLab, its kernel, chromium)
    for proc in (lab, browser):
        assert proc.poll() is not None and not _group_alive(proc.pid)
    assert not leftover, f"JupyterLab's kernel(s) {leftover} outlived the server"
    elapsed = time.monotonic() - t0  # reported, not asserted: CI machines differ
    (artifacts / "jupyterlab_widget_seconds.txt").write_text(f"{elapsed:.1f}\n")
