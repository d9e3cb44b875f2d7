"""Training jobs for the multilingual reranker's language and ranking modules (LoRA adapters, SFTMs)."""
