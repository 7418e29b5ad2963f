#!/usr/bin/env node
// Test harness: runs the real graphile-worker (its public JS API only) with a task list made
// for the Python interop tests, and reports what happens as JSON lines on stdout.
//
//   node harness.js '<json config>'
//
// Config:
//   connectionString, schema      where the queue lives (required)
//   mode                          "run" (default: until stopped), "runOnce" (until no job is
//                                 due), "utils" (add jobs with makeWorkerUtils, then exit)
//   package                       "graphile-worker" (0.18.0, default) or an alias from
//                                 tests/node/package.json (for "utils" mode on old schemas)
//   concurrency, pollInterval, forbiddenFlags, noPreparedStatements
//   tasks: { "<identifier>": { sleep_ms, block, fail_times, always_fail } }
//       sleep_ms     wait that long, then go on
//       block        wait until stdin releases the job: {"cmd":"release","job_id":"12",
//                    "outcome":"succeed"|"fail"}  (job_id "*": every blocked job)
//       fail_times   throw while job.attempts <= fail_times (attempts counts this attempt)
//       always_fail  throw on every attempt
//   jobs (utils mode): [{ identifier, payload, spec }]   added one by one with addJob
//   batch (utils mode): [{ identifier, payload, ...spec }] added in one addJobs call (0.17+)
//       (a runAt given as an ISO string is passed on as a Date)
//
// stdin: JSON lines, {"cmd":"release",...} or {"cmd":"stop"} (graceful stop, then exit).
// stdout: one JSON object per line, each with "event", "t" (epoch ms, fractional) and "pid":
//   pool {pool_id} | worker {worker_id} | listening | notification {channel, payload}
//   poll_empty {worker_id} | start {job fields} | end {job fields, error, started_at,
//   ended_at} | complete {job_id, error, attempts} (written back to the database)
//   failed {job_id} | added {job} | ready {node} | exit {code, node} | fatal {error}
//   (node: process.version, the Node.js the harness runs on)
// Logs go to stderr, never stdout.
"use strict";

const path = require("path");
const readline = require("readline");
const { EventEmitter } = require("events");
const { performance } = require("perf_hooks");

const config = JSON.parse(process.argv[2] || process.env.HARNESS_CONFIG || "{}");
const packageName = config.package || "graphile-worker";
const gw = require(path.join(__dirname, "node_modules", packageName));

const writeStdout = process.stdout.write.bind(process.stdout);
// Anything printed with console.* goes to stderr, so stdout carries only reports.
for (const name of ["log", "info", "debug", "warn"]) {
  console[name] = (...args) => process.stderr.write(args.map(String).join(" ") + "\n");
}

const now = () => performance.timeOrigin + performance.now();

function report(event, fields) {
  writeStdout(JSON.stringify({ event, t: now(), pid: process.pid, ...fields }) + "\n");
}

function errorText(error) {
  if (error instanceof Error) return error.message;
  return String(error);
}

const logger = new gw.Logger((scope) => (level, message) => {
  process.stderr.write(`[${level}] ${JSON.stringify(scope)} ${message}\n`);
});

// job id -> worker id, from the job:start event (emitted before the task runs).
const workerOfJob = new Map();
// job id -> { resolve } for blocked tasks.
const blocked = new Map();

function jobFields(job) {
  return {
    job_id: String(job.id),
    task: job.task_identifier,
    payload: job.payload,
    task_id: job.task_id,
    job_queue_id: job.job_queue_id,
    priority: job.priority,
    run_at: job.run_at instanceof Date ? job.run_at.toISOString() : job.run_at,
    attempts: job.attempts,
    max_attempts: job.max_attempts,
    key: job.key,
    flags: job.flags,
    locked_by: job.locked_by,
    worker_id: workerOfJob.get(String(job.id)) || null,
  };
}

function release(jobId, outcome) {
  const ids = jobId === "*" ? [...blocked.keys()] : [String(jobId)];
  for (const id of ids) {
    const waiter = blocked.get(id);
    if (waiter) {
      blocked.delete(id);
      waiter(outcome || "succeed");
    }
  }
}

