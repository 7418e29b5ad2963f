"""The input of ``add-jobs``: JSON lines read as bytes, decoded, checked and cut into batches."""

from __future__ import annotations

import argparse
import re
from collections.abc import Iterator
from typing import IO, TYPE_CHECKING, Any

from ._exit_codes import CliError, ExitCode
from ._options import _aware_datetime

if TYPE_CHECKING:
    from graphile_worker_utils import RawJobSpec

#: The fields one line of ``add-jobs`` input may have.
JOB_LINE_FIELDS = (
    "identifier",
    "payload",
    "queue_name",
    "run_at",
    "priority",
    "max_attempts",
    "job_key",
    "job_key_mode",
    "flags",
)


def _parse_payload(text: str, where: str) -> Any:
    import json

    def refuse_constant(name: str) -> Any:
        raise ValueError(f"{name} is not valid JSON")

    try:
        return json.loads(text, parse_constant=refuse_constant)
    except json.JSONDecodeError as error:
        raise CliError(
            ExitCode.INVALID_JOB,
            f"{where}: invalid JSON: {error.msg} (line {error.lineno} column {error.colno})",
        ) from error
    except (ValueError, RecursionError) as error:
        raise CliError(ExitCode.INVALID_JOB, f"{where}: invalid JSON: {error}") from error


def parse_job_line(line: str, where: str) -> RawJobSpec:
    """One line of ``add-jobs`` input as a RawJobSpec; CliError(INVALID_JOB) if it is bad."""
    from graphile_worker_utils import InvalidJobSpec, JobSpec, RawJobSpec

    data = _parse_payload(line, where)
    if not isinstance(data, dict):
        raise CliError(
            ExitCode.INVALID_JOB, f"{where}: expected a JSON object, got {type(data).__name__}"
        )
    unknown = sorted(set(data) - set(JOB_LINE_FIELDS))
    if unknown:
        raise CliError(
            ExitCode.INVALID_JOB,
            f"{where}: unknown field(s) {', '.join(unknown)};"
            f" allowed: {', '.join(JOB_LINE_FIELDS)}",
        )
    if "identifier" not in data:
        raise CliError(ExitCode.INVALID_JOB, f'{where}: missing "identifier"')
    run_at = data.get("run_at")
    if isinstance(run_at, str):
        try:
            run_at = _aware_datetime(run_at)
        except argparse.ArgumentTypeError as error:
            raise CliError(ExitCode.INVALID_JOB, f"{where}: run_at: {error}") from error
    try:
        spec = JobSpec(
            queue_name=data.get("queue_name"),
            run_at=run_at,
            priority=data.get("priority"),
            max_attempts=data.get("max_attempts"),
            job_key=data.get("job_key"),
            job_key_mode=data.get("job_key_mode"),
            flags=data.get("flags"),
        )
        return RawJobSpec(data["identifier"], data.get("payload"), spec)
    except InvalidJobSpec as error:
        raise CliError(ExitCode.INVALID_JOB, f"{where}: {error}") from error


def _input_lines(stream: IO[Any]) -> Iterator[tuple[int, str | bytes]]:
    """The non-blank lines of the input with their numbers, undecoded (see _decode_line)."""
    for number, line in enumerate(stream, start=1):
        # JSON's whitespace only: a line of other spaces is an error, not a blank line.
        if line.strip(b" \t\r\n" if isinstance(line, bytes) else " \t\r\n"):
            yield number, line


def _decode_line(line: str | bytes, where: str) -> str:
    """A line of input as text; CliError(INVALID_JOB) naming the byte if it is not UTF-8."""
    if isinstance(line, str):
        return line
    try:
        return line.decode("utf-8")
    except UnicodeDecodeError as error:
        column = len(line[: error.start].decode("utf-8")) + 1
        raise CliError(
            ExitCode.INVALID_JOB,
            f"{where}: not valid UTF-8 (byte 0x{line[error.start]:02x} at column {column})",
        ) from None


def _batches(
    lines: Iterator[tuple[int, str | bytes]], batch_size: int, source: str
) -> Iterator[tuple[list[RawJobSpec], list[int], bool]]:
    """Batches of parsed jobs, their line numbers, and whether the batch is the last one.

    One line is read ahead, so that the last batch is known as such before it is committed.
    A job key used twice anywhere in the input is refused, whatever the batch size (only the
    keys are kept, with the line of their first use).
    """
    batch: list[RawJobSpec] = []
    numbers: list[int] = []
    keys: dict[str, int] = {}
    ahead = next(lines, None)
    while ahead is not None:
        number, line = ahead
        where = f"{source}:{number}"
        job = parse_job_line(_decode_line(line, where), where)
        key = job.spec.job_key
        if key is not None and keys.setdefault(key, number) != number:
            raise CliError(
                ExitCode.INVALID_JOB,
                f"{where}: job_key {key!r} is also the key of {source}:{keys[key]};"
                " keys must be unique within the input",
            )
        batch.append(job)
        numbers.append(number)
        ahead = next(lines, None)
        if len(batch) >= batch_size or ahead is None:
            yield batch, numbers, ahead is None
            batch, numbers = [], []


def _batch_error(error: Exception, numbers: list[int], source: str) -> str:
    # The library names the jobs of a batch jobs[i]; say which input line that is.
    def to_line(match: re.Match[str]) -> str:
        index = int(match.group(1))
        if index >= len(numbers):
            return match.group(0)
        return f"{source}:{numbers[index]}" + (": " if match.group(2) else "")

    return re.sub(r"jobs\[(\d+)\](\.)?", to_line, str(error))
