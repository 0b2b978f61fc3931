"""CLI latency: ``tidalq status`` against a daemon holding 10,000 jobs, median of 10 runs.

    python bench/status.py [--jobs 10000] [--runs 10]

Starts a control-only daemon (``--no-workers``) on a temporary SQLite store, submits the
jobs over the socket in batches, then times whole ``tidalq status`` processes, with their
modules' bytecode as an install has it (``PYTHONDONTWRITEBYTECODE`` dropped, one untimed
run first). Prints one JSON line.
"""

from __future__ import annotations

import sys
from pathlib import Path

# bench/queue.py would shadow the stdlib's queue: keep this folder off sys.path.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).parent.resolve()]

import argparse
import json
import shutil
import statistics
import subprocess
import tempfile
import time

from tidalq.client import DaemonClient
from tidalq.testing.localservers import installed_cli_env


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="tidalq-status-") as tmp:
        sock = Path(tmp) / "run" / "tidalq.sock"
        env = {**installed_cli_env(), "TIDALQ_SOCKET": str(sock),
               "TIDALQ_STORE": f"sqlite:///{tmp}/q.db", "TIDAL_DOWNLOADS": f"{tmp}/lib",
               "XDG_CONFIG_HOME": f"{tmp}/cfg"}
        daemon = subprocess.Popen([sys.executable, "-m", "tidalq", "daemon", "--no-workers"],
                                  env=env, stderr=subprocess.DEVNULL)
        try:
            client = DaemonClient(sock, timeout_s=120)
            deadline = time.monotonic() + 20
            while not sock.exists() and time.monotonic() < deadline:
                time.sleep(0.05)
            for start in range(0, args.jobs, 1000):
                batch = [{"type": "track", "trackId": start + i + 1}
                         for i in range(min(1000, args.jobs - start))]
                client.call("queue.submit", {"jobs": batch})
            exe = shutil.which("tidalq")
            cmd = [exe] if exe else [sys.executable, "-m", "tidalq"]
            subprocess.run([*cmd, "status"], env=env, check=True, capture_output=True)
            times = []
            for _ in range(args.runs):
                began = time.perf_counter()
                subprocess.run([*cmd, "status"], env=env, check=True, capture_output=True)
                times.append((time.perf_counter() - began) * 1000)
            queued = client.call("queue.stats")["queue"]["queued"]
        finally:
            daemon.terminate()
            daemon.wait(30)
    print(json.dumps({"jobs": queued, "runs": args.runs,
                      "status_ms_median": round(statistics.median(times), 1),
                      "status_ms_min": round(min(times), 1),
                      "status_ms_max": round(max(times), 1)}), flush=True)


if __name__ == "__main__":
    main()
