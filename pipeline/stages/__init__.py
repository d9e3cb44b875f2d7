"""Stage implementations: retrievers, fusion and reranking. Importing this package registers every type."""

from pipeline.stages import bm25, cross_encoder, dense, fusion, listwise, modular_reranker, sharded

__all__ = ["bm25", "cross_encoder", "dense", "fusion", "listwise", "modular_reranker", "sharded"]
