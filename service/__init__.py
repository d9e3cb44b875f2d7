"""The HTTP search service: FastAPI app over the configured pipelines."""
