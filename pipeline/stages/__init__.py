"""Stage implementations: retrievers, rerankers and fusion. Each registers itself."""
