"""Simulated graphile_worker_rs schemas: the Rust crate ``graphile_worker`` at its own revisions
20, 21 and 22. Crates cannot be installed here, so these are built from the crate's published
facts (names, signatures, revision numbers, error codes, behaviour), in our own SQL, never its.

What is simulated, on top of the library's own revision-20 install (graphile-worker's shape):

- the migrations table as the crate leaves it: rows 1..N, breaking only 1, 3, 11, 13, 14, 16
  (the crate's 19 is not breaking; graphile-worker's is);
- its ``add_jobs``: transaction advisory locks on the specs' job keys, taken in key order, then
  graphile-worker's body (its functions that the crate changes are moved to a helper schema,
  whose name the caller gives, and called from there);
- its ``add_job``: raises SQLSTATE ``GWNOR`` ("Unable to schedule job for key ...") where
  graphile-worker returns a row of nulls, and ``GWBKM`` for an unknown ``job_key_mode``;
- revision 20 (and 21, which creates them when upgrading from graphile-worker's 20): the
  ``_private_workers`` table and ``worker_heartbeat``, ``worker_deregister``,
  ``list_stale_workers``, ``list_orphan_locked_workers``, ``recover_dead_worker_jobs``,
  ``delete_stale_workers``;
- revision 22: the ``_private_job_retirements`` table (one row per job retired by a
  replacement, ``remove_job`` or ``permanently_fail_jobs``; ``reschedule_jobs`` clears it; cascades
  on delete), those functions changed accordingly, and ``_private_return_jobs``;
- the job-key race, which the crate's locks make rare, on demand: :func:`lose_key_races` makes
  the next calls of ``add_jobs`` with a keyed spec return no row for their keyed specs.
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import sql

from graphile_worker_utils import WorkerUtils

RUST_REVISIONS = (20, 21, 22)
RUST_BREAKING = (1, 3, 11, 13, 14, 16)
GWNOR = "GWNOR"

_RECORD = """
update {s}.migrations set breaking = id = any({breaking}::int[]);
insert into {s}.migrations (id, breaking)
select id, false from generate_series(21, {revision}) as id;
"""

_KEEP_NODE_FUNCTIONS = """
alter function {s}.add_jobs({s}.job_spec[], boolean) set schema {n};
alter function {s}.add_job(text, json, text, timestamptz, integer, text, integer, text[], text)
  set schema {n};
"""

# A counter outside transactions (a sequence), so that a lost race stays lost after the
# crate's error rolled the call back, and the retry wins.
_RACES = """
create table {s}._simulated_key_races (races integer not null);
insert into {s}._simulated_key_races values (0);
create sequence {s}._simulated_key_race_calls;
create function {s}._simulated_race_lost() returns boolean language sql volatile as $$
  select nextval('{s}._simulated_key_race_calls') <= (select races from {s}._simulated_key_races)
$$;
"""

_ADD_JOBS = """
create function {s}.add_jobs(
  specs {s}.job_spec[], job_key_preserve_run_at boolean default false
) returns setof {s}._private_jobs language plpgsql as $$
declare
  one_key text;
begin
  -- The crate serialises enqueues of a key with advisory locks, in key order (no deadlock).
  for one_key in
    select distinct spec.job_key from unnest(specs) as spec
    where spec.job_key is not null order by 1
  loop
    perform pg_advisory_xact_lock(hashtext(one_key));
  end loop;
  perform {s}._simulated_retire(specs);
  if exists (select 1 from unnest(specs) as spec where spec.job_key is not null)
    and {s}._simulated_race_lost() then
    -- A lost race: the keyed specs' jobs are held by a worker; nothing is written for them.
    specs := array(select spec from unnest(specs) as spec where spec.job_key is null);
    if cardinality(specs) = 0 then
      return;
    end if;
  end if;
  return query select * from {n}.add_jobs(specs, job_key_preserve_run_at);
end
$$;
"""

# Before 22, replacing a held job retires it inside graphile-worker's body, unmarked.
_RETIRE_BEFORE_22 = """
create function {s}._simulated_retire(specs {s}.job_spec[]) returns void
language sql as $$ select $$;
"""

_RETIRE_22 = """
create function {s}._simulated_retire(specs {s}.job_spec[]) returns void
language sql as $$
  with retired as (
    update {s}._private_jobs as job
    set key = null, attempts = job.max_attempts, updated_at = now()
    where job.key in (select spec.job_key from unnest(specs) as spec)
      and job.is_available is not true
    returning job.id
  )
  insert into {s}._private_job_retirements (id) select id from retired on conflict do nothing
$$;
"""

_ADD_JOB = """
create function {s}.add_job(
  identifier text,
  payload json default null,
  queue_name text default null,
  run_at timestamptz default null,
  max_attempts integer default null,
  job_key text default null,
  priority integer default null,
  flags text[] default null,
  job_key_mode text default 'replace'
) returns {s}._private_jobs language plpgsql as $$
declare
  job {s}._private_jobs;
