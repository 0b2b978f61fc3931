"""tidalq: a server-side background download queue for TIDAL music.

A daemon (``tidalq daemon``) owns a persistent job queue and a pool of workers that
download tracks and albums into a music library; the ``tidalq`` CLI talks to it over a
Unix socket with JSON-RPC. See README.md for the tour.
"""

__version__ = "0.1.0"
