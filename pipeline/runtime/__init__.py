"""Process-level runtime support: the JVM, the glibc allocator, the tokenizer child process, micro-batching."""
