"""Pieces every subcommand's parser is built from: the parser class, the argument types and
the options shared by all commands."""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NoReturn

from ._context import DEFAULT_CONNECT_TIMEOUT
from ._exit_codes import EXIT_CODES_HELP, CliError, ExitCode

if TYPE_CHECKING:
    import datetime as dt

    from _typeshed import SupportsWrite

    from ._context import Context


#: A subcommand: runs with the context, returns the exit code.
Handler = Callable[["Context"], int]


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line and exit code 2 (through :class:`CliError`)."""

    def error(self, message: str) -> NoReturn:
        raise CliError(ExitCode.USAGE, f"{message} (see {self.prog} --help)")

    def print_help(self, file: SupportsWrite[str] | None = None) -> None:
        """Print the help; unlike argparse's own, let a broken pipe be known (main() ends
        quietly with OUTPUT_CLOSED then) rather than ignore it."""
        (file or sys.stdout).write(self.format_help())


if TYPE_CHECKING:
    #: What subcommands are added to.
    Commands = argparse._SubParsersAction[_Parser]


def _aware_datetime(text: str) -> dt.datetime:
    """argparse type: an ISO 8601 date-time with a UTC offset (``Z`` allowed)."""
    import datetime as dt

    value = text.strip()
    if value.endswith(("Z", "z")):
        value = value[:-1] + "+00:00"
    try:
        parsed = dt.datetime.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an ISO 8601 date-time (like 2030-01-31T09:00:00+01:00)"
        ) from None
    if parsed.tzinfo is None or parsed.utcoffset() is None:
        raise argparse.ArgumentTypeError(
            f"{text!r} has no UTC offset, so it is ambiguous; add one (+00:00, Z, +02:00, ...)"
        )
    return parsed


def _job_id(text: str) -> int:
    """argparse type: a job id (a positive integer)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a job id (an integer)") from None
    if not 1 <= value <= 2**63 - 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a job id (1..2^63-1)")
    return value


def _seconds(text: str) -> float:
    """argparse type: a finite number of seconds, 0 or more."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be a finite number of seconds >= 0")
    return value


def _positive_int(text: str) -> int:
    """argparse type: an integer of at least 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be at least 1")
    return value


def _add_common_options(parser: argparse.ArgumentParser, *, top_level: bool) -> None:
    # The options are accepted before and after the subcommand. On subcommands the default is
    # SUPPRESS, so that an option given before the subcommand is not overwritten by a default.
    def default(value: Any) -> Any:
        return value if top_level else argparse.SUPPRESS

    parser.add_argument(
        "-c",
        "--connection",
        metavar="DSN",
        default=default(None),
        help="libpq connection string or URI (default: $DATABASE_URL, else the PG* variables)",
    )
    parser.add_argument(
        "-s",
        "--schema",
        default=default(None),
        help="graphile-worker's schema (default: $GRAPHILE_WORKER_SCHEMA, else graphile_worker)",
    )
    parser.add_argument(
        "--connect-timeout",
        type=_positive_int,
        metavar="SECONDS",
        default=default(None),
        help=f"give up connecting after this long (default: the connection string's"
        f" connect_timeout, else $PGCONNECT_TIMEOUT, else {DEFAULT_CONNECT_TIMEOUT})",
    )
    parser.add_argument(
        "--debug",
        action="store_true",
        default=default(False),
        help="log what happens and show tracebacks (passwords masked)",
    )


def _add_json_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print JSON (one object per line)")


def add_command(
    commands: Commands,
    name: str,
    help_text: str,
    description: str | None = None,
    *,
    handler: Handler,
) -> _Parser:
    """Add the subcommand ``name``, run by ``handler``, with the options every command has."""
    sub: _Parser = commands.add_parser(
        name,
        help=help_text,
        description=description or help_text,
        epilog=f"exit codes:\n{EXIT_CODES_HELP}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_common_options(sub, top_level=False)
    sub.set_defaults(handler=handler)
    return sub


#: The units of a duration (``--older-than 1h30m``), largest first, in seconds.
DURATION_UNITS = {"d": 86400, "h": 3600, "m": 60, "s": 1}
#: The longest duration accepted: a century (a longer one is a typo, and overflows).
MAX_DURATION_SECONDS = 100 * 365 * 86400


def _duration(text: str) -> dt.timedelta:
    """argparse type: a positive duration of whole units, largest first, each once:
    ``90s``, ``15m``, ``1h30m``, ``7d``."""
    import datetime as dt
    import re

    value = text.strip().lower()
    match = re.fullmatch(
        r"(?:([0-9]{1,9})d)?(?:([0-9]{1,9})h)?(?:([0-9]{1,9})m)?(?:([0-9]{1,9})s)?", value
    )
    if not value or match is None:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a duration: a number and a unit (s, m, h, d), like 90s, 15m,"
            " 12h, 7d, or units largest first, like 1h30m"
        )
    seconds = sum(
        int(amount) * DURATION_UNITS[unit]
        for amount, unit in zip(match.groups(), DURATION_UNITS, strict=True)
        if amount is not None
    )
    if seconds == 0:
        raise argparse.ArgumentTypeError(
            f"{text!r} is no duration: give more than 0 (or leave the option out)"
        )
    if seconds > MAX_DURATION_SECONDS:
        raise argparse.ArgumentTypeError(f"{text!r} is longer than a century (36500d)")
    return dt.timedelta(seconds=seconds)


def _bounded_int(low: int, high: int) -> Callable[[str], int]:
    """argparse type: an integer from ``low`` to ``high``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{text!r} is not in {low}..{high}")
        return value

    parse.__name__ = "integer"
    return parse


def format_duration(value: dt.timedelta) -> str:
    """A duration as :func:`_duration` reads it: ``7d``, ``1h30m``, ``90s`` → ``1m30s``."""
    left = int(value.total_seconds())
    parts = []
    for unit, size in DURATION_UNITS.items():
        if left >= size:
            parts.append(f"{left // size}{unit}")
            left %= size
    return "".join(parts) or "0s"
