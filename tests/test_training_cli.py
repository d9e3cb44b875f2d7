"""``python -m training``: the overview is fast (no job module, no torch) and plain text."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import REPO


def test_help_imports_no_job_and_no_torch():
    code = ("import sys; from training.__main__ import main\ntry: main(['--help'])\nexcept SystemExit: pass\n"
            "print('HEAVY' if 'torch' in sys.modules or any(m.endswith('.cli') for m in sys.modules) else 'LIGHT')")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60).stdout
    assert out.strip().endswith("LIGHT")
    assert "cross-encoder" in out and "``" not in out and "issue" not in out


def test_unknown_job_is_a_usage_error(capsys):
    from training.__main__ import main

    try:
        main(["cross-encodr"])
    except SystemExit as exc:
        assert exc.code == 2
    assert "invalid choice: 'cross-encodr'" in capsys.readouterr().err
