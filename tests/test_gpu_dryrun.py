"""``gpu/dryrun.sh``: a GPU job's training command lines are parsed here, before any device call."""

from __future__ import annotations

import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _dryrun(tmp_path, body: str) -> subprocess.CompletedProcess:
    job = tmp_path / "job.sh"
    job.write_text("set -uo pipefail\n" + body)
    return subprocess.run(["bash", "gpu/dryrun.sh", str(job)], cwd=ROOT, capture_output=True, text=True, timeout=120)


def test_a_doubled_option_fails_before_the_gpu(tmp_path):
    done = _dryrun(tmp_path, "python3 -m training cross-encoder train --out x --variants --variants listwise\n")
    assert done.returncode == 1
    assert "FAILS TO PARSE" in done.stdout and "--variants" in done.stdout


def test_good_command_lines_pass_and_nothing_runs(tmp_path):
    marker = tmp_path / "ran"
    done = _dryrun(tmp_path, f"python3 -m training cross-encoder blend --dumps {tmp_path}\n"
                             f"python3 -c 'open(\"{marker}\", \"w\")'\n")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "every training command line parses" in done.stdout
    assert not marker.exists()  # the stand-in python3 executes nothing
