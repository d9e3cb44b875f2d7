"""FIRST listwise reranker training: teacher rankings, first-token ranking loss, LoRA."""
