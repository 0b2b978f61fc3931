"""Servers the benchmarks start on this machine: a free loopback port, and a private
``redis-server`` that keeps nothing on disk and stops with the block."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager


def installed_cli_env() -> dict[str, str]:
    """This environment, less what would make every CLI run compile tidalq's modules
    again (``PYTHONDONTWRITEBYTECODE``): an installed CLI starts from its bytecode."""
    return {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def private_redis() -> Iterator[str | None]:
    """The URL of a fresh redis-server on a free port, or None when none is installed."""
    if not shutil.which("redis-server"):
        yield None
        return
    port = free_port()
    redis = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1",
                              "--save", "", "--appendonly", "no"], stdout=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        redis.terminate()
        redis.wait(10)