begin
  if add_job.job_key is not null and add_job.job_key_mode = 'unsafe_dedupe' then
    return {n}.add_job(
      identifier => add_job.identifier, payload => add_job.payload,
      queue_name => add_job.queue_name, run_at => add_job.run_at,
      max_attempts => add_job.max_attempts, job_key => add_job.job_key,
      priority => add_job.priority, flags => add_job.flags, job_key_mode => 'unsafe_dedupe'
    );
  elsif add_job.job_key is not null and add_job.job_key_mode is not null
    and add_job.job_key_mode not in ('replace', 'preserve_run_at') then
    raise exception 'unknown job_key_mode %', add_job.job_key_mode using errcode = 'GWBKM';
  end if;
  select * into job from {s}.add_jobs(
    array[row(
      add_job.identifier, add_job.payload, add_job.queue_name, add_job.run_at,
      add_job.max_attempts::smallint, add_job.job_key, add_job.priority::smallint, add_job.flags
    )::{s}.job_spec],
    add_job.job_key_mode = 'preserve_run_at'
  ) limit 1;
  if job.id is null then
    raise exception 'Unable to schedule job for key "%"', coalesce(add_job.job_key, '<null>')
      using errcode = 'GWNOR';
  end if;
  return job;
end
$$;
"""

_WORKERS = """
create table if not exists {s}._private_workers (
  id text primary key,
  last_heartbeat_at timestamptz not null,
  started_at timestamptz not null default now(),
  metadata jsonb
);
create index if not exists _private_workers_last_heartbeat_at_idx
  on {s}._private_workers (last_heartbeat_at);
create function {s}.worker_heartbeat(worker_id text, metadata json default null)
returns void language sql as $$
  insert into {s}._private_workers as known (id, last_heartbeat_at, metadata)
  values (worker_heartbeat.worker_id, now(), worker_heartbeat.metadata::jsonb)
  on conflict (id) do update
  set last_heartbeat_at = now(), metadata = coalesce(excluded.metadata, known.metadata)
$$;
create function {s}.worker_deregister(worker_id text) returns void language sql as $$
  delete from {s}._private_workers where id = worker_deregister.worker_id
$$;
create function {s}.list_stale_workers(stale_threshold interval)
returns table (worker_id text) language sql as $$
  select id from {s}._private_workers where last_heartbeat_at < now() - stale_threshold
$$;
create function {s}.list_orphan_locked_workers(stale_threshold interval)
returns table (worker_id text) language sql as $$
  select distinct held.locked_by from (
    select locked_by, locked_at from {s}._private_jobs where locked_by is not null
    union all
    select locked_by, locked_at from {s}._private_job_queues where locked_by is not null
  ) as held
  where held.locked_at < now() - stale_threshold
    and held.locked_by not in (select id from {s}._private_workers)
$$;
create function {s}.delete_stale_workers(worker_ids text[]) returns void language sql as $$
  delete from {s}._private_workers where id = any(worker_ids)
$$;
"""

# The crate gives the recovered attempt back, except (from 22) to a retired job.
_RECOVER = """
create or replace function {s}.recover_dead_worker_jobs(
  worker_ids text[], recovery_delay interval default interval '0 seconds'
) returns integer language plpgsql as $$
declare
  recovered integer;
begin
  update {s}._private_jobs as job
  set attempts = case when {s}._simulated_retired(job.id) then job.attempts
      else greatest(0, job.attempts - 1) end,
    locked_by = null, locked_at = null,
    run_at = greatest(job.run_at, now() + recovery_delay),
    last_error = 'Job recovered after worker interruption', updated_at = now()
  where job.locked_by = any(worker_ids);
  get diagnostics recovered = row_count;
  update {s}._private_job_queues set locked_by = null, locked_at = null
  where locked_by = any(worker_ids);
  return recovered;
end
$$;
"""

_NOT_RETIRED = """
create function {s}._simulated_retired(job_id bigint) returns boolean
language sql as $$ select false $$;
"""

_RETIREMENTS = """
create table {s}._private_job_retirements (
  id bigint primary key references {s}._private_jobs (id) on delete cascade
);
create function {s}._simulated_retired(job_id bigint) returns boolean language sql as $$
  select exists (select 1 from {s}._private_job_retirements where id = job_id)
$$;
alter function {s}.remove_job(text) set schema {n};
alter function {s}.permanently_fail_jobs(bigint[], text) set schema {n};
alter function {s}.reschedule_jobs(bigint[], timestamptz, integer, integer, integer)
  set schema {n};
create function {s}.remove_job(job_key text) returns {s}._private_jobs
language plpgsql strict as $$
declare
  job {s}._private_jobs;
