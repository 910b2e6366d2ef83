#!/usr/bin/env node
'use strict';
// A soak under faults (docs/security.md, "Soak under faults"): two tsunagi instances on one PostgreSQL database
// with a read replica and Redis, mixed load for --seconds (default 600), faults on a schedule
// (kill -9 of instance 1, Redis restart, replica stop, pool exhaustion), then the checks: no acked
// message lost or duplicated, seq gap-free, every socket saw every message in order, only the
// contract's answers, memory back near its baseline, no panic, ready again.
//
//   TSUNAGI_TEST_PG=postgres://postgres@127.0.0.1:5432 TSUNAGI_TEST_REPLICA=postgres://postgres@127.0.0.1:5433 \
//     node tests/soak/soak.js --seconds 120

const { parseArgs } = require('node:util');
const { execFileSync } = require('node:child_process');
const fs = require('node:fs');

process.env.TSUNAGI_TEST_PG ||= 'postgres://postgres@127.0.0.1:5432'; // read by the harness at load
const h = require('../node/harness');
const { PrivateRedis, ReplicaProxy } = require('./faults');
const { Recorder, EXPECTED_ACK_CODES, EXPECTED_HTTP_STATUSES } = require('./record');
const { SoakSocket } = require('./clients');
const { httpSender, sensorWriter, httpReader } = require('./http-load');
const { runSchedule } = require('./schedule');
const { runChecks } = require('./checks');

const { values: args } = parseArgs({ options: { seconds: { type: 'string', default: '600' } } });
const SECONDS = Number(args.seconds);
if (!Number.isFinite(SECONDS) || SECONDS < 30) throw new Error('--seconds must be a number ≥ 30');

const REPLICA_BASE = process.env.TSUNAGI_TEST_REPLICA || 'postgres://postgres@127.0.0.1:5433';
const SOCKETS = 40;
const ROOMS = 8; // the last two private
const POOL = { size: 5, acquireMs: 1000, statementMs: 2000 };

function psql(url, sql) {
  return execFileSync('psql', ['-X', '-qAt', '-v', 'ON_ERROR_STOP=1', '-d', url, '-c', sql], { stdio: 'pipe' }).toString();
}

