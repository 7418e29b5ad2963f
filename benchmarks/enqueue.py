"""Enqueue benchmark: graphile-worker-utils side by side with graphile-worker 0.18.0 itself.

Usage (from the repository root, after the README's set-up)::

    python benchmarks/enqueue.py [--rounds 3] [--dsn postgresql://...]

The database is the test suite's: ``--dsn``, else ``GRAPHILE_WORKER_TEST_DSN``, else a throwaway
embedded PostgreSQL 18 (the ``test`` extra). graphile-worker is the one the tests install
(``tests/node``, ``npm ci``), on the Node 22 installed with it. Every comparison runs in the
same process and database, the contenders interleaved round by round; the table shows medians
and ratios (above 1: we are faster). Nothing here is a pass/fail assertion: timings on shared
machines are noisy.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict
from psycopg_pool import ConnectionPool

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks._common import database, payload  # noqa: E402
from benchmarks.single import memory_row, single_rows  # noqa: E402
from graphile_worker_utils import JobSpec, RawJobSpec, WorkerUtils  # noqa: E402

TOTAL = 50_000
IDENTIFIER = "bench_task"
# graphile-worker 0.18.0 needs Node >= 22.18: the peer runs on the Node 22 that `npm ci` in
# tests/node installs (npm's `node` package), whatever Node the machine has.
NODE_MODULES = ROOT / "tests/node/node_modules"
PEER_NODE = NODE_MODULES / "node/bin/node"


def node_dsn(dsn: str) -> str:
    params = conninfo_to_dict(dsn)
    from urllib.parse import quote

    user = quote(str(params.get("user", "postgres")), safe="")
    password = params.get("password")
    credentials = user + (":" + quote(str(password), safe="") if password else "")
    host = str(params.get("host", "localhost"))
    port = str(params.get("port", "5432"))
    db = quote(str(params.get("dbname", "postgres")), safe="")
    if host.startswith("/"):
        return f"postgres://{credentials}@/{db}?host={quote(host, safe='')}&port={port}"
    return f"postgres://{credentials}@{host}:{port}/{db}"


class Peer:
    """benchmarks/peer.js: graphile-worker's WorkerUtils, timing itself in-process."""

    def __init__(self, dsn: str, schema: str) -> None:
        if not PEER_NODE.is_file() or not (NODE_MODULES / "graphile-worker").is_dir():
            raise SystemExit(
                f"{PEER_NODE} and tests/node/node_modules are needed: run `npm ci` in tests/node"
            )
        #: The Node.js the peer runs on (``v22.x``), for the table's header.
        self.node_version = subprocess.run(
            [str(PEER_NODE), "--version"], capture_output=True, text=True, check=True
        ).stdout.strip()
        self.process = subprocess.Popen(
            [str(PEER_NODE), str(ROOT / "benchmarks" / "peer.js"), node_dsn(dsn), schema],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

    def ask(self, **command: Any) -> float:
        assert self.process.stdin and self.process.stdout
        self.process.stdin.write(json.dumps(command) + "\n")
        self.process.stdin.flush()
        answer = self.process.stdout.readline()
        if not answer:
            raise SystemExit("benchmarks/peer.js stopped")
        return float(json.loads(answer)["seconds"])

    def close(self) -> None:
        assert self.process.stdin
        self.process.stdin.write('{"op": "quit"}\n')
        self.process.stdin.close()
        self.process.wait(timeout=30)


def timed(action: Callable[[], Any]) -> float:
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def interleaved(
    rounds: int, reset: Callable[[], None], contenders: list[Callable[[], float]]
) -> list[float]:
    """The median time of each contender over ``rounds``, the order rotating every round so
    that no contender always runs first (or right after a checkpoint)."""
    times: list[list[float]] = [[] for _ in contenders]
    for round_ in range(rounds):
        for offset in range(len(contenders)):
            index = (round_ + offset) % len(contenders)
            reset()
            times[index].append(contenders[index]())
    return [statistics.median(values) for values in times]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dsn", help="PostgreSQL to use (default: the tests' rules)")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds (median)")
    args = parser.parse_args()

    with database(args.dsn) as dsn:
        run(dsn, args.rounds)


def run(dsn: str, rounds: int) -> None:
    schema = f"gwu_bench_{uuid.uuid4().hex[:8]}"
    admin = psycopg.connect(dsn, autocommit=True)
    ident = sql.Identifier(schema)
    rows: list[tuple[str, str, str, str]] = []
    try:
        WorkerUtils(admin, schema=schema).migrate()
        peer = Peer(dsn, schema)

        def reset() -> None:
            admin.execute(sql.SQL("truncate {}._private_jobs").format(ident))

        utils = WorkerUtils(admin, schema=schema)
        rows.extend(bulk_rows(admin, utils, peer, schema, rounds, reset))
        rows.extend(full_row_rows(utils, peer, rounds, reset))
        rows.extend(single_enqueue_rows(dsn, peer, schema, rounds, reset))
        reset()
        peer.close()

        # Memory: a 1,000,000-job stream, and one 200 000-job add_raw_jobs call, each in a
        # fresh process.
        rows.append(stream_row(dsn, schema))
        reset()
        rows.append(memory_row(dsn, schema))
        reset()

        rows.extend(startup_rows())
    finally:
        admin.execute(sql.SQL("drop schema if exists {} cascade").format(ident))
        admin.close()

    print_table(dsn, rows, peer.node_version)


#: Batch sizes of the bulk comparison, and how many jobs each round enqueues at that size.
BULK_SIZES = ((1_000, 20_000), (10_000, 50_000), (100_000, 100_000))


def bulk_rows(
    admin: psycopg.Connection[Any],
    utils: WorkerUtils,
    peer: Peer,
    schema: str,
    rounds: int,
    reset: Callable[[], None],
) -> list[tuple[str, str, str, str]]:
    """bulk_add_raw_jobs, keyless and keyed, against graphile-worker's addJobs (the same batch
    sizes, counts only) and against add_jobs run on the server alone (the ceiling)."""
    ident = sql.Identifier(schema)
    ceiling_sql = sql.SQL(
        "select count(*) from {}.add_jobs(array("
        " select row(%(identifier)s, json_build_object('user_id', i, 'email',"
        " 'user' || i || '@example.com', 'action', 'send_welcome_email', 'locale', 'en-GB',"
        " 'attempt', 1), null, null, null, null, null, null)::{}.job_spec"
        " from generate_series(%(first)s::int, %(last)s::int) as i))"
    ).format(ident, ident)
    rows = []
    for batch, total in BULK_SIZES:
        keyless = [
            [RawJobSpec(IDENTIFIER, payload(i)) for i in range(start, start + batch)]
            for start in range(0, total, batch)
        ]
        keyed = [
            [
                RawJobSpec(IDENTIFIER, payload(i), JobSpec(job_key=f"key-{i}"))
                for i in range(start, start + batch)
            ]
            for start in range(0, total, batch)
        ]

        def ceiling(batch: int = batch, total: int = total) -> None:
            for first in range(0, total, batch):
                params = {"identifier": IDENTIFIER, "first": first, "last": first + batch - 1}
                admin.execute(ceiling_sql, params).fetchone()

        def bulk(batches: list[list[RawJobSpec]]) -> Callable[[], float]:
            return lambda: timed(lambda: [utils.bulk_add_raw_jobs(b) for b in batches])

        ours, ours_keyed, node, node_keyed, server = interleaved(
            rounds,
            reset,
            [
                bulk(keyless),
                bulk(keyed),
                lambda: peer.ask(op="addJobs", batch=batch, total=total),  # noqa: B023
                lambda: peer.ask(op="addJobs", batch=batch, total=total, keyed=True),  # noqa: B023
                lambda: timed(ceiling),
            ],
        )
        label = f"batch {batch:,} ({total:,} jobs)"
        rows.append(
            (
                f"bulk_add_raw_jobs keyless, {label}",
                f"{total / ours:,.0f} jobs/s",
                f"{node / ours:.2f}x graphile-worker addJobs ({total / node:,.0f} jobs/s)",
                f"{server / ours:.2f}x the add_jobs server ceiling ({total / server:,.0f} jobs/s)",
            )
        )
        rows.append(
            (
                f"bulk_add_raw_jobs keyed, {label}",
                f"{total / ours_keyed:,.0f} jobs/s",
                f"{node_keyed / ours_keyed:.2f}x graphile-worker addJobs keyed"
                f" ({total / node_keyed:,.0f} jobs/s)",
                f"{server / ours_keyed:.2f}x the add_jobs server ceiling",
            )
        )
    return rows


def full_row_rows(
    utils: WorkerUtils, peer: Peer, rounds: int, reset: Callable[[], None]
) -> list[tuple[str, str, str, str]]:
    """add_raw_jobs, which returns every job as a Job, against graphile-worker's addJobs."""
    rows = []
    for batch in (1_000, 10_000):
        batches = [
            [RawJobSpec(IDENTIFIER, payload(i)) for i in range(start, start + batch)]
            for start in range(0, TOTAL, batch)
        ]
        ours, node = interleaved(
            rounds,
            reset,
            [
                lambda: timed(lambda: [utils.add_raw_jobs(b) for b in batches]),  # noqa: B023
                lambda: peer.ask(op="addJobs", batch=batch, total=TOTAL),  # noqa: B023
            ],
        )
        rows.append(
            (
                f"add_raw_jobs (Job rows back), batch {batch:,} ({TOTAL:,} jobs)",
                f"{TOTAL / ours:,.0f} jobs/s",
                f"{node / ours:.2f}x graphile-worker addJobs ({TOTAL / node:,.0f} jobs/s)",
                "",
            )
        )
    return rows


def single_enqueue_rows(
    dsn: str,
    peer: Peer,
    schema: str,
    rounds: int,
    reset: Callable[[], None],
) -> list[tuple[str, str, str, str]]:
    """Single enqueues: in a caller's transaction against bare psycopg (``benchmarks/single.py``,
    with the default ``prepare_threshold`` and with None), and from a pool against
    graphile-worker's ``addJob``."""
    rows = list(single_rows(dsn, schema, rounds))
    reset()
    payloads = [payload(i) for i in range(1_000)]
    # Single enqueue from a pool, each call committing, against graphile-worker addJob.
    count = len(payloads)
    few = payloads
    with ConnectionPool(dsn, min_size=1, max_size=1) as pool:
        pooled = WorkerUtils(pool, schema=schema)
        o, t = interleaved(
            rounds,
            reset,
            [
                lambda: timed(lambda: [pooled.add_raw_job(IDENTIFIER, p) for p in few]),
                lambda: peer.ask(op="addJob", count=count),
            ],
        )
    rows.append(
        (
            f"add_raw_job x{count:,} from a pool (each commits)",
            f"{o / count * 1e6:,.0f} us/job",
            f"{t / o:.2f}x graphile-worker addJob ({t / count * 1e6:,.0f} us/job)",
            "",
        )
    )
    return rows


_STREAM_PROBE = textwrap.dedent(
    """
    import json, resource, sys, threading, time
    sys.path.insert(0, sys.argv[3])
    import psycopg
    from graphile_worker_utils import RawJobSpec, WorkerUtils
    dsn, schema, _, count = sys.argv[1:5]
    def rss():
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * resource.getpagesize()
    def anon(pid):
        # The server backend's private memory (shared buffers left out), when it is local.
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith("RssAnon:"):
                        return int(line.split()[1]) * 1024
        except OSError:
            return None
    def jobs():
        for i in range(int(count)):
            yield RawJobSpec("bench_task", {"user_id": i, "email": f"user{i}@example.com",
                             "action": "send_welcome_email", "locale": "en-GB", "attempt": 1})
    with psycopg.connect(dsn, autocommit=True) as conn:
        utils = WorkerUtils(conn, schema=schema)
        utils.bulk_add_raw_jobs([RawJobSpec("bench_task", {})] * 10)  # warm up
        conn.execute(f'truncate "{schema}"._private_jobs')
        pid = conn.info.backend_pid
        # Current RSS sampled during the stream: ru_maxrss would include the RSS of the
        # benchmark process this one was forked from (Linux keeps it across exec).
        server = {"before": anon(pid), "peak": anon(pid)}
        client = {"before": rss(), "peak": rss()}
        done = threading.Event()
        def sample():
            while not done.wait(0.02):
                client["peak"] = max(client["peak"], rss())
                value = anon(pid)
                if value is not None and server["peak"] is not None:
                    server["peak"] = max(server["peak"], value)
        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        started = time.perf_counter()
        scheduled = utils.bulk_add_raw_jobs(jobs())
        seconds = time.perf_counter() - started
        done.set()
        sampler.join()
        assert scheduled == int(count)
        growth = client["peak"] - client["before"]
    print(json.dumps({"growth": growth, "seconds": seconds, "server": server}))
    """
)


def stream_row(dsn: str, schema: str, count: int = 1_000_000) -> tuple[str, str, str, str]:
    out = subprocess.run(
        [sys.executable, "-c", _STREAM_PROBE, dsn, schema, str(ROOT), str(count)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    figures = json.loads(out)
    server = figures["server"]
    if server["before"] is None:
        server_text = "server memory not measured (not a local server)"
    else:
        growth = (server["peak"] - server["before"]) / 2**20
        server_text = f"server backend private memory +{growth:,.0f} MiB (peak, sampled)"
    return (
        f"bulk_add_raw_jobs, a generator of {count:,} jobs (chunks of 10,000)",
        f"client RSS growth {figures['growth'] / 2**20:,.1f} MiB (peak, sampled)",
        server_text,
        f"{count / figures['seconds']:,.0f} jobs/s",
    )


def startup_rows() -> list[tuple[str, str, str, str]]:
    def best_of(command: list[str], n: int = 5) -> float:
        def once() -> None:
            subprocess.run(command, check=True, capture_output=True)

        return min(timed(once) for _ in range(n))

    python = best_of([sys.executable, "-c", "pass"])
    imported = best_of([sys.executable, "-c", "import graphile_worker_utils"])
    rows = [
        (
            "import graphile_worker_utils",
            f"{(imported - python) * 1000:,.0f} ms",
            f"(python start-up alone {python * 1000:,.0f} ms)",
            "",
        )
    ]
    script = Path(sys.executable).parent / "graphile-worker-utils"
    try:
        helped = f"{best_of([str(script), '--help']) * 1000:,.0f} ms"
    except (OSError, subprocess.CalledProcessError) as error:
        helped = f"not measured ({error})"
    rows.append(("graphile-worker-utils --help", helped, "", ""))
    return rows


def print_table(dsn: str, rows: list[tuple[str, str, str, str]], node: str) -> None:
    with psycopg.connect(dsn) as conn:
        server = conn.execute("show server_version").fetchone()
    print(
        f"# {platform.node()}: {os.cpu_count()} CPUs, Python {platform.python_version()},"
        f" PostgreSQL {server[0] if server else '?'}, psycopg {psycopg.__version__},"
        f" graphile-worker on Node {node}"
    )
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    for row in rows:
        cells = (cell.ljust(width) for cell, width in zip(row, widths, strict=True))
        print(" | ".join(cells).rstrip())


if __name__ == "__main__":
    main()
