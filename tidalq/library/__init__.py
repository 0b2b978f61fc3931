"""The library: where verified files go and how they get there (editions, the publisher,
durable writes). The pipeline hands a verified staging file to the :class:`~tidalq.library.
publisher.Publisher` and nothing else of it touches the library."""
