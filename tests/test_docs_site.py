"""The documentation site builds offline from the committed notebooks and pages and renders in a real browser
(headless Chromium, Debian's package): every page, image and internal link resolves, nothing is fetched from
outside, a notebook page shows its figures, its findings and its folded config, and screenshots of the home page
and of 05's page are not blank and carry the theme. `make test-docs` runs it (CI too)."""

from __future__ import annotations

import functools
import http.server
import importlib.util
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.docs
spec = importlib.util.spec_from_file_location("check_site", ROOT / "scripts" / "check_site.py")
check_site = importlib.util.module_from_spec(spec)
spec.loader.exec_module(check_site)


def _chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if path := shutil.which(name):
            return path
    pytest.fail("No Chromium on this machine: install Debian's package (apt-get install -y chromium); "
                ".ci/run does so before make test-docs.")


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("site")
    subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-q", "-d", str(out)], check=True,
                   cwd=ROOT, timeout=600, env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    return out


@pytest.fixture(scope="module")
def server(site):
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(site)))
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def _browse(tmp_path: Path, *args: str) -> str:
    command = [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
               f"--user-data-dir={tmp_path / 'profile'}", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=True).stdout


def test_every_page_image_and_link_resolves_and_nothing_comes_from_outside(site):
    checked, found = check_site.problems(site)
    assert checked > 500 and not found, found[:10]
    assert len(list((site / "notebooks").glob("0*.html"))) == 8


@pytest.mark.parametrize("page, expected", [
    ("index.html", ["What the default run finds", "05_dendrogram.png"]),
    ("notebooks/05_language_similarity.html", ["What this run found", "Against the paper",
                                                "Every value of the config", 'class="dataframe"']),
    ("figures/udhr-all/notebooks/05_language_similarity.html", ["Hierarchical clustering"]),
    ("api.html", ['id="babel_utils.findings.Findings"', 'id="babel_utils.run.benchmarks"',
                  'id="babel_utils.evaluate.tasks.Task"']),
])
def test_pages_render_in_the_browser(server, tmp_path, page, expected):
    dom = _browse(tmp_path, "--dump-dom", f"{server}/{page}")
    assert 'class="no-js"' not in dom  # the theme's scripts ran in the browser
    for text in expected:
        assert text in dom, f"{page}: {text!r} is not on the rendered page"
    if page.startswith("notebooks/"):
        assert dom.count("data:image/png") >= 9 and "<details" in dom  # its figures; the folded config


@pytest.mark.parametrize("page", ["index.html", "notebooks/05_language_similarity.html"])
def test_screenshots_show_a_themed_page(server, tmp_path, page):
    png = tmp_path / "page.png"
    _browse(tmp_path, f"--screenshot={png}", "--window-size=1280,1600", f"{server}/{page}")
    image = Image.open(png).convert("RGB")
    assert image.size == (1280, 1600)
    assert len(image.getcolors(maxcolors=1 << 20)) > 500  # text, figures, highlighting: not a blank page
    r, g, b = max(image.crop((0, 0, 1280, 40)).getcolors(maxcolors=1 << 16))[1]
    assert abs(r - 0x3F) + abs(g - 0x51) + abs(b - 0xB5) < 12, (r, g, b)  # the theme's indigo header: CSS loaded
