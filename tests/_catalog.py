"""Catalog snapshots of one schema, for comparing what two migrators built.

``snapshot(conn, schema)`` reads the declarations of everything in a schema (tables, columns,
constraints, indexes, sequences, types, the ``jobs`` view's columns, functions' signatures and
attributes, triggers, policies) and the ``migrations`` rows, with the schema's name replaced by
``<schema>``, so that snapshots of two schemas compare with ``==``. It leaves out what may
legitimately differ between independent implementations: function bodies, the view's query
text, comments, and the ``ts`` column of ``migrations``.

``diff(left, right)`` lists the differences readably; ``assert_same_catalog`` raises with them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

PLACEHOLDER = "<schema>"

Snapshot = dict[str, Any]

_RELATIONS = """
    select c.oid, c.relname as name, c.relkind as kind, c.relpersistence as persistence,
           c.relrowsecurity as row_level_security,
           c.relforcerowsecurity as force_row_level_security,
           coalesce(c.reloptions, '{}') as options, c.relacl::text as acl
    from pg_class c
    where c.relnamespace = %(ns)s and c.relkind in ('r', 'p', 'v', 'm', 'f')
    order by c.relname
"""

# A generated column's expression is stored as its default; they are kept apart here.
_COLUMNS = """
    select a.attname as name, format_type(a.atttypid, a.atttypmod) as type,
           a.attnotnull as not_null,
           case when a.attgenerated = '' then pg_get_expr(d.adbin, d.adrelid) end as default,
           nullif(a.attidentity, '') as identity,
           case when a.attgenerated <> '' then pg_get_expr(d.adbin, d.adrelid) end as generated,
           co.collname as collation
    from pg_attribute a
    left join pg_attrdef d on d.adrelid = a.attrelid and d.adnum = a.attnum
    left join pg_collation co on co.oid = a.attcollation
    where a.attrelid = %(rel)s and a.attnum > 0 and not a.attisdropped
    order by a.attnum
"""

# Every constraint by name, including (on PostgreSQL 18+) the NOT NULL ones: their names are
# what graphile-worker's history of renames left, and our install names them the same.
_CONSTRAINTS = """
    select c.relname as table, con.conname as name, con.contype as type,
           pg_get_constraintdef(con.oid) as definition, con.convalidated as validated
    from pg_constraint con
    join pg_class c on c.oid = con.conrelid
    where c.relnamespace = %(ns)s
    order by c.relname, con.conname
"""

_INDEXES = """
    select i.relname as name, t.relname as table, pg_get_indexdef(i.oid) as definition,
           x.indisprimary as primary, x.indisunique as unique, x.indisvalid as valid
    from pg_index x
    join pg_class i on i.oid = x.indexrelid
    join pg_class t on t.oid = x.indrelid
    where t.relnamespace = %(ns)s
    order by i.relname
"""

_SEQUENCES = """
    select c.relname as name, format_type(s.seqtypid, null) as type, s.seqstart as start,
           s.seqincrement as increment, s.seqmin as min, s.seqmax as max, s.seqcache as cache,
           s.seqcycle as cycle,
           (select t.relname || '.' || a.attname || ' (' || d.deptype::text || ')'
            from pg_depend d
            join pg_class t on t.oid = d.refobjid
            join pg_attribute a on a.attrelid = d.refobjid and a.attnum = d.refobjsubid
            where d.classid = 'pg_class'::regclass and d.objid = c.oid
              and d.refclassid = 'pg_class'::regclass and d.deptype in ('a', 'i')) as owned_by
    from pg_sequence s
    join pg_class c on c.oid = s.seqrelid
    where c.relnamespace = %(ns)s
    order by c.relname
"""

# Stand-alone types only: a table's or view's row type is its relation, and array types
# follow their element type.
_TYPES = """
    select t.typname as name, t.typtype as kind, t.typrelid as relid,
           format_type(t.typbasetype, t.typtypmod) as base, t.typnotnull as not_null,
           t.typdefault as default,
           array(select e.enumlabel::text from pg_enum e
                 where e.enumtypid = t.oid order by e.enumsortorder) as labels,
           array(select con.conname || ': ' || pg_get_constraintdef(con.oid)
                 from pg_constraint con where con.contypid = t.oid order by con.conname)
             as checks
    from pg_type t
    left join pg_class c on c.oid = t.typrelid
    where t.typnamespace = %(ns)s and t.typcategory <> 'A'
      and (t.typtype <> 'c' or c.relkind = 'c')
    order by t.typname
