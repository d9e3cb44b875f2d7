"""The indexer job: batch-builds indexes of a collection and publishes them atomically."""
