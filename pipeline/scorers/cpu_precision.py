"""CPU precision probes: which precision ``precision: auto`` picks, measured once per process.

Small timed matrix products decide between bf16, int8 and fp32 on this CPU, because instruction-set
flags alone mislead (a 2-core Xeon reporting AVX512-BF16 ran bf16 at 0.78x fp32).
"""

from __future__ import annotations

import functools
import time


def default_precision(device: str) -> str:
    """``precision: auto``: bf16 on a GPU or a CPU with native bf16, else fp32.

    int8 is never the default. Torch's dynamic quantization lost 0.036-0.110 nDCG@10 (one activation
    scale per batch); the per-token W8A8 path that replaced it (:mod:`pipeline.scorers.int8_linear`) runs
    1.94x ``CrossEncoder.predict`` and lost 0.001 on 20 SciFact test queries, but 0.0075 on the
    regression matrix's bm25>>ce (50 queries; results/2026-11-28-ce-cpu-w8a8).
    """
    return "bf16" if device.startswith("cuda") or cpu_has_fast_bf16() else "fp32"


@functools.cache
def cpu_has_fast_bf16() -> bool:
    """Whether bf16 matrix products are clearly faster than fp32 on this CPU: oneDNN bf16 support,
    AVX512, and a measured :func:`cpu_bf16_speedup` of at least 1.3 (checked once per process).

    There bf16 is both faster than int8 dynamic quantization and lossless for ranking (measured
    on SciFact: score correlation with fp32 0.99996, 2.2x fp32 speed, vs 0.90-0.95 and 1.7x for
    int8). The instruction-set flags alone are not enough: a 2-core Xeon that reports AVX512-BF16
    (2026-11-28 night) ran the bf16 scorer at 0.78x its fp32 speed. Elsewhere ``precision: auto``
    falls back to fp32 (see :func:`default_precision`).
    """
    import torch

    try:
        native = (torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()
                  and "AVX512" in torch.backends.cpu.get_cpu_capability())
    except (AttributeError, RuntimeError):  # pragma: no cover - older torch builds
        return False
    return bool(native) and cpu_bf16_speedup() >= 1.3


def cpu_bf16_speedup(repeats: int = 5) -> float:
    """fp32 time / bf16 time of one cross-encoder-sized product (2,048 x 384 by 384 x 1,536; best of ``repeats``)."""
    import torch

    x, w = torch.randn(2048, 384), torch.randn(1536, 384)
    xb, wb = x.bfloat16(), w.bfloat16()
    return (best_time(lambda: torch.nn.functional.linear(x, w), repeats)
            / best_time(lambda: torch.nn.functional.linear(xb, wb), repeats))


def best_time(fn, repeats: int) -> float:
    """Shortest of ``repeats`` timed calls of ``fn`` after one warm-up call (oneDNN primitive creation)."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


INT8_MIN_SPEEDUP = 1.5
"""``precision: int8`` runs int8 only where its products measured at least this much faster than fp32's."""


@functools.cache
def cpu_int8_speedup(repeats: int = 3) -> float:
    """fp32 time / int8 time of one cross-encoder-sized product (512 x 384 by 384 x 1,536; best of ``repeats``),
    the int8 one through ``torch._int_mm`` as :class:`pipeline.scorers.int8_linear.Int8Linear` runs it; once per process.

    Where oneDNN has int8 kernels (VNNI) this is several times fp32; on a CPU with AVX2 only (an AMD
    EPYC, 2026-11-28) ``_int_mm`` fell back to a plain loop: 0.03-0.04x fp32, and the int8 scorer took
    191 s for 100 pairs against 7.6 s in fp32. The constructor then uses fp32 instead. 0.0 where this
    torch build has no CPU ``_int_mm`` at all.
    """
    import torch

    gen = torch.Generator().manual_seed(0)
    x = torch.randint(-127, 128, (512, 384), dtype=torch.int8, generator=gen)
    w = torch.randint(-127, 128, (1536, 384), dtype=torch.int8, generator=gen)
    xf, wf = x.float(), w.float()
    try:
        int8 = best_time(lambda: torch._int_mm(x, w.t()), repeats)
    except (AttributeError, RuntimeError, NotImplementedError):  # pragma: no cover - torch builds without it
        return 0.0
    return best_time(lambda: torch.nn.functional.linear(xf, wf), repeats) / int8




def default_batch_size(device: str) -> int:
    """``batch_size: null``: 512 on a GPU, 8 on a CPU (``device`` as resolved by the scorer)."""
    return 512 if device.startswith("cuda") else 8
