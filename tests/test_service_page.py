"""The search page: served with a strict CSP, and rendered by headless Chromium (highlights, per-stage scores).

The Chromium test is marked slow (it needs the ``chromium`` system package, which CI may lack):
run it with ``./scripts/test.sh -m slow tests/test_service_page.py``.
"""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
import threading
import time
from html.parser import HTMLParser
from urllib.parse import quote

import pytest
import uvicorn

from service.app import create_app
from service.settings import Settings

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage"]


def test_page_is_served_with_a_strict_csp(client):
    r = client.get("/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert "script-src 'self'" in r.headers["content-security-policy"]
    assert 'id="search-form"' in r.text and "/static/app.js" in r.text
    js = client.get("/static/app.js")
    assert js.status_code == 200 and "highlight" in js.text and ".innerHTML" not in js.text
    assert client.get("/static/style.css").status_code == 200
    assert client.get("/static/../settings.py").status_code == 404
    assert "/" not in client.get("/openapi.json").json()["paths"]


def test_favicon_is_served_not_a_404(client):
    for path in ("/favicon.ico", "/static/favicon.svg"):
        r = client.get(path)
        assert r.status_code == 200 and r.headers["content-type"].startswith("image/svg+xml") and "<svg" in r.text
    assert 'rel="icon"' in client.get("/").text


class Dom(HTMLParser):
    """Collects hits, marks and stage-score cells from a dumped DOM."""

    def __init__(self):
        super().__init__()
        self.hits, self.marks, self.stage_cells, self.errors = 0, [], [], []
        self._in = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "li" and a.get("class") == "hit":
            self.hits += 1
        elif tag == "mark":
            self._in = "mark"
        elif tag == "td" and a.get("class") == "stage-score":
            self.stage_cells.append(a.get("data-stage"))
        elif tag == "p" and a.get("id") == "error":
            self._in = "error"

    def handle_data(self, data):
        if self._in == "mark":
            self.marks.append(data)
        elif self._in == "error" and data.strip():
            self.errors.append(data)

    def handle_endtag(self, tag):
        if tag in ("mark", "p"):
            self._in = None


@pytest.fixture
def live_server(tiny_engine):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(Settings(collections=["tiny"]), engine=tiny_engine),
                                           host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline, "server did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(10)


def render(url: str, tmp_path, extra_flags: tuple[str, ...] = ()) -> str:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if chromium is None:
        pytest.skip("chromium is not installed (apt-get install -y chromium)")
    cmd = [chromium, *CHROMIUM_FLAGS, *extra_flags, f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=15000",
           "--dump-dom", url]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=90)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout


@pytest.mark.slow
def test_chromium_renders_highlighted_results_with_stage_scores(live_server, tmp_path):
    html = render(f"{live_server}/?q={quote('sunlight ocean tides')}&pipeline=bm25&k=3", tmp_path)
    assert 'data-searched="1"' in html, html[-3000:]
    dom = Dom()
    dom.feed(html)
    assert dom.errors == []
    assert dom.hits == 3
    assert len(dom.marks) >= 3 and {m.lower() for m in dom.marks} == {"sunlight", "ocean", "tides"}
    assert dom.stage_cells == ["bm25"] * 3
    assert re.search(r'<span class="title"><mark>Tides</mark></span>', html)
    assert "3 results from bm25 on tiny" in html


@pytest.mark.slow
def test_chromium_shows_errors_and_escapes_markup(live_server, tmp_path):
    html = render(f"{live_server}/?q={quote('<img src=x onerror=alert(1)> volcano')}&pipeline=nope", tmp_path)
    dom = Dom()
    dom.feed(html)
    assert any("404" in e and "unknown pipeline" in e for e in dom.errors), dom.errors
    assert "<img src" not in html.split('id="results"')[1]


def test_api_docs_need_no_cdn(client):
    for path in ("/docs", "/redoc"):
        html = client.get(path).text
        assert "cdn." not in html and "https://" not in html.replace("https://fastapi", ""), path
        for asset in re.findall(r'(?:src|href)="(/docs-assets/[^"]+)"', html):
            assert client.get(asset).status_code == 200, asset
    assert client.get("/docs-assets/swagger-ui-bundle.js").headers["content-type"].startswith(("text/javascript", "application/javascript"))


@pytest.mark.slow
def test_chromium_renders_the_api_docs_offline(live_server, tmp_path):
    offline = ("--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",)  # any CDN request would fail
    html = render(f"{live_server}/docs", tmp_path, offline)
    assert 'class="swagger-ui' in html, html[-2000:]
    assert 'data-path="/search"' in html and 'data-path="/rerank"' in html