"""

_FUNCTIONS = """
    select p.proname || '(' || pg_get_function_identity_arguments(p.oid) || ')' as signature,
           pg_get_function_arguments(p.oid) as arguments,
           pg_get_function_result(p.oid) as result, l.lanname as language, p.prokind as kind,
           p.proisstrict as strict, p.provolatile as volatility,
           p.prosecdef as security_definer, p.proretset as returns_set,
           p.proparallel as parallel, p.proleakproof as leakproof, p.procost as cost,
           p.prorows as rows, coalesce(p.proconfig, '{}') as config, p.proacl::text as acl
    from pg_proc p
    join pg_language l on l.oid = p.prolang
    where p.pronamespace = %(ns)s
    order by 1
"""

_TRIGGERS = """
    select c.relname || '.' || tg.tgname as name, pg_get_triggerdef(tg.oid) as definition
    from pg_trigger tg
    join pg_class c on c.oid = tg.tgrelid
    where c.relnamespace = %(ns)s and not tg.tgisinternal
    order by 1
"""

_POLICIES = """
    select c.relname || '.' || p.polname as name, p.polcmd as command,
           p.polpermissive as permissive,
           array(select coalesce(r.rolname, 'public') from unnest(p.polroles) as u(oid)
                 left join pg_roles r on r.oid = u.oid order by 1) as roles,
           pg_get_expr(p.polqual, p.polrelid) as using,
           pg_get_expr(p.polwithcheck, p.polrelid) as with_check
    from pg_policy p
    join pg_class c on c.oid = p.polrelid
    where c.relnamespace = %(ns)s
    order by 1
"""


def snapshot(conn: psycopg.Connection[Any], schema: str) -> Snapshot:
    """Read the declarations in ``schema`` into a comparable, schema-name-independent dict.

    Works on any connection state but a failed transaction; leaves no trace on ``conn``
    (its work is rolled back, search_path included).
    """
    with conn.transaction(force_rollback=True), conn.cursor(row_factory=dict_row) as cur:
        # With only pg_catalog on the path, every name in the schema comes out qualified the
        # same way whatever the caller's search_path is.
        cur.execute("set local search_path = pg_catalog")
        found = cur.execute(
            "select oid, quote_ident(nspname) as quoted from pg_namespace where nspname = %s",
            [schema],
        ).fetchone()
        if found is None:
            raise LookupError(f"schema {schema!r} does not exist")
        result = _read(cur, found["oid"], schema)
    normalised: Snapshot = _normalise(result, [found["quoted"], schema])
    return normalised


def _read(cur: psycopg.Cursor[dict[str, Any]], ns: int, schema: str) -> Snapshot:
    def rows(query: str, **params: Any) -> list[dict[str, Any]]:
        return cur.execute(query, params or {"ns": ns}).fetchall()

    def by_name(query: str) -> dict[str, Any]:
        return {row.pop("name"): row for row in rows(query)}

    tables = by_name(_RELATIONS)
    for table in tables.values():
        table["options"] = list(table["options"])
        table["columns"] = rows(_COLUMNS, rel=table.pop("oid"))

    constraints: dict[str, dict[str, Any]] = {}
    for row in rows(_CONSTRAINTS):
        constraints.setdefault(row.pop("table"), {})[row.pop("name")] = row

    types = by_name(_TYPES)
    for entry in types.values():
        # Keep only what applies to the kind: attributes, enum labels, or domain details.
        relid, labels = entry.pop("relid"), entry.pop("labels")
        domain = {key: entry.pop(key) for key in ("base", "not_null", "default", "checks")}
        if entry["kind"] == "c":
            entry["attributes"] = [
                {"name": col["name"], "type": col["type"]} for col in rows(_COLUMNS, rel=relid)
            ]
        elif entry["kind"] == "e":
            entry["labels"] = list(labels)
        elif entry["kind"] == "d":
            entry.update(domain, checks=list(domain["checks"]))

    functions = {row.pop("signature"): row for row in rows(_FUNCTIONS)}
    for function in functions.values():
        function["config"] = list(function["config"])

    return {
        "tables": tables,
        "constraints": constraints,
        "indexes": by_name(_INDEXES),
        "sequences": by_name(_SEQUENCES),
        "types": types,
        "functions": functions,
        "triggers": {row["name"]: row["definition"] for row in rows(_TRIGGERS)},
        "policies": by_name(_POLICIES),
        "migrations": _migrations(cur, schema, tables),
    }


def _migrations(
    cur: psycopg.Cursor[dict[str, Any]], schema: str, tables: Mapping[str, Any]
) -> list[list[Any]] | None:
    """``[[id, breaking], ...]`` in id order (``breaking`` None where the column is missing)."""
    table = tables.get("migrations")
    if table is None:
        return None
    has_breaking = any(col["name"] == "breaking" for col in table["columns"])
    query = sql.SQL("select id, {} as breaking from {}.migrations order by id").format(
        sql.SQL("breaking") if has_breaking else sql.SQL("null::boolean"),
        sql.Identifier(schema),
    )
    return [[row["id"], row["breaking"]] for row in cur.execute(query)]


def _normalise(value: Any, names: Iterable[str]) -> Any:
    """Replace the schema's name (quoted form first) by PLACEHOLDER in every string."""
    names = [n for n in dict.fromkeys(names) if n]
    if isinstance(value, str):
        for name in names:
            value = value.replace(name, PLACEHOLDER)
        return value
    if isinstance(value, dict):
        return {_normalise(k, names): _normalise(v, names) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_normalise(v, names) for v in value]
    return value


