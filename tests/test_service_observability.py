"""/metrics: process and Python collectors, route labels for every served path, one vocabulary of error kinds;
JSON log lines without ANSI codes."""

from __future__ import annotations

import json
import logging

from fastapi.testclient import TestClient

from service.app import create_app
from service.logging_config import JsonFormatter
from service.settings import Settings


def test_metrics_have_process_and_python_collectors(client):
    text = client.get("/metrics").text
    for name in ("process_resident_memory_bytes", "process_cpu_seconds_total", "python_info", "python_gc_collections_total"):
        assert name in text, name


def test_docs_openapi_and_413_are_labelled_by_route(tiny_engine):
    settings = Settings(collections=["tiny"], max_body_bytes=1024)
    with TestClient(create_app(settings, engine=tiny_engine)) as c:
        c.get("/docs")
        c.get("/openapi.json")
        c.get("/docs-assets/swagger-ui.css")
        assert c.post("/search", content=b"x" * 5000, headers={"content-type": "application/json"}).status_code == 413
        c.get("/no/such/path")
        text = c.get("/metrics").text
    for route, status in (("/docs", 200), ("/openapi.json", 200), ("/docs-assets", 200), ("/search", 413), ("unmatched", 404)):
        method = "POST" if status == 413 else "GET"
        assert f'search_http_requests_total{{method="{method}",route="{route}",status="{status}"}} 1.0' in text, (route, status)


def test_error_kinds_share_one_vocabulary(client):
    client.post("/search", json={"query": "x", "pipeline": "nope"})
    client.post("/search", json={"query": ""})
    text = client.get("/metrics").text
    kinds = {line.split('kind="')[1].split('"')[0] for line in text.splitlines() if line.startswith("search_errors_total{")}
    assert {"not_found", "validation"} <= kinds and all(k.islower() and "error" not in k for k in kinds), kinds


def test_json_lines_drop_uvicorn_color_message():
    record = logging.makeLogRecord({"msg": "Started server process [%d]", "args": (7,), "levelname": "INFO",
                                    "color_message": "Started server process [\x1b[36m%d\x1b[0m]"})
    line = JsonFormatter().format(record)
    assert "\x1b" not in line and "\\u001b" not in line and json.loads(line)["message"] == "Started server process [7]"


def test_faiss_probe_lines_are_quieted_but_warnings_pass(caplog):
    from pipeline.runtime.logging_quiet import quiet_optional_probes

    quiet_optional_probes()
    probe = logging.getLogger("faiss.loader")
    with caplog.at_level(logging.INFO):
        probe.info("Could not load library with AVX512 support due to:\nModuleNotFoundError(...)")
        probe.warning("a real faiss problem")
    assert [r.getMessage() for r in caplog.records if r.name == "faiss.loader"] == ["a real faiss problem"]


def test_no_faiss_probe_line_from_any_entry_point_that_imports_pipeline():
    """The indexer and the training jobs printed faiss's AVX512 probe (a ModuleNotFoundError) at INFO."""
    import subprocess
    import sys

    code = "import logging; logging.basicConfig(level=logging.INFO); import pipeline, faiss"
    err = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120).stderr
    assert "ModuleNotFoundError" not in err and "Could not load library" not in err