async function main() {
  const startedAt = Date.now();
  const rec = new Recorder();
  const cleanup = [];
  let failed = true;
  try {
    // --- topology: private Redis, fresh database (and its replica copy through a proxy), 2 instances
    const redis = new PrivateRedis(await h.freePort());
    await redis.start();
    cleanup.push(() => redis.stop());
    const databaseUrl = h.freshPgDatabase();
    const dbName = new URL(databaseUrl).pathname.slice(1);
    cleanup.push(() => psql(`${process.env.TSUNAGI_TEST_PG.replace(/\/+$/, '')}/postgres`, `DROP DATABASE IF EXISTS ${dbName} WITH (FORCE)`));
    const replica = new URL(REPLICA_BASE);
    await h.until(() => { try { psql(`${REPLICA_BASE}/${dbName}`, 'SELECT 1'); return true; } catch { return false; } },
      30000, `the database on the replica ${replica.host} (scripts/pg-replica up)`);
    const proxy = new ReplicaProxy(Number(replica.port || 5432));
    await proxy.listen();
    cleanup.push(() => proxy.close());
    const env = {
      TSUNAGI_DATABASE_URL: databaseUrl,
      TSUNAGI_REPLICA_URLS: `postgres://${replica.username || 'postgres'}@127.0.0.1:${proxy.port}/${dbName}`,
      TSUNAGI_REPLICA_CHECK_MS: '250',
      TSUNAGI_REDIS_URL: redis.url,
      TSUNAGI_REDIS_PREFIX: `soak-${process.pid}`,
      TSUNAGI_DB_POOL_SIZE: String(POOL.size),
      TSUNAGI_DB_READ_POOL_SIZE: '3',
      TSUNAGI_DB_ACQUIRE_TIMEOUT_MS: String(POOL.acquireMs),
      TSUNAGI_DB_STATEMENT_TIMEOUT_MS: String(POOL.statementMs),
    };
    const servers = [];
    cleanup.push(async () => { for (const s of servers) await s.destroy(); });
    for (let i = 0; i < 2; i++) servers.push(await h.startServer({ env }));
    for (const s of servers) await h.until(async () => (await h.http(s.url, 'GET', '/readyz')).status === 200, 20000, 'ready');

    const world = {
      rec, servers, sends: [], observed: new Map(), lastSeqSeen: new Map(), syncedMessages: 0,
      stopLoad: false, drainUntil: Infinity, databaseUrl, pool: POOL,
      tokens: { user: (sub) => h.userToken(sub), admin: (sub) => h.adminToken(sub) },
    };

    // --- fixtures: rooms (two private), members, sensors, registered users
    const admin = h.adminToken('soak-admin');
    const rooms = Array.from({ length: ROOMS }, (_, i) => ({ id: `soak-r${i}`, private: i >= ROOMS - 2 }));
    for (const r of rooms) await h.createRoom(servers[1].url, admin, r.id, { private: r.private });
    const roomsOf = (i) => [rooms[i % ROOMS].id, rooms[(i + 3) % ROOMS].id];
    for (let i = 0; i < SOCKETS; i++) {
      for (const id of roomsOf(i)) if (rooms.find((r) => r.id === id).private) await h.addMember(servers[1].url, admin, id, `soak-u${i}`);
    }
    const sensors = [];
    for (let k = 0; k < 4; k++) {
      const s = { id: `soak-s${k}`, token: h.userToken(`soak-so${k}`), base: Date.now() - 60000, written: 0, accepted: new Map() };
      const r = await h.http(servers[1].url, 'POST', '/api/v1/sensors', s.token, { id: s.id });
      if (r.status !== 201) throw new Error(`create sensor: ${r.status} ${r.text}`);
      sensors.push(s);
    }
    const userIds = [];
    for (let k = 0; k < 3; k++) userIds.push((await h.registerUser(servers[1].url, { username: `soak_${process.pid % 10000}_${k}` })).user.id);

    // --- load
    const sockets = [];
    for (let i = 0; i < SOCKETS; i++) {
      // every fifth socket starts on long-polling and upgrades; the others use WebSocket only
      const transports = i % 5 === 4 ? ['polling', 'websocket'] : ['websocket'];
      const s = new SoakSocket(world, i, i % 2, h.userToken(`soak-u${i}`), roomsOf(i), transports);
      s.start();
      sockets.push(s);
    }
    cleanup.push(() => sockets.forEach((s) => s.close()));
    await h.until(() => sockets.every((s) => s.ready), 30000, 'every socket joined');
    const publicRooms = rooms.filter((r) => !r.private).map((r) => r.id);
    const loops = [
      ...sockets.map((s) => s.loop),
      ...[0, 1, 2, 3].map((k) => httpSender(world, k, publicRooms)),
      ...sensors.map((s) => sensorWriter(world, s)),
      ...[0, 1, 2, 3].map((k) => httpReader(world, k, { rooms, sensors, userIds })),
    ];
    const loadStarted = Date.now();
    console.log(`soak: ${SECONDS} s of load on ${servers.map((s) => s.url).join(' and ')} (${SOCKETS} sockets, ${ROOMS} rooms, `
      + `${sensors.length} sensors; database ${dbName}, Redis ${redis.url}, replica through 127.0.0.1:${proxy.port})`);

    const memory = await runSchedule(world, { seconds: SECONDS, redis, proxy });

    // --- stop, drain every unacked send, let the servers settle
    world.stopLoad = true;
    world.drainUntil = Date.now() + 60000;
    await Promise.all(loops);
    const loadSeconds = (Date.now() - loadStarted) / 1000;
    const result = await runChecks(world, { rooms, sockets, sensors, memory, admin });
    result.loadSeconds = loadSeconds;

    // --- SIGTERM both: each must exit 0 (accepted readings written first)
    sockets.forEach((s) => s.close());
    for (const [i, s] of servers.entries()) {
      const r = await s.stop();
      if (!r || r.code !== 0) rec.fail('exit after SIGTERM', `instance ${i + 1}: ${JSON.stringify(r)}`);
    }
    for (const [i, s] of servers.entries()) {
      const panics = s.log().split('\n').filter((l) => l.includes('panicked'));
      if (panics.length) rec.fail('panic in a server log', `instance ${i + 1}: ${panics[0].slice(0, 300)}`);
    }
    failed = printSummary(rec, world, result, (Date.now() - startedAt) / 1000);
    if (failed) {
      for (const [i, s] of servers.entries()) {
        const keep = `/tmp/soak-instance${i + 1}-${process.pid}.log`;
        fs.copyFileSync(s.logPath, keep);
        console.log(`soak: log of instance ${i + 1} kept in ${keep}`);
      }
    }
  } finally {
    for (const fn of cleanup.reverse()) { try { await fn(); } catch (e) { console.error(`soak: cleanup: ${e.message}`); } }
  }
  process.exit(failed ? 1 : 0);
}

