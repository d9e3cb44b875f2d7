"""Stage implementations: retrievers, fusion and reranking. Importing this package registers every type."""

from pipeline.stages import bm25, by_language, cross_encoder, dense, fusion, listwise, modular_reranker, sharded

__all__ = ["bm25", "by_language", "cross_encoder", "dense", "fusion", "listwise", "modular_reranker", "sharded"]
