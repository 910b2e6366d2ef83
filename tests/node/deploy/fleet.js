'use strict';
// Clients written the way an application writes them, for the scale-out tests: they reconnect by
// themselves (socket.io-client's own reconnection, nothing forced by the test), re-join and
// `sync` from the last seq they hold on every connect, and retry an unacknowledged send with
// the same client_id. What they saw is kept so a test can check nothing was lost or repeated.

const assert = require('node:assert/strict');
const { io } = require('socket.io-client');
const h = require('../harness');

const open = new Set();
/** Closes every client this module opened (for `after` hooks: nginx waits for open sockets). */
function closeClients() { for (const s of open) s.close(); open.clear(); }

const RECONNECT = { reconnection: true, reconnectionDelay: 100, reconnectionDelayMax: 1000, randomizationFactor: 0.3 };

/** A socket.io-client socket that reconnects; `disconnects` records each drop and how long the way back took. */
function openSocket(url, token, transports) {
  const socket = io(url, { auth: { token }, transports, forceNew: true, timeout: 5000, ...RECONNECT });
  open.add(socket);
  const stats = { disconnects: [], reasons: [] };
  let downSince = null;
  socket.on('disconnect', (reason) => {
    downSince = Date.now();
    stats.reasons.push(reason);
  });
  socket.on('connect', () => {
    if (downSince !== null) stats.disconnects.push(Date.now() - downSince);
    downSince = null;
  });
  return { socket, stats, down: () => downSince !== null };
}

/**
 * A reader of `room`: joins and syncs on every (re)connect. `seqs()` is what it holds, merged
 * by seq; `liveOrderBroken` counts live messages that did not follow the previous one directly
 * while the socket stayed connected (the §3 order guarantee).
 */
function reader(url, token, room, { transports = ['websocket'] } = {}) {
  const { socket, stats, down } = openSocket(url, token, transports);
  const held = new Map();
  let contiguous = 0;
  let lastLive = null;
  let liveOrderBroken = 0;
  let syncs = 0;
  const take = (m) => {
    if (m.room !== room) return;
    held.set(m.seq, m);
    while (held.has(contiguous + 1)) contiguous++;
  };
  socket.on('message', (m) => {
    if (m.room !== room) return;
    if (lastLive !== null && m.seq !== lastLive + 1) liveOrderBroken++;
    lastLive = m.seq;
    take(m);
  });
  let ready;
  const joined = new Promise((resolve) => { ready = resolve; });
  socket.on('connect', async () => {
    lastLive = null; // a new connection: live order restarts after the join
    try {
      const j = await socket.timeout(5000).emitWithAck('join', { room });
      if (!j.ok) throw new Error(`join: ${JSON.stringify(j)}`);
      for (;;) {
        const s = await socket.timeout(5000).emitWithAck('sync', { room, since_seq: contiguous, limit: 500 });
        if (!s.ok) throw new Error(`sync: ${JSON.stringify(s)}`);
        syncs++;
        for (const m of s.messages) take(m);
        if (!s.more) break;
      }
      ready();
    } catch {
      // the connection went away mid-recovery: the next connect recovers again
    }
  });
  return {
    socket, stats, down, joined,
    seqs: () => [...held.keys()].sort((a, b) => a - b),
    contiguous: () => contiguous,
    liveOrderBroken: () => liveOrderBroken,
    syncs: () => syncs,
    close: () => socket.close(),
    describe: () => `holds 1..${contiguous} (${held.size} in all), connected ${socket.connected}, `
      + `reconnects ${stats.disconnects.length} (${stats.reasons.join(' ')}), syncs ${syncs}`,
  };
}

/** Waits until every reader holds 1..total; on timeout says what each one holds. */
async function untilAllHold(readers, total, timeoutMs) {
  try {
    await h.until(() => readers.every((r) => r.contiguous() >= total), timeoutMs, `every reader holds ${total}`);
  } catch (e) {
    throw new Error(`${e.message}:\n${readers.map((r) => r.describe()).join('\n')}`);
  }
}

/**
 * A sender to `room`: `send(content)` resolves with the acked message, retrying with the same
 * client_id (after reconnecting if need be) until an ack says ok.
 */
function sender(url, token, room, { transports = ['websocket'], name = 's' } = {}) {
  const { socket, stats, down } = openSocket(url, token, transports);
  let n = 0;
  const acked = [];
  const connected = () => (socket.connected ? Promise.resolve()
    : new Promise((resolve) => socket.once('connect', resolve)));
  async function send(content) {
    const clientId = `${name}-${++n}`;
    for (let attempt = 0; ; attempt++) {
      if (attempt > 200) throw new Error(`send ${clientId}: never acknowledged`);
      await h.withTimeout(connected(), 30000, `${name} reconnects`);
      let r;
      try {
        r = await socket.timeout(3000).emitWithAck('send', { room, content, client_id: clientId });
      } catch {
        continue; // no ack (the instance went away): retry, the client_id makes it idempotent
      }
      if (r.ok) { acked.push(r.message); return r.message; }
      if (r.error && ['unavailable', 'rate_limited'].includes(r.error.code)) {
        await h.sleep(r.error.retry_after_ms || 50);
        continue;
      }
      throw new Error(`send ${clientId}: ${JSON.stringify(r)}`);
    }
  }
  return { socket, stats, down, send, acked, connected, close: () => socket.close() };
}

/** Every acked message is in the history exactly once and the history is 1..n with no gap. */
async function assertHistoryComplete(base, room, senders) {
  const history = await h.fullHistory(base, h.userToken('fleet-auditor'), room);
  assert.deepEqual(history.map((m) => m.seq), Array.from({ length: history.length }, (_, i) => i + 1),
    'history seqs are 1..n');
  const byClientId = new Map();
  for (const m of history) {
    const key = `${m.user_id}/${m.client_id}`;
    assert.ok(!byClientId.has(key), `duplicate in history: ${key}`);
    byClientId.set(key, m);
  }
  let acked = 0;
  for (const s of senders) {
    for (const m of s.acked) {
      acked++;
      const stored = byClientId.get(`${m.user_id}/${m.client_id}`);
      assert.ok(stored, `acked message ${m.client_id} is missing from history`);
      assert.equal(stored.seq, m.seq, `acked ${m.client_id} changed seq`);
    }
  }
  return { history, acked };
}

/** The value of tsunagi_sockets_connected on one instance. */
async function socketsOn(server) {
  const r = await h.http(server.url, 'GET', '/metrics');
  return h.metricValue(r.text, 'tsunagi_sockets_connected') || 0;
}

module.exports = { closeClients, untilAllHold, reader, sender, assertHistoryComplete, socketsOn };
