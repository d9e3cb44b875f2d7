"""Rerankers as functions of texts: ``PairScorer.score(query, passages)``, ``ListwiseScorer.rank``, ``passage_text``."""
