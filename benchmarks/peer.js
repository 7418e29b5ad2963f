// The graphile-worker side of benchmarks/enqueue.py: a long-lived Node process that times
// graphile-worker 0.18.0's own WorkerUtils in-process. One JSON command per stdin line, one
// JSON answer per stdout line:
//   {"op": "addJobs", "batch": 1000, "total": 50000}  -> {"seconds": s}
//   (with "keyed": true, each job has its own job_key)
//   {"op": "addJob", "count": 1000}                   -> {"seconds": s}
// argv: connection string, schema.
const path = require("path");
const readline = require("readline");
const { makeWorkerUtils } = require(
  path.join(__dirname, "..", "tests", "node", "node_modules", "graphile-worker"),
);

function payload(i) {
  // The same ~100-byte payload as the Python side.
  return {
    user_id: i,
    email: `user${i}@example.com`,
    action: "send_welcome_email",
    locale: "en-GB",
    attempt: 1,
  };
}

async function main() {
  const [connectionString, schema] = process.argv.slice(2);
  const utils = await makeWorkerUtils({ connectionString, schema });
  const lines = readline.createInterface({ input: process.stdin });
  for await (const line of lines) {
    const command = JSON.parse(line);
    let seconds;
    if (command.op === "addJobs") {
      // Inputs are built before the clock starts, as on the Python side.
      const batches = [];
      for (let done = 0; done < command.total; done += command.batch) {
        const specs = [];
        for (let i = done; i < done + command.batch; i++) {
          const spec = { identifier: "bench_task", payload: payload(i) };
          if (command.keyed) spec.jobKey = `key-${i}`;
          specs.push(spec);
        }
        batches.push(specs);
      }
      const started = process.hrtime.bigint();
      for (const specs of batches) {
        await utils.addJobs(specs);
      }
      seconds = Number(process.hrtime.bigint() - started) / 1e9;
    } else if (command.op === "addJob") {
      const payloads = [];
      for (let i = 0; i < command.count; i++) payloads.push(payload(i));
      const started = process.hrtime.bigint();
      for (const p of payloads) {
        await utils.addJob("bench_task", p);
      }
      seconds = Number(process.hrtime.bigint() - started) / 1e9;
    } else if (command.op === "quit") {
      break;
    } else {
      throw new Error(`unknown command ${line}`);
    }
    process.stdout.write(JSON.stringify({ seconds }) + "\n");
  }
  await utils.release();
}

main().catch((error) => {
  console.error(error);
  process.exit(1);
});
