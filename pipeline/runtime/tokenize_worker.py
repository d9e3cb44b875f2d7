"""Tokenization in a child process, for scorers that keep a GPU busy from the main process.

Turning the Rust tokenizer's ``Encoding`` objects into arrays is Python work that holds the GIL.
In a helper *thread* it stalls the thread that queues GPU work: every PyTorch call releases the
GIL and then waits up to the switch interval (5 ms) to get it back while the helper runs (the
"convoy effect"), so tokenization and forward passes ran one after the other. In a child process
the two truly overlap; only flat arrays cross the pipe.

Imports nothing from the project (the child starts with ``spawn`` and should start fast). Example::

    worker = TokenizerProcess(backend.to_str())          # a tokenizers.Tokenizer, as JSON
    table = worker.submit(["first text", "second"]).result()   # {text: np.ndarray of ids}
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import tempfile
import weakref
from concurrent.futures import Future, ProcessPoolExecutor
from itertools import chain
from typing import Sequence

import numpy as np

logger = logging.getLogger(__name__)

_TOKENIZER = None  # the child's tokenizer, set by _init


def _init(tokenizer_path: str) -> None:
    global _TOKENIZER
    from tokenizers import Tokenizer

    _TOKENIZER = Tokenizer.from_file(tokenizer_path)


def tokenize_flat(texts: Sequence[str], tokenizer=None) -> tuple[np.ndarray, np.ndarray]:
    """``(ids of every text concatenated (int32), length of each text)``; no special tokens."""
    tok = tokenizer or _TOKENIZER
    encode = getattr(tok, "encode_batch_fast", tok.encode_batch)
    encodings = encode(list(texts), add_special_tokens=False)
    lengths = np.fromiter((len(e) for e in encodings), dtype=np.int64, count=len(encodings))
    flat = np.fromiter(chain.from_iterable(e.ids for e in encodings), dtype=np.int32, count=int(lengths.sum()))
    return flat, lengths


def split_flat(texts: Sequence[str], flat: np.ndarray, lengths: np.ndarray) -> dict[str, np.ndarray]:
    """``{text: its ids}`` (views into ``flat``)."""
    ends = np.cumsum(lengths)
    return {t: flat[e - n : e] for t, n, e in zip(texts, lengths.tolist(), ends.tolist(), strict=True)}


class TokenizerProcess:
    """One child process that tokenizes batches of texts; :meth:`submit` returns a future of ``{text: ids}``."""

    def __init__(self, tokenizer_json: str):
        # The tokenizer travels as a file, not as an argument: the parent writes a new child's
        # arguments into a pipe the child reads only once it has started, and a child that fails
        # to start (e.g. a parent run from ``python -``, whose __main__ it cannot load) would leave
        # the parent blocked on a pipe it cannot fill (a BERT tokenizer is ~700 KB, the pipe 64 KB).
        # With a short path the child's failure reaches the caller as BrokenProcessPool instead.
        handle = tempfile.NamedTemporaryFile("w", suffix=".json", prefix="tokenizer-", delete=False)
        with handle:
            handle.write(tokenizer_json)
        self._path = handle.name
        self._pool = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"),
                                         initializer=_init, initargs=(self._path,))
        self._cleanup = weakref.finalize(self, _remove, self._path)

    def submit(self, texts: Sequence[str]) -> Future:
        texts = list(texts)
        inner = self._pool.submit(tokenize_flat, texts)
        outer: Future = Future()

        def done(f: Future) -> None:
            try:
                outer.set_result(split_flat(texts, *f.result()))
            except BaseException as exc:  # noqa: BLE001 - handed to the waiting caller
                outer.set_exception(exc)

        inner.add_done_callback(done)
        return outer

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._cleanup()  # the child read it when it started


def _remove(path: str) -> None:
    with contextlib.suppress(OSError):
        os.unlink(path)