function printSummary(rec, world, r, totalSeconds) {
  const mib = (kb) => (kb / 1024).toFixed(1);
  const lines = [
    '',
    '================ soak summary ================',
    `duration: ${totalSeconds.toFixed(0)} s in all, ${r.loadSeconds.toFixed(0)} s of load`,
    `messages acked: ${r.acked} (${r.ackedSocket} over Socket.IO, ${r.ackedHttp} over HTTP); ${r.retried} acked after a failed or unanswered attempt; messages per room: ${r.rooms}`,
    `deliveries checked: ${r.deliveries} live, ${world.syncedMessages} through sync after reconnects; socket reconnects: ${r.reconnects}`,
    `readings accepted: ${r.readings} (${r.durableReadings} durable); lost within the kill -9 allowance: ${r.readingsLost}`,
    `state writes acked: ${r.stateWrites}`,
    `faults: ${rec.faultLog.map((f) => `${f.name} @${(f.from / 1000).toFixed(0)}s (${((f.to - f.from) / 1000).toFixed(1)} s)`).join(', ')}`,
    `pool exhaustion bursts: ${r.poolBursts}`,
    `max latency: ack ${rec.maxLatency.ack} ms, HTTP ${rec.maxLatency.http} ms; requests unanswered while instance 1 was down: ${rec.noAnswer.expected}`,
    `server counters: ${r.metrics.join('; ')}`,
    `RSS of instance 2 (never killed): baseline ${mib(r.memory.baselineKb)} MiB after warm-up, peak ${mib(r.memory.peakKb)} MiB, after a 20 s settle ${mib(r.memory.afterKb)} MiB, after the verification reads ${mib(r.memory.afterChecksKb)} MiB; bound baseline × 1.5 + 64 MiB = ${mib(r.memory.boundKb)} MiB`,
    `RSS of instance 2 each minute: ${r.memory.trendKb.map(mib).join(', ')} MiB`,
    `answers allowed: ack codes ${[...EXPECTED_ACK_CODES].join(', ')} (conflict for state_set only); HTTP ${[...EXPECTED_HTTP_STATUSES].join(', ')}; `
      + 'no answer only from instance 1 while it was down (±2 s)',
    'answers seen:',
    ...[...rec.answers.entries()].sort().map(([k, v]) => `  ${k}: ${v}`),
    'answers during each fault:',
    ...[...rec.faultAnswers.entries()].map(([f, m]) => `  ${f}: ${[...m.entries()].filter(([k]) => !k.endsWith(' ok') && !/ 20[0-4]$/.test(k)).map(([k, v]) => `${k} ×${v}`).join(', ') || 'all ok'}`),
  ];
  if (rec.violations.size === 0) lines.push('RESULT: PASS (no violation)');
  else {
    lines.push('RESULT: FAIL');
    for (const [cat, v] of rec.violations) lines.push(`  ${cat}: ${v.count}`, ...v.examples.map((e) => `      e.g. ${e}`));
  }
  console.log(lines.join('\n'));
  return rec.violations.size > 0;
}

main().catch((e) => { console.error(e); process.exit(1); });
