"""The tokenizer child process (pipeline/runtime/tokenize_worker.py): results, and a child that fails to start."""

import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

SCRIPT = textwrap.dedent("""
    import sys
    sys.path.insert(0, {repo!r})
    from tokenizers import Tokenizer, models, pre_tokenizers
    from pipeline.runtime.tokenize_worker import TokenizerProcess


    def main():
        vocab = {{f"w{{i}}": i for i in range(20000)}}  # a tokenizer JSON far larger than a pipe's 64 KB
        vocab["[UNK]"] = len(vocab)
        tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
        tok.pre_tokenizer = pre_tokenizers.Whitespace()
        assert len(tok.to_str()) > 200_000
        worker = TokenizerProcess(tok.to_str())
        try:
            print("RESULT", worker.submit(["w1 w2", "w3"]).result(timeout=60), flush=True)
        except Exception as exc:
            print("FAILED", type(exc).__name__, flush=True)
        worker.close()


    if __name__ == "__main__":
        main()
""").format(repo=str(REPO))


def _run(args, **kwargs):
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=60, **kwargs)


def test_child_tokenizes_with_a_large_tokenizer(tmp_path):
    script = tmp_path / "tokenize_job.py"
    script.write_text(SCRIPT)
    out = _run([str(script)])
    assert "RESULT {'w1 w2': array([1, 2], dtype=int32), 'w3': array([3], dtype=int32)}" in out.stdout, out.stderr[-2000:]


def test_child_that_cannot_start_fails_the_call_instead_of_hanging():
    """Run from ``python -``, the spawned child cannot load ``__main__`` and exits at once; the
    caller must get BrokenProcessPool (the scorer then tokenizes in-process), not block forever."""
    out = _run(["-"], input=SCRIPT)
    assert "FAILED BrokenProcessPool" in out.stdout, (out.stdout, out.stderr[-2000:])
