"""``python -m tidalq`` is ``tidalq``."""

from tidalq.cli import main

main()
