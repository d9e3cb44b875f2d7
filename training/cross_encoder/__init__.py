"""Cross-encoder reranker training: mining, curriculum, losses, training loop, model card.

``python -m training cross-encoder mine|train|ablation --help``; see ``cli.py``.
"""