function makeTask(identifier, behaviour) {
  return async (payload, helpers) => {
    const job = helpers.job;
    const startedAt = now();
    const queueName = job.job_queue_id == null ? null : await helpers.getQueueName();
    const fields = { ...jobFields(job), queue_name: queueName, started_at: startedAt };
    report("start", { ...fields, blocked: Boolean(behaviour.block) });
    let error = null;
    try {
      if (behaviour.sleep_ms) {
        await new Promise((resolve) => setTimeout(resolve, behaviour.sleep_ms));
      }
      let outcome = "succeed";
      if (behaviour.block) {
        outcome = await new Promise((resolve) => blocked.set(String(job.id), resolve));
      }
      if (outcome === "fail") {
        throw new Error(`harness: job ${job.id} (${identifier}) released to fail`);
      }
      if (behaviour.always_fail) {
        throw new Error(`harness: ${identifier} always fails (attempt ${job.attempts})`);
      }
      if (behaviour.fail_times && job.attempts <= behaviour.fail_times) {
        throw new Error(
          `harness: ${identifier} fails attempt ${job.attempts} of the first ${behaviour.fail_times}`,
        );
      }
    } catch (e) {
      error = errorText(e);
      throw e;
    } finally {
      report("end", { ...fields, error, ended_at: now() });
    }
  };
}

function makeEvents() {
  const events = new EventEmitter();
  events.on("pool:create", ({ workerPool }) => report("pool", { pool_id: workerPool.id }));
  events.on("worker:create", ({ worker }) => report("worker", { worker_id: worker.workerId }));
  events.on("pool:listen:success", () => report("listening", {}));
  events.on("pool:listen:notification", ({ message }) =>
    report("notification", { channel: message.channel, payload: message.payload }),
  );
  events.on("worker:getJob:empty", ({ worker }) =>
    report("poll_empty", { worker_id: worker.workerId }),
  );
  events.on("job:start", ({ worker, job }) => workerOfJob.set(String(job.id), worker.workerId));
  events.on("job:complete", ({ job, error }) =>
    report("complete", {
      job_id: String(job.id),
      attempts: job.attempts,
      error: error == null ? null : errorText(error),
    }),
  );
  events.on("job:failed", ({ job, error }) =>
    report("failed", { job_id: String(job.id), error: errorText(error) }),
  );
  return events;
}

function workerOptions() {
  const taskList = {};
  for (const [identifier, behaviour] of Object.entries(config.tasks || {})) {
    taskList[identifier] = makeTask(identifier, behaviour || {});
  }
  const options = {
    connectionString: config.connectionString,
    schema: config.schema,
    concurrency: config.concurrency || 1,
    pollInterval: config.pollInterval || 2000,
    noHandleSignals: true,
    noPreparedStatements: Boolean(config.noPreparedStatements),
    logger,
    events: makeEvents(),
    taskList,
    // No crontab file lookups in the harness's working directory.
    parsedCronItems: [],
  };
  if (config.forbiddenFlags) options.forbiddenFlags = config.forbiddenFlags;
  return options;
}

async function addWithUtils() {
  const utils = await gw.makeWorkerUtils({
    connectionString: config.connectionString,
    schema: config.schema,
    logger,
  });
  try {
    await utils.migrate();
    const withDate = (spec) => (spec.runAt ? { ...spec, runAt: new Date(spec.runAt) } : spec);
    for (const { identifier, payload, spec } of config.jobs || []) {
      const job = await utils.addJob(identifier, payload, withDate(spec || {}));
      report("added", { job: jobFields(job), via: "addJob" });
    }
    if (config.batch && config.batch.length) {
      const jobs = await utils.addJobs(config.batch.map(withDate));
      for (const job of jobs) report("added", { job: jobFields(job), via: "addJobs" });
    }
  } finally {
    await utils.release();
  }
}

let stopping = null;

async function main() {
  if (config.mode === "utils") {
    await addWithUtils();
    return;
  }
  if (config.mode === "runOnce") {
    report("ready", { node: process.version });
    const { concurrency: _ignored, ...options } = workerOptions();
    await gw.runOnce(options);
    return;
  }
  const runner = await gw.run(workerOptions());
  const stop = () => {
    if (!stopping) stopping = runner.stop().catch((e) => report("fatal", { error: errorText(e) }));
    return stopping;
  };
  process.on("SIGTERM", stop);
  process.on("SIGINT", stop);
  commands.on("stop", stop);
  report("ready", { node: process.version });
  await runner.promise;
}

const commands = new EventEmitter();
readline.createInterface({ input: process.stdin }).on("line", (line) => {
  if (!line.trim()) return;
  let command;
  try {
    command = JSON.parse(line);
  } catch (e) {
    report("fatal", { error: `bad command ${line}: ${errorText(e)}` });
    return;
  }
  if (command.cmd === "release") release(command.job_id, command.outcome);
  else if (command.cmd === "stop") commands.emit("stop");
  else report("fatal", { error: `unknown command ${line}` });
});

// process.exit() drops what a pipe has not taken yet (a 1 MB report, say): exit only once
// stdout has flushed everything written before.
function finish(code) {
  report("exit", { code, node: process.version });
  process.stdout.write("", () => process.exit(code));
}

main().then(
  () => finish(0),
  (error) => {
    report("fatal", { error: errorText(error), stack: error && error.stack });
    finish(1);
  },
);
