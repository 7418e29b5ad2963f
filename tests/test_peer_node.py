"""Every graphile-worker peer runs on the Node.js that tests/node installs (npm's ``node``
package), recent enough for graphile-worker 0.18.0 (``engines.node``: >= 22.18), whatever
Node.js the machine has."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import psycopg
import pytest

from graphile_worker_utils import WorkerUtils
from tests._node import (
    GRAPHILE_WORKER_PACKAGES,
    NODE_DIR,
    PEER_NODE,
    GraphileWorker,
    node_env,
    node_version,
    required_node,
)
from tests._worker import Interop

# A task that writes the Node.js version it runs on to ./node-version.
VERSION_TASK = """\
const fs = require("fs");
module.exports = async () => fs.writeFileSync("node-version", process.version);
"""


def parse_version(text: str) -> tuple[int, ...]:
    assert text.startswith("v"), text
    return tuple(int(part) for part in text[1:].split("."))


def test_parse_version_orders_numerically() -> None:
    assert parse_version("v22.18.0") > parse_version("v22.9.1")
    assert parse_version("v20.20.2") < (22, 18, 0)


def test_the_lock_installs_a_node_that_every_graphile_worker_release_accepts(
    graphile_worker: GraphileWorker,
) -> None:
    lock = json.loads((NODE_DIR / "package-lock.json").read_text())
    locked = parse_version("v" + lock["packages"]["node_modules/node"]["version"])
    assert locked[0] == 22
    for package in GRAPHILE_WORKER_PACKAGES.values():
        assert locked >= required_node(package), package


def test_the_peers_node_is_the_installed_node_22(graphile_worker: GraphileWorker) -> None:
    assert Path(graphile_worker.node) == PEER_NODE
    version = node_version(graphile_worker.node)
    assert version[0] == 22 and version >= required_node("graphile-worker"), version


def test_a_node_started_by_name_in_the_peers_environment_is_node_22(
    graphile_worker: GraphileWorker,
) -> None:
    # What a `#!/usr/bin/env node` script (node_modules/.bin/graphile-worker) would run on.
    done = subprocess.run(
        ["/usr/bin/env", "node", "--version"],
        env=node_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert parse_version(done.stdout.strip())[:1] == (22,), done.stdout


@pytest.mark.parametrize("mode", ["run", "runOnce"])
def test_the_harness_runs_graphile_worker_on_node_22(interop: Interop, mode: str) -> None:
    worker = interop.start({"noop": {}}, mode=mode)
    version = parse_version(worker.wait_event("ready")["node"])
    assert version[0] == 22 and version >= required_node("graphile-worker"), version


def test_the_graphile_worker_cli_runs_its_tasks_on_node_22(
    graphile_worker: GraphileWorker,
    conn: psycopg.Connection[Any],
    migrated: str,
    node_dsn: str,
    tmp_path: Path,
) -> None:
    (tmp_path / "tasks").mkdir()
    (tmp_path / "tasks" / "version.js").write_text(VERSION_TASK)
    WorkerUtils(conn, schema=migrated).add_raw_job("version")
    done = graphile_worker.run("0.18.0", "-c", node_dsn, "-s", migrated, "--once", cwd=tmp_path)
    assert done.returncode == 0, f"{done.stdout}\n{done.stderr}"
    version = parse_version((tmp_path / "node-version").read_text())
    assert version[0] == 22 and version >= required_node("graphile-worker"), version
