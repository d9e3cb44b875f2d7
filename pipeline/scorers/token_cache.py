"""Passage token ids kept across requests, so that a query tokenizes only what it has not seen.

A reranked passage recurs: across queries (SciFact's BM25 top-100 of the 300 test queries hold 29,966
pairs but far fewer distinct passages) and across requests. The cache maps a passage's **text** to its
word-piece ids (no special tokens, cut to ``max_length``, as the tokenizer gave them), least recently
used out first. Keyed by the text itself, not a document id: a new index version that changes a
document's text misses on its own, and one that keeps it reuses the ids (the ids depend only on the
text and the tokenizer, which belongs to the scorer holding the cache).

Example::

    cache = TokenCache(100_000)
    cache.put_many({"a passage": np.array([1037, 6019], dtype=np.int32)})
    hits = cache.get_many(["a passage", "another"])   # {"a passage": array([1037, 6019])}
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Iterable, Mapping

import numpy as np


class TokenCache:
    """A thread-safe LRU of ``text -> ids`` holding at most ``capacity`` texts (0: holds nothing)."""

    def __init__(self, capacity: int):
        self.capacity = max(int(capacity), 0)
        self._items: OrderedDict[str, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = self.misses = 0

    def __len__(self) -> int:
        return len(self._items)

    def get_many(self, texts: Iterable[str]) -> dict[str, np.ndarray]:
        """The cached ids of those ``texts`` that are cached (each marked recently used)."""
        out: dict[str, np.ndarray] = {}
        if not self.capacity:
            return out
        with self._lock:
            items = self._items
            for t in texts:
                ids = items.get(t)
                if ids is None:
                    self.misses += 1
                else:
                    items.move_to_end(t)
                    out[t] = ids
            self.hits += len(out)
        return out

    def put_many(self, table: Mapping[str, np.ndarray]) -> None:
        """Add (or refresh) ``table``'s entries; the least recently used go past ``capacity``. The arrays
        are copied, so a view into a larger tokenized slice does not keep the whole slice alive."""
        if not self.capacity:
            return
        with self._lock:
            items = self._items
            for t, ids in table.items():
                items[t] = np.array(ids, copy=True)
                items.move_to_end(t)
            while len(items) > self.capacity:
                items.popitem(last=False)

    def stats(self) -> dict[str, int]:
        return {"texts": len(self._items), "capacity": self.capacity, "hits": self.hits, "misses": self.misses}
