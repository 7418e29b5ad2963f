"""The template catalog: what it renders, what it refuses, and that the wheel carries it."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import jinja2
import jinja2.meta
import jinja2.nodes
import pytest

from graphile_worker_utils import InvalidSchemaName
from graphile_worker_utils._templates import (
    IDENTIFIER_VARIABLES,
    TemplateCatalog,
    catalog,
    schema_spellings,
)

ROOT = Path(__file__).resolve().parent.parent

ODD_SCHEMAS = [
    "graphile_worker",
    'x"; drop table y; --',
    "it's $gw$ a $$ trap\\",
    "Schéma ünïcode 🐘",
    "with space",
]


def interpolated_names(source: str, env: jinja2.Environment) -> set[str]:
    """Names used inside {{ … }} output expressions (not in {% if %} conditions)."""
    tree = env.parse(source)
    names: set[str] = set()
    for output in tree.find_all(jinja2.nodes.Output):
        for node in output.nodes:
            if isinstance(node, jinja2.nodes.TemplateData):
                continue
            found = [node, *node.find_all(jinja2.nodes.Name)]
            names.update(n.name for n in found if isinstance(n, jinja2.nodes.Name))
    return names


def test_every_template_interpolates_only_allow_listed_identifiers() -> None:
    env = jinja2.Environment()
    offenders = {}
    for operation in catalog.operations():
        names = interpolated_names(catalog.source(operation), env) - IDENTIFIER_VARIABLES
        if names:
            offenders[operation] = sorted(names)
    assert offenders == {}, f"templates interpolate values, not identifiers: {offenders}"


def test_the_allow_list_check_catches_an_interpolated_value(tmp_path: Path) -> None:
    # The check above must be able to fail: a template that pastes a value is caught.
    env = jinja2.Environment()
    source = "select * from {{ schema }}.jobs where key = '{{ job_key }}'"
    assert interpolated_names(source, env) - IDENTIFIER_VARIABLES == {"job_key"}


def test_catalog_lists_the_migrations_and_schema_functions() -> None:
    operations = set(catalog.operations())
    assert {"migrations/install", "migrations/000020", "schema/add_jobs"} <= operations


@pytest.mark.parametrize("schema", ODD_SCHEMAS)
def test_every_template_renders_for_odd_schema_names(schema: str) -> None:
    quoted = schema_spellings(schema)["schema"]
    for operation in catalog.operations():
        text = catalog.render(operation, schema).decode("utf-8")
        if "{{ schema }}" in catalog.source(operation):
            assert quoted in text, operation
        assert "{{" not in text and "{%" not in text, operation


def test_schema_is_quoted_as_an_identifier() -> None:
    spellings = schema_spellings('a"b')
    assert spellings["schema"] == '"a""b"'
    assert spellings["schema_literal"] == "E'a\"b'"


def test_dollar_quote_tag_never_occurs_in_the_schema_name() -> None:
    assert schema_spellings("plain")["body"] == "$gw$"
    tag = schema_spellings("x$gw$y$gw1$")["body"]
    assert tag not in "x$gw$y$gw1$"


def test_rendered_text_is_cached_per_operation_and_schema() -> None:
    fresh = TemplateCatalog()
    first = fresh.render("migrator/revisions", "one")
    assert fresh.render("migrator/revisions", "one") is first
    assert fresh.render("migrator/revisions", "two") is not first
    assert b'"two"' in fresh.render("migrator/revisions", "two")


def test_unknown_operation_fails_loudly() -> None:
    with pytest.raises(jinja2.TemplateNotFound):
        catalog.render("no_such_operation", "graphile_worker")


def test_undefined_variable_fails_loudly(tmp_path: Path) -> None:
    (tmp_path / "migrations").mkdir()
    (tmp_path / "broken.sql.j2").write_text("select {{ schema }}.{{ typo }}")
    with pytest.raises(jinja2.UndefinedError, match="typo"):
        TemplateCatalog(tmp_path).render("broken", "graphile_worker")


@pytest.mark.parametrize(
    ("schema", "message"),
    [
        ("", "must not be empty"),
        ("a\x00b", "NUL"),
        ("x" * 64, "64 bytes in UTF-8, over PostgreSQL's limit of 63"),
        ("é" * 32, "64 bytes in UTF-8, over PostgreSQL's limit of 63"),
        (42, "expected a str, got int"),
    ],
)
def test_bad_schema_names_are_refused_with_the_limit(schema: object, message: str) -> None:
    with pytest.raises(InvalidSchemaName, match=message):
        schema_spellings(schema)  # type: ignore[arg-type]


def test_longest_allowed_schema_name_is_accepted() -> None:
    assert schema_spellings("x" * 63)["schema"] == '"' + "x" * 63 + '"'


def test_import_does_not_build_jinja_or_read_templates() -> None:
    code = (
        "import sys, graphile_worker_utils\n"
        "assert 'jinja2' not in sys.modules, 'jinja2 imported at import time'\n"
        "assert 'psycopg' not in sys.modules, 'psycopg imported at import time'\n"
        "from graphile_worker_utils import WorkerUtils, JobSpec, dumps_payload\n"
        "assert 'jinja2' not in sys.modules, 'jinja2 imported before first use'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


def test_built_wheel_carries_and_renders_the_templates(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(ROOT)],
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("graphile_worker_utils-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        archive.extractall(tmp_path / "site")
    expected = {
        f"graphile_worker_utils/sql/{path.relative_to(ROOT / 'sql').as_posix()}"
        for path in (ROOT / "sql").rglob("*.sql.j2")
    }
    assert expected <= names
    assert "graphile_worker_utils/py.typed" in names
    # Rendered from the unpacked wheel alone, away from the checkout's sql/ folder.
    code = (
        "import graphile_worker_utils._templates as t\n"
        "assert t.catalog.directory.parent.name == 'graphile_worker_utils', t.catalog.directory\n"
        "assert b'create table' in t.catalog.render('migrations/install', 'gw')\n"
    )
    site = {"PYTHONPATH": str(tmp_path / "site")}
    subprocess.run([sys.executable, "-c", code], check=True, cwd=tmp_path, env=site)
