"""Where the API server's threads spend a query under concurrent load: py-spy samples the
server process while N clients send retrieval-only queries, then the samples are folded into
shares of the threads' *active* time (samples not waiting on a condition, a socket or a queue).

    .venv/bin/python -m bench.profile_query_server --points 1800 --clients 32 --seconds 15

Same server and load as ``bench.query_latency`` (CISI chunks replicated to ``--points``).
py-spy (a dev dependency) attaches to the server's pid, so it needs ptrace permission (root, or
``kernel.yama.ptrace_scope`` 0). Prints one JSON line: the load's latency figures, the server's
and the client's CPU seconds, and the top frames by inclusive share of active samples.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path

from bench.common import ServedStack, cisi_queries, populate
from bench.query_latency import base_records, load

# Leaf frames that mean "this thread is waiting", not working.
IDLE_LEAVES = (
    "Condition.wait",
    "EpollSelector.select",
    "Event.wait",
    "Queue.get",
    "MemoryObjectReceiveStream.receive",
)


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def fold(raw: Path, rate: int, top: int) -> dict[str, object]:
    """Inclusive share of each frame (function, without line) over the active samples."""
    inclusive: Counter[str] = Counter()
    active = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames = stack.split(";")
        if not frames or frames[-1].startswith(IDLE_LEAVES):
            continue
        n = int(count)
        active += n
        for name in {f.split(" (")[0] for f in frames}:
            inclusive[name] += n
    return {
        "active_thread_seconds": round(active / rate, 2),
        "frames": [
            {"frame": name, "share": round(n / active, 3)} for name, n in inclusive.most_common(top)
        ]
        if active
        else [],
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--points", type=int, default=1800)
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--seconds", type=int, default=15)
    ap.add_argument("--rate", type=int, default=200, help="py-spy samples per second")
    ap.add_argument("--top", type=int, default=40)
    ap.add_argument("--query-batching", choices=["on", "off"], default="on")
    args = ap.parse_args()
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(spy).exists():
        sys.exit("py-spy is not installed (pip install -e '.[dev]')")

    from perimeter.settings import Settings

    tmp = Path(tempfile.mkdtemp(prefix="perimeter-bench-profile-"))
    settings = Settings(
        storage={"data_dir": tmp / "data"},
        broker={"url": "redis://127.0.0.1:6379/14", "queue": f"bench.{uuid.uuid4().hex[:8]}"},
        llm={"base_url": "http://127.0.0.1:9/v1", "model": "smollm2-135m-instruct"},
        embedding={"micro_batch_queries": args.query_batching == "on"},
    )
    populate(settings, args.points, 0, base_records(settings))
    raw = tmp / "py-spy.txt"
    with ServedStack(settings, worker_concurrency=0) as stack:
        load(stack.url, cisi_queries(), 1, 2)  # warm
        pid = stack.proc.pid
        command = f"record --duration {args.seconds} --rate {args.rate} --format raw --idle"
        sampler = subprocess.Popen(
            [spy, *command.split(), "--nonblocking", "--pid", str(pid), "-o", str(raw)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        server0, client0, t0 = _cpu_seconds(pid), time.process_time(), time.monotonic()
        result = load(stack.url, cisi_queries(), args.clients, args.seconds)
        server1, client1, wall = _cpu_seconds(pid), time.process_time(), time.monotonic() - t0
        sampler.wait(timeout=args.seconds + 60)
    out = {
        "load": result,
        "wall_s": round(wall, 2),
        "server_cpu_s": round(server1 - server0, 2),
        "client_cpu_s": round(client1 - client0, 2),
        "profile": fold(raw, args.rate, args.top),
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
