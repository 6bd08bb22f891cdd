"""The explorer notebook in a real JupyterLab, driven by a headless Chromium: it runs, its widgets
render as controls (not as "Loading widget..." text) and moving the slider redraws the view.

Needs Chromium (Debian's ``chromium``, which ``scripts/setup.sh`` installs where it runs as root)
and Playwright (a test dependency, used with that Chromium: nothing is downloaded); without
either the test skips, saying which is missing."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None)
SMALL = {"n_states": 8, "every": 10, "explainers": ["grad", "random"], "state": 3, "explainer": "grad"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def lab(tmp_path):
    """A JupyterLab server on a copy of the explorer notebook with small parameters; its URL."""
    nb = nbformat.read(ROOT / "notebooks" / "explorer.ipynb", as_version=4)
    params = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    params.source += "\n" + "\n".join(f"{k} = {v!r}" for k, v in SMALL.items())
    nbformat.write(nb, tmp_path / "explorer.ipynb")
    port, token = free_port(), "xrlkit-test"
    settings = tmp_path / "settings" / "@jupyterlab" / "apputils-extension"
    settings.mkdir(parents=True)
    (settings / "notification.jupyterlab-settings").write_text(json.dumps({"fetchNews": "false"}))  # no news pop-up
    env = {**os.environ, "JUPYTER_CONFIG_DIR": str(tmp_path / "config"), "JUPYTER_RUNTIME_DIR": str(tmp_path / "rt"),
           "JUPYTERLAB_SETTINGS_DIR": str(tmp_path / "settings"), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "jupyterlab", "--no-browser", f"--port={port}", "--ip=127.0.0.1",
                             f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={tmp_path}",
                             "--allow-root", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"],
                            stdout=subprocess.DEVNULL, stderr=open(tmp_path / "lab.log", "w"), env=env)
    base = f"http://127.0.0.1:{port}"
    deadline = time.time() + 90
    while True:
        try:
            with urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=2) as r:
                json.load(r)
            break
        except OSError:
            if proc.poll() is not None or time.time() > deadline:
                proc.kill()
                pytest.fail(f"JupyterLab did not start:\n{(tmp_path / 'lab.log').read_text()[-3000:]}")
            time.sleep(0.5)
    yield f"{base}/lab/tree/explorer.ipynb?token={token}"
    proc.terminate()
    proc.wait(timeout=30)


@pytest.mark.skipif(CHROMIUM is None, reason="no Chromium (Debian: apt-get install chromium)")
def test_the_explorer_runs_in_jupyterlab_with_live_widgets(lab, tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    shot = Path(os.environ.get("XRLKIT_SCREENSHOT", tmp_path / "explorer.png"))
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        try:
            drive(page, lab)
        finally:  # what the page showed, also when a step timed out
            page.screenshot(path=str(shot), full_page=True)
            browser.close()
    assert shot.stat().st_size > 50_000


def drive(page, url: str) -> None:
    """Run every cell, check the widgets rendered, move the slider, see the view change. JupyterLab
    renders cells out of view lazily, so elements are awaited as attached, not visible."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    page.goto(url)
    page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=90_000)
    page.wait_for_selector(".jp-Notebook-ExecutionIndicator, .jp-Toolbar-kernelStatus", timeout=90_000)
    try:  # a fresh JupyterLab may ask which kernel to start: the preselected one (this environment's)
        page.get_by_role("button", name="Select", exact=True).click(timeout=15_000)
    except PlaywrightTimeout:  # no dialog: the kernel started by itself
        pass
    page.get_by_role("menuitem", name="Run", exact=True).click()
    page.get_by_text("Run All Cells", exact=True).click()
    outputs = ".jp-Notebook .jp-OutputArea-output img"
    # the widget's view and the fixed view at the end
    page.wait_for_function(f"document.querySelectorAll('{outputs}').length >= 2", timeout=300_000)
    slider = page.wait_for_selector(".jp-Notebook .widget-slider", state="attached", timeout=30_000)
    page.wait_for_selector(".jp-Notebook .widget-dropdown select", state="attached", timeout=30_000)
    assert not page.locator(".jp-Notebook [data-mime-type='application/vnd.jupyter.stderr']").filter(
        has_text="Error").count(), "a cell raised"
    assert not page.get_by_text("Loading widget...").count(), "the widget manager did not render the widgets"
    view = ".jp-Notebook .widget-output img"
    before = page.locator(view).first.get_attribute("src")
    slider.scroll_into_view_if_needed()
    handle = page.locator(".jp-Notebook .widget-slider .noUi-handle").first
    handle.focus()
    page.keyboard.press("ArrowRight")
    page.wait_for_function("([sel, old]) => document.querySelector(sel)?.getAttribute('src') !== old",
                           arg=[view, before], timeout=120_000)
    assert page.locator(".jp-Notebook .widget-slider .widget-readout").first.inner_text().strip() == "1"
