'use strict';
// The soak's verdict once the load has stopped: histories, acked messages, deliveries, readings,
// state, memory and readiness. Every failure goes to the recorder with an example.

const { sleep, http, fullHistory, until, metricValue } = require('../node/harness');

const SETTLE_MS = 20000;
// jsonb keeps its own key order: compare values, not their text
const sameJson = require('node:util').isDeepStrictEqual;
// a non-durable reading accepted by instance 1 at most one flush interval (1 s) before its kill -9 may be lost (§6.1)
const LOSS_ALLOWANCE_MS = 1000 + 1000;

async function retrying(what, fn, ms = 30000) {
  const deadline = Date.now() + ms;
  for (;;) {
    try { return await fn(); } catch (e) {
      if (Date.now() > deadline) throw new Error(`${what}: ${e.message}`);
      await sleep(500);
    }
  }
}

async function lastSeqs(world, admin) {
  const r = await http(world.servers[1].url, 'GET', '/api/v1/rooms?limit=500', admin);
  if (r.status !== 200) throw new Error(`GET /rooms ${r.status}`);
  return new Map(r.body.items.map((x) => [x.id, x.last_seq]));
}

async function runChecks(world, { rooms, sockets, sensors, memory, admin }) {
  const { rec } = world;
  const settleUntil = Date.now() + SETTLE_MS;
  const result = { poolBursts: world.poolBursts.join('; ') || 'none', memory };

  // every socket connected, recovered, and delivered up to each room's last seq
  let last = await retrying('room listing', () => lastSeqs(world, admin));
  try {
    await until(async () => {
      last = await lastSeqs(world, admin);
      return sockets.every((s) => s.caughtUp(last));
    }, 30000, 'every socket to reach its rooms\' last seq');
  } catch {
    for (const s of sockets.filter((x) => !x.caughtUp(last)).slice(0, 5)) {
      rec.fail('socket not caught up', `socket ${s.index} ready=${s.ready} connected=${s.socket.connected} `
        + s.rooms.map((r) => `${r}: next ${s.roomState.get(r).next} last ${last.get(r)}`).join(', '));
    }
  }

  // memory of instance 2 after the settle period (before the verification reads below), against its baseline
  await sleep(Math.max(0, settleUntil - Date.now()));
  memory.afterKb = memory.now();

  // histories: identical on both instances, seq 1..last, each acked message exactly once
  const byRoom = new Map();
  for (const room of rooms) {
    const [a, b] = await Promise.all(world.servers.map((s) => retrying(`history of ${room.id}`, () => fullHistory(s.url, admin, room.id))));
    if (!sameJson(a.map((m) => m.id), b.map((m) => m.id))) rec.fail('histories differ between instances', `${room.id}: ${a.length} vs ${b.length} messages`);
    a.forEach((m, j) => { if (m.seq !== j + 1) rec.fail('history not seq 1..last', `${room.id}: position ${j + 1} has seq ${m.seq}`); });
    if (a.length !== last.get(room.id)) rec.fail('ROOM-INFO last_seq differs from the history', `${room.id}: ${last.get(room.id)} vs ${a.length}`);
    byRoom.set(room.id, a);
  }
  const byClientId = new Map();
  for (const [room, history] of byRoom) {
    for (const m of history) {
      if (m.client_id === null) continue;
      const key = `${m.user_id}/${room}/${m.client_id}`;
      byClientId.set(key, (byClientId.get(key) || []).concat([m]));
    }
  }
  let acked = 0;
  let retried = 0;
  for (const s of world.sends) {
    const found = byClientId.get(`${s.userId}/${s.room}/${s.clientId}`) || [];
    if (found.length > 1) rec.fail('client_id stored twice', `${s.clientId}: seqs ${found.map((m) => m.seq)}`);
    if (!s.acked) { rec.fail('send never acked (even after the drain)', `${s.clientId} (${s.attempts} attempts)`); continue; }
    acked++;
    if (s.attempts > 1) retried++;
    const m = found[0];
    if (!m) rec.fail('acked message lost', `${s.clientId} seq ${s.acked.seq}`);
    else if (m.id !== s.acked.id || m.seq !== s.acked.seq || m.content !== s.content) {
      rec.fail('acked message differs in the history', `${s.clientId}: acked ${s.acked.id}/${s.acked.seq}, stored ${m.id}/${m.seq}`);
    }
  }
  const bySeq = new Map([...byRoom].map(([room, history]) => [room, new Map(history.map((m) => [m.seq, m]))]));
  for (const [key, id] of world.observed) {
    const [room, seq] = key.split('/');
    const m = bySeq.get(room).get(Number(seq));
    if (!m || m.id !== id) rec.fail('a socket saw a message not in the history', `${key}: ${id}`);
  }
  Object.assign(result, {
    acked, retried,
    ackedSocket: world.sends.filter((s) => s.acked && s.via === 'socket').length,
    ackedHttp: world.sends.filter((s) => s.acked && s.via === 'http').length,
    rooms: [...byRoom].map(([r, hst]) => `${r}=${hst.length}`).join(' '),
    deliveries: sockets.reduce((n, s) => n + s.deliveries, 0),
    reconnects: sockets.reduce((n, s) => n + s.connects - 1, 0),
  });

  // readings: every accepted one stored with its value, but for the kill -9 allowance
  await sleep(1500); // one flush interval after the last acceptance
  const kills = (rec.downWindows.get(0) || []).map((w) => w.from);
  let readings = 0;
  let durable = 0;
  let lost = 0;
  for (const s of sensors) {
    const stored = new Map();
    let cursor = null;
    do {
      const q = `from=${s.base}&to=${s.base + s.written + 1}&limit=5000${cursor ? `&cursor=${cursor}` : ''}`;
      const r = await retrying(`readings of ${s.id}`, async () => {
        const x = await http(world.servers[1].url, 'GET', `/api/v1/sensors/${s.id}/readings?${q}`, admin);
        if (x.status !== 200) throw new Error(`${x.status} ${x.text}`);
        return x;
      });
      for (const x of r.body.items) stored.set(Date.parse(x.ts), x.value);
      cursor = r.body.next_cursor;
    } while (cursor);
    for (const [ts, a] of s.accepted) {
      readings++;
      if (a.durable) durable++;
      if (!stored.has(ts)) {
        const allowed = !a.durable && a.instance === 0 && kills.some((k) => a.at <= k && a.at >= k - LOSS_ALLOWANCE_MS);
        if (allowed) lost++;
        else rec.fail('accepted reading lost', `${s.id} ts ${ts} (instance ${a.instance + 1}, durable ${a.durable}, accepted at ${(a.at / 1000).toFixed(1)} s)`);
      } else if (stored.get(ts) !== a.value) rec.fail('reading stored with another value', `${s.id} ts ${ts}: ${stored.get(ts)} vs ${a.value}`);
    }
  }
  Object.assign(result, { readings, durableReadings: durable, readingsLost: lost });

  // state: each socket's key holds its last acked write, or a later write that went unacked
  let stateWrites = 0;
  for (const s of sockets) {
    for (const [room, known] of s.stateKnown) {
      const r = await http(world.servers[1].url, 'GET', `/api/v1/rooms/${room}/state/${s.key}`, admin);
      const stored = r.status === 200 ? r.body : null;
      if (r.status !== 200 && r.status !== 404) { rec.fail('state read at the end', `${room}/${s.key}: ${r.status}`); continue; }
      const ok = (stored ? stored.version === known.version && sameJson(stored.value, known.value) : known.version === 0)
        || (stored && stored.version === known.version + 1 && known.unacked.some((v) => sameJson(v, stored.value)));
      if (!ok) rec.fail('state differs from the last acked write', `${room}/${s.key}: stored ${JSON.stringify(stored)}, acked v${known.version} ${JSON.stringify(known.value)}`);
      stateWrites += known.version; // versions count the acked (and unacked but applied) writes
    }
  }
  result.stateWrites = stateWrites;

  // and again after the verification reads (whole histories, readings pages of 5000): the bound holds for both
  memory.stop();
  memory.afterChecksKb = memory.now();
  memory.boundKb = memory.baselineKb * 1.5 + 64 * 1024;
  for (const kb of [memory.afterKb, memory.afterChecksKb]) {
    if (kb > memory.boundKb) rec.fail('RSS not back near its baseline', `${kb} KiB > ${memory.boundKb} KiB`);
  }

  // what the servers counted (instance 1's counters start again at its restart)
  result.metrics = [];
  for (const [i, s] of world.servers.entries()) {
    const text = (await http(s.url, 'GET', '/metrics')).text;
    const v = (name, labels) => metricValue(text, name, labels) ?? 0;
    result.metrics.push(`instance ${i + 1}: reads primary ${v('tsunagi_db_reads_total', { pool: 'primary' })}, `
      + `replica ${v('tsunagi_db_reads_total', { pool: 'replica-0' })}; gap fills ${v('tsunagi_delivery_gap_fills_total')}, `
      + `gap disconnects ${v('tsunagi_delivery_gap_disconnects_total')}, slow-consumer disconnects ${v('tsunagi_slow_consumer_disconnects_total')}, `
      + `acquire timeouts ${v('tsunagi_db_acquire_timeouts_total', { pool: 'primary' })}`);
  }

  for (const [i, s] of world.servers.entries()) {
    try {
      await until(async () => (await http(s.url, 'GET', '/readyz')).status === 200, 30000, 'readyz 200');
    } catch { rec.fail('not ready at the end', `instance ${i + 1}: ${(await http(s.url, 'GET', '/readyz')).text}`); }
  }
  return result;
}

module.exports = { runChecks };
