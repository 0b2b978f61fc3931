"""The fake upstream: a hifi-api look-alike with real media, for tests, benchmarks and
trying tidalq offline (``python -m tidalq.testing.fakeapi --port 8080``)."""
