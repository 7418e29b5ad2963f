"""Payload encoding: Python values to the JSON text graphile-worker's tasks receive.

Beyond what ``json`` handles (dict, list, tuple, str, int, float, bool, None):

========================  ===================================================================
datetime (aware)          ISO 8601 with its offset, ``"2026-01-02T03:04:05.000006+00:00"``
datetime (naive)          refused: ambiguous
date, time                ISO 8601, ``"2026-01-02"``, ``"03:04:05"``
UUID                      its canonical string
Decimal                   its exact decimal string, ``"12.50"`` (a JSON number would lose
                          precision in JavaScript); NaN and infinities are refused
Enum                      its value, encoded by these same rules
attrs / dataclass         an object of its fields, encoded by these same rules
========================  ===================================================================

NaN and Infinity floats are refused (they are not JSON). Strings with lone surrogates are sent
as ``\ud800`` escapes. Anything else is refused with a message naming its type. Pass
``json_dumps=`` to :class:`WorkerUtils` to use your own encoder.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import decimal
import enum
import json
import uuid
from collections.abc import Callable
from typing import Any

import attrs

from ._errors import InvalidJobSpec

JsonDumps = Callable[[Any], str]


def _default(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        if value.tzinfo is None or value.tzinfo.utcoffset(value) is None:
            raise InvalidJobSpec(
                f"payload: naive datetime {value.isoformat()} is ambiguous; give it a tzinfo"
            )
        return value.isoformat()
    if isinstance(value, (dt.date, dt.time)):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, decimal.Decimal):
        if not value.is_finite():
            raise InvalidJobSpec(f"payload: Decimal {value} is not a finite number")
        return str(value)
    if isinstance(value, enum.Enum):
        return value.value
    if attrs.has(type(value)):
        return {field.name: getattr(value, field.name) for field in attrs.fields(type(value))}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {field.name: getattr(value, field.name) for field in dataclasses.fields(value)}
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def _make_encoder(*, ensure_ascii: bool = False) -> Callable[[Any], str]:
    # One C encoder built once (json.dumps builds one per call); no circular-reference
    # markers, so a cycle ends as a RecursionError, reported like any unencodable payload.
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is None:  # pragma: no cover - CPython always has it
        encoder = json.JSONEncoder(
            ensure_ascii=ensure_ascii, allow_nan=False, separators=(",", ":"), default=_default
        )
        return encoder.encode
    # Non-ASCII stays as it is (smaller, faster) unless ASCII is asked for.
    quote = json.encoder.encode_basestring_ascii if ensure_ascii else json.encoder.encode_basestring
    iterencode = make(None, _default, quote, None, ":", ",", False, False, False)

    def encode(value: Any) -> str:
        return "".join(iterencode(value, 0))

    return encode


_encode = _make_encoder()


_encode_ascii = _make_encoder(ensure_ascii=True)


def dumps(value: Any) -> str:
    """Encode a payload as compact JSON text (see the module documentation for the rules)."""
    text = _encode(value)
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            # Lone surrogates cannot be sent as UTF-8; JSON carries them as \ud800 escapes.
            text = _encode_ascii(value)
    return text


def encode_payload(value: Any, json_dumps: JsonDumps | None, field: str = "payload") -> str:
    """Encode ``value`` with ``json_dumps`` (or :func:`dumps`), as InvalidJobSpec on failure."""
    try:
        text = (json_dumps or dumps)(value)
    except InvalidJobSpec as error:
        if field == "payload":
            raise
        raise InvalidJobSpec(f"{field}{str(error).removeprefix('payload')}") from None
    except ValueError as error:
        # json raises ValueError for NaN/Infinity and for circular references.
        raise InvalidJobSpec(f"{field}: cannot be encoded as JSON: {error}") from error
    except TypeError as error:
        raise InvalidJobSpec(f"{field}: cannot be encoded as JSON: {error}") from error
    except RecursionError as error:
        raise InvalidJobSpec(
            f"{field}: nested too deeply (or refers to itself) to encode as JSON"
        ) from error
    except Exception as error:
        # A custom json_dumps may raise anything; it is still a payload that cannot be sent.
        raise InvalidJobSpec(
            f"{field}: cannot be encoded as JSON: {type(error).__name__}: {error}"
        ) from error
    if not isinstance(text, str):
        raise InvalidJobSpec(f"{field}: json_dumps returned {type(text).__name__}, expected str")
    return text


def encode_payloads(payloads: list[Any], json_dumps: JsonDumps | None, offset: int = 0) -> str:
    """Encode a batch's payloads as one JSON array: one pass of the C encoder.

    A payload that cannot be encoded is reported by its index in the batch
    (``jobs[offset + i].payload``).
    """
    if json_dumps is not None:
        texts = (
            encode_payload(payload, json_dumps, f"jobs[{offset + index}].payload")
            for index, payload in enumerate(payloads)
        )
        return "[" + ",".join(texts) + "]"
    try:
        return dumps(payloads)
    except Exception as error:  # any payload the encoder refuses: find and name it
        for index, payload in enumerate(payloads):
            encode_payload(payload, None, f"jobs[{offset + index}].payload")
        raise InvalidJobSpec(f"payloads: cannot be encoded as JSON: {error}") from error


_decoder = json.JSONDecoder()


def array_element_at(document: str, position: int) -> tuple[int, Any]:
    """The index and the value of the element of a JSON array text that holds ``position``."""
    index, end = 0, document.index("[") + 1
    while True:
        while document[end] in " \t\r\n,":
            end += 1
        value, end = _decoder.raw_decode(document, end)
        if position < end:
            return index, value
        index += 1
