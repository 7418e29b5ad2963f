"""Every SQL template says which parameters it takes, exactly; every name the package renders
exists. No database: the templates' text and the package's source only."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from graphile_worker_utils._templates import catalog

PACKAGE = Path(__file__).resolve().parent.parent / "graphile_worker_utils"
MARKER = re.compile(r"\bParameters?:")
PLACEHOLDER = re.compile(r"%\((\w+)\)s")


def header(source: str) -> str:
    """The template's leading comment, its lines joined, without the ``--`` marks."""
    lines = []
    for line in source.splitlines():
        if not line.startswith("--"):
            break
        lines.append(line.removeprefix("--").strip())
    return " ".join(lines)


def declared_parameters(text: str) -> set[str]:
    """The names listed after "Parameters:" up to the sentence's end: each item's first word,
    items split at commas outside parentheses; ``none`` lists none."""
    found = MARKER.findall(text)
    assert len(found) == 1, f"expected one 'Parameters:' in the header, found {len(found)}"
    match = MARKER.search(text)
    assert match is not None
    rest = text[match.end() :]
    items, current, depth = [], "", 0
    for index, char in enumerate(rest):
        depth += {"(": 1, ")": -1}.get(char, 0)
        ends_sentence = char == "." and rest[index + 1 : index + 2] in ("", " ")
        if depth == 0 and (char == "," or ends_sentence):
            items.append(current)
            current = ""
            if ends_sentence:
                break
        elif depth == 0 and char != ")":
            current += char
    names = {item.split()[0] for item in items if item.strip()}
    return set() if names == {"none"} else names


@pytest.mark.parametrize("operation", list(catalog.operations()))
def test_every_template_declares_exactly_the_parameters_it_uses(operation: str) -> None:
    source = catalog.source(operation)
    assert declared_parameters(header(source)) == set(PLACEHOLDER.findall(source))


def test_the_header_parser_reads_nested_descriptions_and_none() -> None:
    text = "Does x. Parameters: a (int[]; null: all), b_c (json: an array, of things). Returns y."
    assert declared_parameters(text) == {"a", "b_c"}
    assert declared_parameters("Parameter: job_key. One row.") == {"job_key"}
    assert declared_parameters("Parameters: none.") == set()


def rendered_names() -> dict[str, str]:
    """Every literal operation name passed to ``catalog.render`` in the package, by where."""
    names = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "render"
                and isinstance(node.func.value, ast.Name)
                and node.func.value.id == "catalog"
                and node.args
                and isinstance(node.args[0], ast.Constant)
                and isinstance(node.args[0].value, str)
            ):
                names[f"{path.name}:{node.lineno}"] = str(node.args[0].value)
    return names


def test_every_operation_the_package_renders_exists() -> None:
    names = rendered_names()
    assert "add_jobs" in names.values() and "migrator/state" in names.values()
    operations = set(catalog.operations())
    assert {where: name for where, name in names.items() if name not in operations} == {}


def test_the_cleanup_collections_and_every_upgrade_revision_exist() -> None:
    from graphile_worker_utils._cleanup import _COLLECTIONS
    from graphile_worker_utils._migrations import LATEST_REVISION, OLDEST_UPGRADABLE_REVISION

    operations = set(catalog.operations())
    wanted = {operation for _, operation, _ in _COLLECTIONS}
    wanted |= {
        f"migrations/{n:06d}" for n in range(OLDEST_UPGRADABLE_REVISION + 1, LATEST_REVISION + 1)
    }
    assert wanted - operations == set()
