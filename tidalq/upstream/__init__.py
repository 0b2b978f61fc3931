"""The hifi-api upstream: the HTTP client (``api``) and manifest decoding (``manifest``)."""
