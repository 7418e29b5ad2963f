"""The template catalog: finds the SQL templates, renders them once per schema, caches the text.

Templates (``sql/<operation>.sql.j2``) render identifiers only: the quoted schema name and the
few spellings of it a statement needs. Every value is a bound parameter. Jinja is imported and
its environment built on first use, so that importing the library stays cheap.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._errors import InvalidSchemaName

if TYPE_CHECKING:
    import jinja2

#: PostgreSQL truncates identifiers longer than this many bytes (NAMEDATALEN - 1); we refuse
#: them instead, so that the schema we write is the schema the caller named.
MAX_IDENTIFIER_BYTES = 63

#: The only names a template may interpolate with ``{{ … }}``; each is derived from the schema
#: name by :func:`schema_spellings`, never taken from caller data. ``tests/test_templates.py``
#: enforces it.
IDENTIFIER_VARIABLES = frozenset({"schema", "schema_literal", "body"})


def validate_schema_name(schema: object) -> str:
    """Return ``schema`` if it can name a PostgreSQL schema, else raise InvalidSchemaName."""
    if not isinstance(schema, str):
        raise InvalidSchemaName(f"schema: expected a str, got {type(schema).__name__}")
    if not schema:
        raise InvalidSchemaName("schema: must not be empty")
    if "\x00" in schema:
        raise InvalidSchemaName("schema: must not contain NUL characters")
    if "%" in schema:
        # psycopg reads % in a statement's text as a placeholder, and the schema is part of
        # the text: a name with % would be misread (x%% would silently become x%).
        raise InvalidSchemaName("schema: must not contain '%' (psycopg's placeholder mark)")
    try:
        size = len(schema.encode("utf-8"))
    except UnicodeEncodeError:
        raise InvalidSchemaName(
            "schema: contains a lone surrogate, which is not valid Unicode"
        ) from None
    if size > MAX_IDENTIFIER_BYTES:
        raise InvalidSchemaName(
            f"schema: {size} bytes in UTF-8, over PostgreSQL's limit of {MAX_IDENTIFIER_BYTES}"
            " (PostgreSQL would silently truncate it)"
        )
    return schema


def quote_identifier(name: str) -> str:
    """Quote ``name`` as a PostgreSQL identifier (``"a""b"`` for ``a"b``)."""
    return '"' + name.replace('"', '""') + '"'


def quote_literal(text: str) -> str:
    """Quote ``text`` as an escape-string literal, safe whatever standard_conforming_strings is."""
    return "E'" + text.replace("\\", "\\\\").replace("'", "''") + "'"


def dollar_tag(schema: str) -> str:
    """A dollar-quote tag for function bodies that cannot occur inside the schema name."""
    tag, n = "$gw$", 0
    while tag in schema:
        n += 1
        tag = f"$gw{n}$"
    return tag


def schema_spellings(schema: str) -> dict[str, str]:
    """The identifier variables a template may use, all derived from one schema name."""
    validate_schema_name(schema)
    return {
        "schema": quote_identifier(schema),
        "schema_literal": quote_literal(schema),
        "body": dollar_tag(schema),
    }


def _template_directory() -> Path:
    package = Path(__file__).resolve().parent
    # An installed wheel carries the templates inside the package; a checkout (and an editable
    # install) has them at the top of the repository.
    for candidate in (package / "sql", package.parent / "sql"):
        if (candidate / "migrations").is_dir():
            return candidate
    raise FileNotFoundError(
        f"graphile_worker_utils: SQL templates not found in {package / 'sql'} or"
        f" {package.parent / 'sql'}; the installation is incomplete"
    )


class TemplateCatalog:
    """Loads ``sql/*.sql.j2`` and caches rendered statements per (operation, schema, clauses).

    Rendering is strict: an unknown operation or an undefined variable raises at once.
    The cache is safe to share between threads.
    """

    def __init__(self, directory: Path | None = None) -> None:
        self._directory = directory
        self._environment: jinja2.Environment | None = None
        self._cache: dict[tuple[Any, ...], bytes] = {}
        self._lock = threading.Lock()

    @property
    def directory(self) -> Path:
        """The folder the templates are read from."""
        if self._directory is None:
            self._directory = _template_directory()
        return self._directory

    def _env(self) -> jinja2.Environment:
        if self._environment is None:
            with self._lock:
                if self._environment is None:
                    import jinja2

                    self._environment = jinja2.Environment(
                        loader=jinja2.FileSystemLoader(str(self.directory)),
                        undefined=jinja2.StrictUndefined,
                        autoescape=False,
                        keep_trailing_newline=True,
                        auto_reload=False,
                    )
        return self._environment

    def operations(self) -> Iterator[str]:
        """Every template's operation name (``add_job``, ``migrations/000020``, …)."""
        for path in sorted(self.directory.rglob("*.sql.j2")):
            yield path.relative_to(self.directory).as_posix().removesuffix(".sql.j2")

    def source(self, operation: str) -> str:
        """The raw template text of ``operation``."""
        env = self._env()
        assert env.loader is not None
        text, _, _ = env.loader.get_source(env, f"{operation}.sql.j2")
        return text

    def render(self, operation: str, schema: str, **clauses: Any) -> bytes:
        """The statement for ``operation`` on ``schema``, UTF-8 encoded, rendered once and cached.

        ``clauses`` switch optional parts of a template on or off (``{% if … %}``); they are
        never interpolated into the text.
        """
        key = (operation, schema, *sorted(clauses.items())) if clauses else (operation, schema)
        text = self._cache.get(key)
        if text is None:
            template = self._env().get_template(f"{operation}.sql.j2")
            text = template.render(**clauses, **schema_spellings(schema)).encode("utf-8")
            self._cache[key] = text
        return text


#: The catalog the library uses.
catalog = TemplateCatalog()
