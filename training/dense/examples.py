"""Training examples for contrastive bi-encoder training, and batches without false in-batch negatives."""

from __future__ import annotations

import random
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Example:
    """A query, its positive text, optional hard negatives.

    ``group`` names where the pair came from (a document or a query id): two examples of the
    same group never share a batch, since each one's positive would be a false negative of the
    other. ``domain`` routes the MoE encoder (None for single-domain models).
    """

    query: str
    positive: str
    negatives: tuple[str, ...] = ()
    group: str = ""
    domain: str | None = None
    meta: dict = field(default_factory=dict, compare=False, hash=False)


def make_batches(examples: list[Example], batch_size: int, rng: random.Random) -> list[list[Example]]:
    """Shuffle and cut into batches of one domain each, never two examples of one group in a batch.

    Examples that would repeat a group wait for the next batch; batches of different domains are
    interleaved in random order. A last, smaller batch per domain is kept if it has >= 2 examples.
    """
    if batch_size < 2:
        raise ValueError("in-batch negatives need batch_size >= 2")
    by_domain: dict[str | None, list[Example]] = {}
    for ex in examples:
        by_domain.setdefault(ex.domain, []).append(ex)
    batches: list[list[Example]] = []
    for domain in sorted(by_domain, key=str):
        pool = by_domain[domain][:]
        rng.shuffle(pool)
        while pool:
            batch, groups, rest = [], set(), []
            for ex in pool:
                if len(batch) < batch_size and (not ex.group or ex.group not in groups):
                    batch.append(ex)
                    groups.add(ex.group)
                else:
                    rest.append(ex)
            pool = rest
            if len(batch) >= 2:  # a lone example (its group blocks all the others) is dropped
                batches.append(batch)
    rng.shuffle(batches)
    return batches
