"""``python -m service``: the port is checked before anything loads; --help names the settings; default pipelines."""

from __future__ import annotations

import socket
import subprocess
import sys

from pipeline.registry import load_config
from service.__main__ import main, port_problem
from tests.conftest import REPO


def test_a_taken_port_fails_at_once_before_loading(capsys, monkeypatch):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert "already in use" in port_problem("127.0.0.1", port)
        loaded = []
        monkeypatch.setattr("service.app.create_app", lambda *a, **k: loaded.append(1))
        assert main(["--port", str(port)]) == 2
        assert not loaded  # refused before the app (pipelines, models) is built; no wall-clock bound: CI is noisy
    assert f"port {port} on 127.0.0.1 is already in use" in capsys.readouterr().err


def test_a_free_port_has_no_problem():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    assert port_problem("127.0.0.1", port) is None


def test_help_lists_the_search_settings_without_loading_the_app():
    code = "import sys; from service.__main__ import main\ntry: main(['--help'])\nexcept SystemExit: pass\n" \
           "print('LOADED' if 'service.app' in sys.modules or 'torch' in sys.modules else 'LIGHT')"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60).stdout
    for name in ("SEARCH_PIPELINES", "SEARCH_COLLECTIONS", "SEARCH_API_KEY_HASHES", "SEARCH_REDIS_URL", "SEARCH_JVM_HEAP"):
        assert name in out
    assert "``" not in out and out.strip().endswith("LIGHT")


def test_default_pipelines_are_those_serve_sh_starts():
    config = load_config(REPO / "configs" / "pipelines.yaml")
    served = [n for n, p in config.pipelines.items() if p.serve_by_default]
    assert served == ["bm25", "dense", "hybrid", "bm25>>ce", "hybrid>>ce"]
    assert "SEARCH_PIPELINES=" not in (REPO / "scripts" / "serve.sh").read_text().replace("SEARCH_PIPELINES='", "")


def test_a_pipeline_off_by_default_is_not_loaded_and_says_how_to_load_it(tiny_index_root):
    import pytest

    from pipeline.core.errors import UnknownPipelineError
    from pipeline.registry import parse_config
    from service.engine import Engine

    bm25 = {"stages": [{"type": "bm25", "index": "lucene"}]}
    config = parse_config({"indexes": {"lucene": {"type": "lucene"}},
                           "pipelines": {"bm25": bm25, "bm25-slow": {**bm25, "serve_by_default": False}}})
    state = Engine(config, tiny_index_root, tiny_index_root, ["tiny"]).collection("tiny")
    assert list(state.pipelines) == ["bm25"]
    with pytest.raises(UnknownPipelineError, match="name it in SEARCH_PIPELINES"):
        state.pipeline("bm25-slow")
    explicit = Engine(config, tiny_index_root, tiny_index_root, ["tiny"], pipelines=["bm25-slow"]).collection("tiny")
    assert list(explicit.pipelines) == ["bm25-slow"]