begin
  job := {n}.remove_job(job_key);
  -- Still there: it was held by a worker, so retired rather than deleted; the crate marks it.
  if job.id is not null and exists (select 1 from {s}._private_jobs where id = job.id) then
    insert into {s}._private_job_retirements (id) values (job.id) on conflict do nothing;
  end if;
  return job;
end
$$;
create function {s}.permanently_fail_jobs(job_ids bigint[], error_message text default null)
returns setof {s}._private_jobs language sql as $$
  with failed as (
    select * from {n}.permanently_fail_jobs(job_ids, error_message)
  ), marked as (
    insert into {s}._private_job_retirements (id) select id from failed on conflict do nothing
  )
  select * from failed
$$;
create function {s}.reschedule_jobs(
  job_ids bigint[],
  run_at timestamptz default null,
  priority integer default null,
  attempts integer default null,
  max_attempts integer default null
) returns setof {s}._private_jobs language sql as $$
  with moved as (
    select * from {n}.reschedule_jobs(
      reschedule_jobs.job_ids, reschedule_jobs.run_at, reschedule_jobs.priority,
      reschedule_jobs.attempts, reschedule_jobs.max_attempts
    )
  ), cleared as (
    delete from {s}._private_job_retirements as marker using moved where marker.id = moved.id
  )
  select * from moved
$$;
create function {s}._private_return_jobs(
  worker_id text,
  job_ids bigint[],
  recovery_delay_ms bigint default null,
  recovery_error text default null,
  update_recovery_metadata boolean default false
) returns void language plpgsql as $$
begin
  with returned as (
    update {s}._private_jobs as job
    set attempts = case when {s}._simulated_retired(job.id) then job.attempts
        else greatest(0, job.attempts - 1) end,
      locked_by = null, locked_at = null,
      run_at = case when update_recovery_metadata and recovery_delay_ms is not null
        then greatest(job.run_at, now() + recovery_delay_ms * interval '1 millisecond')
        else job.run_at end,
      last_error = case when update_recovery_metadata
        then coalesce(recovery_error, job.last_error) else job.last_error end
    where job.id = any(job_ids) and job.locked_by = _private_return_jobs.worker_id
    returning job.job_queue_id
  )
  update {s}._private_job_queues as queue set locked_by = null, locked_at = null
  from returned
  where queue.id = returned.job_queue_id and queue.locked_by = _private_return_jobs.worker_id;
end
$$;
"""


def _scripts(revision: int) -> list[str]:
    retirements = revision >= 22
    return [
        _RECORD,
        _KEEP_NODE_FUNCTIONS,
        _RACES,
        *([_RETIREMENTS, _RETIRE_22] if retirements else [_NOT_RETIRED, _RETIRE_BEFORE_22]),
        _ADD_JOBS,
        _ADD_JOB,
        _WORKERS,
        _RECOVER,
    ]


def build_rust_schema(
    conn: psycopg.Connection[Any], schema: str, revision: int, helper: str
) -> None:
    """``schema`` as the crate leaves it at ``revision`` (20, 21 or 22), simulated (see above),
    with graphile-worker's functions it wraps in the new schema ``helper`` (the caller drops
    it). ``conn`` is an autocommit connection; the build is one transaction."""
    assert revision in RUST_REVISIONS
    WorkerUtils(conn, schema=schema).migrate()
    values = {"breaking": sql.Literal(list(RUST_BREAKING)), "revision": sql.Literal(revision)}
    with conn.transaction():
        conn.execute(sql.SQL("create schema {}").format(sql.Identifier(helper)))
        for script in _scripts(revision):
            extra = values if script is _RECORD else {}
            statement = sql.SQL(script).format(
                s=sql.Identifier(schema), n=sql.Identifier(helper), **extra
            )
            conn.execute(statement, prepare=False)


def lose_key_races(conn: psycopg.Connection[Any], schema: str, races: int) -> None:
    """Make the next ``races`` calls of ``add_jobs`` with keyed specs lose the job-key race."""
    table = sql.Identifier(schema, "_simulated_key_races")
    calls = sql.Literal(f"{schema}._simulated_key_race_calls")
    conn.execute(sql.SQL("update {} set races = %s").format(table), [races])
    conn.execute(sql.SQL("select setval({}::regclass, 1, false)").format(calls))


def function_fingerprints(conn: psycopg.Connection[Any], schema: str) -> set[tuple[str, str]]:
    """(name and arguments, md5 of the definition) of every function in ``schema``."""
    rows = conn.execute(
        "select p.oid::regprocedure::text, md5(pg_get_functiondef(p.oid))"
        " from pg_proc as p join pg_namespace as n on n.oid = p.pronamespace"
        " where n.nspname = %s",
        [schema],
    ).fetchall()
    return set(rows)
