"""Where indexes, documents and collections live on disk: versioned index folders, the document store, BEIR files."""
