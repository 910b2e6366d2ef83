'use strict';
// The soak's clock: the memory baseline after warm-up, then the faults, cycle after cycle
// (one cycle per ~120 s of load: kill -9 of instance 1, Redis restart, replica stop, pool
// exhaustion, at 20 %, 40 %, 60 % and 80 % of the cycle).

const fs = require('node:fs');
const { sleep, http, until } = require('../node/harness');
const { holdWriteLocks } = require('./faults');

const CYCLE_S = 120;
const LOCK_MS = 4000;
const REPLICA_DOWN_MS = 8000;
const REDIS_DOWN_MS = 3000;
const KILLED_MS = 2000;
const BURST = 30;

/** VmRSS of a process, in KiB (0 when it is gone). */
function rssKb(pid) {
  try {
    const m = fs.readFileSync(`/proc/${pid}/status`, 'utf8').match(/^VmRSS:\s+(\d+) kB/m);
    return m ? Number(m[1]) : 0;
  } catch { return 0; }
}

async function kill9(world) {
  const s = world.servers[0];
  const window = { from: world.rec.now(), to: null };
  if (!world.rec.downWindows.has(0)) world.rec.downWindows.set(0, []);
  world.rec.downWindows.get(0).push(window);
  await s.kill9();
  await sleep(KILLED_MS);
  await s.restart(); // same port, same database; resolves once /healthz answers
  window.to = world.rec.now();
}

async function redisRestart(redis) {
  await redis.stop();
  await sleep(REDIS_DOWN_MS);
  await redis.start();
}

async function replicaStop(proxy) {
  await proxy.pause();
  await sleep(REPLICA_DOWN_MS);
  await proxy.resume();
}

/**
 * Locks the tables writes need for LOCK_MS and meanwhile fires BURST concurrent state reads (a
 * primary read) at instance 2: every one must be answered 200 or 503 within the acquire timeout
 * plus one statement timeout (+ slack), and some must be 503 (the pool was exhausted).
 */
async function poolExhaustion(world) {
  const lock = holdWriteLocks(world.databaseUrl, LOCK_MS);
  await sleep(500);
  const bound = world.pool.acquireMs + world.pool.statementMs + 2000;
  const results = await Promise.all(Array.from({ length: BURST }, async () => {
    const started = Date.now();
    try {
      const r = await http(world.servers[1].url, 'GET', '/api/v1/rooms/soak-r0/state', world.tokens.admin('soak-burst'));
      world.rec.http('GET', '/rooms/:id/state (pool exhaustion burst)', r, Date.now() - started);
      return { status: r.status, ms: Date.now() - started };
    } catch (e) {
      world.rec.fail('pool exhaustion: no answer', e.message);
      return { status: 0, ms: Date.now() - started };
    }
  }));
  await lock;
  const unavailable = results.filter((r) => r.status === 503).length;
  const slowest = Math.max(...results.map((r) => r.ms));
  if (slowest > bound) world.rec.fail('pool exhaustion: answer slower than acquire + statement timeout', `${slowest} ms > ${bound} ms`);
  if (unavailable === 0) world.rec.fail('pool exhaustion: no 503', JSON.stringify(results.slice(0, 5)));
  const withinAcquire = results.filter((r) => r.ms <= world.pool.acquireMs + 500).length;
  world.poolBursts.push(`${unavailable}/${BURST} answered 503, ${withinAcquire} within the acquire timeout (+0.5 s), `
    + `slowest ${slowest} ms (bound ${bound} ms)`);
}

/**
 * Runs the load's clock for `seconds`. Returns the memory record of instance 2 (never killed):
 * baseline after warm-up, peak (sampled every second until `stop()`).
 */
async function runSchedule(world, { seconds, redis, proxy }) {
  const cycles = Math.max(1, Math.round(seconds / CYCLE_S));
  const cycleMs = (seconds * 1000) / cycles;
  const t0 = Date.now();
  const at = (ms) => sleep(Math.max(0, t0 + ms - Date.now()));
  world.poolBursts = [];
  const memory = { baselineKb: 0, peakKb: 0, afterKb: 0 };
  const pid = world.servers[1].proc.pid;
  memory.trendKb = []; // one sample a minute: growth that is linear in time shows here
  let ticks = 0;
  const sampler = setInterval(() => {
    const kb = rssKb(pid);
    memory.peakKb = Math.max(memory.peakKb, kb);
    if (++ticks % 60 === 0) memory.trendKb.push(kb);
  }, 1000);
  memory.stop = () => clearInterval(sampler);
  memory.now = () => rssKb(pid);

  const faults = [
    ['kill -9 instance 1', () => kill9(world)],
    ['Redis restart', () => redisRestart(redis)],
    ['replica stop', () => replicaStop(proxy)],
    ['pool exhaustion', () => poolExhaustion(world)],
  ];
  await at(Math.min(15000, cycleMs * 0.15));
  memory.baselineKb = rssKb(pid);
  console.log(`soak: RSS baseline of instance 2 after warm-up: ${(memory.baselineKb / 1024).toFixed(1)} MiB`);
  for (let c = 0; c < cycles; c++) {
    for (const [j, [name, run]] of faults.entries()) {
      await at(c * cycleMs + (j + 1) * 0.2 * cycleMs);
      console.log(`soak: ${((Date.now() - t0) / 1000).toFixed(0)} s: ${name}`);
      await world.rec.fault(name, run);
    }
  }
  await at(seconds * 1000);
  // instance 1 answers again before the load stops (the checks read from both)
  await until(async () => {
    try { return (await http(world.servers[0].url, 'GET', '/readyz')).status === 200; } catch { return false; }
  }, 30000, 'instance 1 ready');
  return memory;
}

module.exports = { runSchedule, rssKb };
