// Graphile Worker's drain of N no-op jobs, for scripts/bench-graphile.sh: the jobs are
// queued first (not timed), then one runner with the settings its docs recommend for
// throughput (local queue, batched completions) works them off; prints one JSON line.
const { run, makeWorkerUtils } = require("graphile-worker");

async function main() {
  const connectionString = process.env.DATABASE_URL;
  const jobs = Number(process.env.JOBS || 50000);
  const concurrency = Number(process.env.CONCURRENCY || 24);
  const localQueue = Number(process.env.LOCAL_QUEUE || 500);

  const utils = await makeWorkerUtils({ connectionString });
  await utils.migrate();
  for (let queued = 0; queued < jobs; queued += 5000) {
    const n = Math.min(5000, jobs - queued);
    await utils.addJobs(
      Array.from({ length: n }, (_, i) => ({ identifier: "noop", payload: { i: queued + i } })),
    );
  }
  await utils.release();

  let done = 0;
  let finish;
  const finished = new Promise((resolve) => (finish = resolve));
  const started = process.hrtime.bigint();
  const runner = await run({
    connectionString,
    concurrency,
    maxPoolSize: concurrency + 1,
    noHandleSignals: true,
    pollInterval: 1000,
    taskList: { noop: async () => {} },
    preset: {
      worker: {
        localQueue: { size: localQueue },
        completeJobBatchDelay: 0,
        failJobBatchDelay: 0,
      },
    },
  });
  runner.events.on("job:success", () => {
    done += 1;
    if (done === jobs) finish();
  });
  await finished;
  const seconds = Number(process.hrtime.bigint() - started) / 1e9;
  await runner.stop();
  console.log(JSON.stringify({ jobs, concurrency, local_queue: localQueue, seconds, rate: jobs / seconds }));
}

main().catch((error) => {
  console.error(error);
  process.exit(1);
});
