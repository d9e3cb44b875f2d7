"""Typed errors of the pipeline core.

Every error a user can cause maps to one class here; the service maps each class
to an HTTP status once (``service/errors.py``) and the CLIs print the message.
"""

from __future__ import annotations


class PipelineError(Exception):
    """Base class of every error raised by the pipeline core."""


class ConfigError(PipelineError):
    """A pipeline or index configuration is invalid (the message names the field)."""


class UnknownPipelineError(PipelineError):
    """A request named a pipeline that is not configured or not loaded."""


class UnknownCollectionError(PipelineError):
    """A request named a collection that the service does not serve."""


class IndexNotFoundError(PipelineError):
    """No published index exists where one was expected. Run the indexer first."""


class IndexCorruptError(PipelineError):
    """A published index is incomplete, truncated or does not match its manifest."""


class IndexMismatchError(PipelineError):
    """An index was built with another model, dimension or analyzer than the stage expects."""


class CollectionError(PipelineError):
    """A collection on disk is malformed: empty, duplicate ids, bad JSON lines."""


class StageError(PipelineError):
    """A stage failed while processing a batch (wraps the underlying exception)."""


class StageContractError(PipelineError):
    """A stage was called the wrong way (e.g. a reranker without candidates)."""


class ModelNotFoundError(PipelineError):
    """A stage's trained model is not where the config says. The message names the command that builds it."""


class RerankTimeoutError(StageError):
    """The reranker did not finish within its time budget."""