def diff(left: Any, right: Any, *, left_name: str = "left", right_name: str = "right") -> list[str]:
    """The differences between two snapshots, one readable line each (empty when equal)."""
    lines: list[str] = []
    _diff(left, right, "", lines, left_name, right_name)
    return lines


def _diff(left: Any, right: Any, path: str, out: list[str], ln: str, rn: str) -> None:
    where = path or "(snapshot)"
    if isinstance(left, dict) and isinstance(right, dict):
        for key in left.keys() - right.keys():
            out.append(f"{_join(path, key)}: only in {ln}: {left[key]!r}")
        for key in right.keys() - left.keys():
            out.append(f"{_join(path, key)}: only in {rn}: {right[key]!r}")
        for key in sorted(left.keys() & right.keys(), key=str):
            _diff(left[key], right[key], _join(path, key), out, ln, rn)
    elif isinstance(left, list) and isinstance(right, list):
        if _named(left) and _named(right):
            _diff_named(left, right, path, out, ln, rn)
        else:
            for i, (a, b) in enumerate(zip(left, right, strict=False)):
                _diff(a, b, f"{path}[{i}]", out, ln, rn)
            for i in range(len(right), len(left)):
                out.append(f"{path}[{i}]: only in {ln}: {left[i]!r}")
            for i in range(len(left), len(right)):
                out.append(f"{path}[{i}]: only in {rn}: {right[i]!r}")
    elif left != right or type(left) is not type(right):
        out.append(f"{where}: {ln}={left!r} {rn}={right!r}")


def _named(items: list[Any]) -> bool:
    return all(isinstance(item, dict) and "name" in item for item in items)


def _diff_named(
    left: list[Any], right: list[Any], path: str, out: list[str], ln: str, rn: str
) -> None:
    """Lists of named items (columns, attributes): match by name, then compare the order."""
    left_by_name = {item["name"]: item for item in left}
    right_by_name = {item["name"]: item for item in right}
    for name in left_by_name.keys() - right_by_name.keys():
        out.append(f"{path}[{name}]: only in {ln}: {left_by_name[name]!r}")
    for name in right_by_name.keys() - left_by_name.keys():
        out.append(f"{path}[{name}]: only in {rn}: {right_by_name[name]!r}")
    common_left = [n for n in left_by_name if n in right_by_name]
    common_right = [n for n in right_by_name if n in left_by_name]
    if common_left != common_right:
        out.append(f"{path}: order differs: {ln}={common_left} {rn}={common_right}")
    for name in common_left:
        _diff(left_by_name[name], right_by_name[name], f"{path}[{name}]", out, ln, rn)


def _join(path: str, key: Any) -> str:
    return f"{path}.{key}" if path else str(key)


def assert_same_catalog(
    left: Snapshot, right: Snapshot, *, left_name: str = "left", right_name: str = "right"
) -> None:
    """Fail with every difference listed when the two snapshots differ."""
    lines = diff(left, right, left_name=left_name, right_name=right_name)
    if lines or left != right:
        raise AssertionError(
            f"catalogs differ ({len(lines)} differences):\n  " + "\n  ".join(lines)
        )
