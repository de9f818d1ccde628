"""What a hostile server costs ``classifier predict --remote``: time and memory per answer.

    python3 -m bench.hostile_cli [--seconds 60]

For each answer of ``HOSTILE_ANSWERS`` (tests/servers.py: an endless answer, a slow drip, a
crop "abc", a heatmap that is not a PNG, no ``weights``) a stub server answers every request
with it while the CLI classifies two photos with ``--explain``, ``--csv`` and ``--json``,
under GNU time and killed after ``--seconds``. Prints the wall time, the CLI's peak resident
size, its exit status and the CSV report's error codes ("no report" if it wrote none).
The CLI reads the whole answer within the connect and read timeouts together; this runs it
with its defaults (3 + 30 s) unless CLASSIFIER_REMOTE_READ_TIMEOUT is set.
"""

from __future__ import annotations

import argparse
import csv
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.servers import HOSTILE_ANSWERS, StubServer, hostile_handler

ROOT = Path(__file__).resolve().parent.parent

PHOTOS = [ROOT / "static" / "examples" / name for name in ("chelsea.jpg", "coffee.jpg")]


def measure(kind: str, seconds: float, folder: Path) -> str:
    """One line: the CLI against a server that answers ``kind``."""
    peak, report = folder / f"{kind}.kib", folder / f"{kind}.csv"
    command = ["/usr/bin/time", "-o", str(peak), "-f", "%M", sys.executable, "-m", "classifier", "predict",
               *map(str, PHOTOS), "--explain", str(folder / "heatmaps"), "--csv", str(report),
               "--json", str(folder / f"{kind}.json")]
    with StubServer(hostile_handler(kind)) as server:
        started = time.monotonic()
        cli = subprocess.Popen([*command, "--remote", server.url], cwd=ROOT, start_new_session=True,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               env={**os.environ, "CLASSIFIER_RANDOM_WEIGHTS": "1", "CLASSIFIER_OFFLINE": "1"})
        try:
            status = f"exit {cli.wait(timeout=seconds)}"
        except subprocess.TimeoutExpired:
            peak_now = _group_rss_mib(cli.pid)
            os.killpg(cli.pid, signal.SIGKILL)  # GNU time and the CLI under it
            cli.wait()
            status = f"killed after {seconds:g} s ({peak_now:.0f} MiB then)"
        wall = time.monotonic() - started
    peak_mib = int(peak.read_text().split()[-1]) / 1024 if peak.exists() and peak.read_text().strip() else float("nan")
    codes = ([row["error_code"] or "ok" for row in csv.DictReader(report.open(encoding="utf-8-sig"))]
             if report.exists() else ["no report"])
    return f"{kind:<20} {wall:7.1f} s {peak_mib:9.0f} MiB  {status:<32} {' '.join(codes)}"


def _group_rss_mib(group: int) -> float:
    """The resident size of the processes of ``group`` now (the CLI killed runs no GNU time report)."""
    total = 0
    for status in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = status.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == group:  # pgrp, after state and ppid
            total += int(fields[21]) * os.sysconf("SC_PAGE_SIZE")  # rss, in pages
    return total / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="kill the CLI after this long")
    args = parser.parse_args()
    print(f"{'answer':<20} {'wall':>9} {'peak RSS':>13}  {'CLI':<32} CSV error codes")
    with tempfile.TemporaryDirectory() as folder:
        for kind in HOSTILE_ANSWERS:
            print(measure(kind, args.seconds, Path(folder)), flush=True)


if __name__ == "__main__":
    main()
