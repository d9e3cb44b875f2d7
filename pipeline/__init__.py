"""Retrieval and reranking pipelines.

Subpackages, from the bottom up:

* ``pipeline.core``: query/hit types, the stage protocol, typed errors, config schemas, builders' context.
* ``pipeline.storage``: versioned index folders, the document store, BEIR collections.
* ``pipeline.runtime``: process-level workarounds (JVM, allocator, tokenizer child process, micro-batching).
* ``pipeline.encoders``: bi-encoders that turn texts into vectors (dense retrieval, indexing).
* ``pipeline.scorers``: rerankers as functions of texts (``score(query, passages)``), and ``passage_text``.
* ``pipeline.stages``: retrievers, fusion and the rerank stage, built from configs.
* ``pipeline.registry``: stage types by name; builds pipelines from a validated config.
"""

from pipeline.runtime.logging_quiet import quiet_optional_probes as _quiet_optional_probes

# Every entry point (indexer, training, eval, service) imports this package before faiss: faiss's
# loader then logs its AVX512 probe ("ModuleNotFoundError ...") at INFO, which reads as a failure.
_quiet_optional_probes()
