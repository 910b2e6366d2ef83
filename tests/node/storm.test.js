'use strict';
// Reconnect storm (PROTOCOL.md §3 Recovery): 1 000 official socket.io-client sockets with their
// default reconnection (1 s doubling to 5 s, jitter 0.5) lose their server to kill -9; it is
// started again on the same file. Every socket reconnects by itself, joins, syncs from the last
// seq it saw, and ends with every acked message of its room exactly once, in order. The server
// runs with small admission bounds so that the storm meets them: handshakes past
// TSUNAGI_HANDSHAKES_PENDING get a 503 the client retries with its backoff, and join/sync reads
// queue behind TSUNAGI_HISTORY_READS instead of timing out on the read pool.
// (The 10 000-client figure is bench/storm.sh.)

const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { io } = require('socket.io-client');
const h = require('./harness');

const CLIENTS = 1000;
const PER_ROOM = 50;
const ROOMS = CLIENTS / PER_ROOM;

/** One socket's account: the ids it holds in seq order, and what went wrong. */
function stormClient(url, token, room) {
  const st = { room, next: 1, ids: [], dups: 0, skipped: 0, errors: [], recovered: 0, connects: 0 };
  const socket = io(url, {
    auth: { token },
    transports: ['websocket'],
    forceNew: true,
    reconnectionDelay: 1000,
    reconnectionDelayMax: 5000,
    randomizationFactor: 0.5,
  });
  st.socket = socket;
  let buffered = null; // live messages held while a sync runs
  const apply = (m) => {
    if (m.seq < st.next) { st.dups += 1; return; }
    if (m.seq > st.next) st.skipped += m.seq - st.next;
    st.ids.push(m.id);
    st.next = m.seq + 1;
  };
  // join and sync answered `unavailable` or `rate_limited` are retried, as an application would
  const call = async (event, payload) => {
    for (;;) {
      const res = await socket.timeout(30000).emitWithAck(event, payload);
      if (res.ok) return res;
      const code = res.error && res.error.code;
      if (code !== 'unavailable' && code !== 'rate_limited') throw new Error(`${event}: ${JSON.stringify(res)}`);
      await h.sleep(code === 'rate_limited' ? res.error.retry_after_ms : 300);
    }
  };
  socket.on('message', (m) => (buffered ? buffered.push(m) : apply(m)));
  socket.on('connect', async () => {
    st.connects += 1;
    buffered = [];
    try {
      const joined = await call('join', { room });
      while (st.next <= joined.last_seq) {
        const page = await call('sync', { room, since_seq: st.next - 1, limit: 500 });
        if (page.messages.length === 0) throw new Error(`sync stopped short of ${joined.last_seq}`);
        for (const m of page.messages) if (m.seq <= joined.last_seq) apply(m);
      }
      const live = buffered;
      buffered = null;
      for (const m of live) apply(m);
      st.recovered = st.connects;
    } catch (e) {
      // a connection lost mid-recovery recovers on its next connect
      buffered = null;
      if (socket.connected) st.errors.push(String(e));
    }
  });
  return st;
}

describe('reconnect storm: kill -9 under 1 000 sockets', () => {
  let srv;
  const clients = [];
  after(async () => {
    for (const c of clients) c.socket.close();
    if (srv) await srv.destroy();
  });

  before(async () => {
    srv = await h.startServer({
      env: {
        TSUNAGI_CONNECTIONS_PER_ADDRESS: '0',
        TSUNAGI_SEND_RATE: '0',
        TSUNAGI_WRITE_RATE: '0',
        TSUNAGI_HANDSHAKES_PENDING: '20',
        TSUNAGI_HISTORY_READS: '2',
      },
    });
  });

  it('every socket reconnects by itself and ends with every acked message once, in order', { timeout: 60000 }, async () => {
    const admin = h.adminToken('storm-admin');
    const rooms = Array.from({ length: ROOMS }, (_, r) => `storm-${r}`);
    for (const r of rooms) await h.createRoom(srv.url, admin, r);
    for (let i = 0; i < CLIENTS; i += 1) {
      clients.push(stormClient(srv.url, h.userToken(`storm-${i}`), rooms[Math.floor(i / PER_ROOM)]));
    }
    await h.until(() => clients.every((c) => c.recovered === 1), 20000, 'every socket joined');

    // one sender per room over HTTP; each post retried with its client_id until acked
    const acked = rooms.map(() => new Map()); // seq → id
    const sender = h.userToken('storm-sender');
    let sending = true;
    const senders = rooms.map(async (room, r) => {
      for (let n = 0; sending; n += 1) {
        for (;;) {
          try {
            const res = await h.http(srv.url, 'POST', `/api/v1/rooms/${room}/messages`, sender,
              { content: `m${n}`, client_id: `c${n}` });
            if (res.status === 200 || res.status === 201) { acked[r].set(res.body.seq, res.body.id); break; }
          } catch { /* the server is down: try again */ }
          await h.sleep(50);
        }
        await h.sleep(100);
      }
    });
    await h.until(() => acked.every((m) => m.size >= 3), 10000, 'messages before the kill');

    await srv.kill9();
    await h.sleep(300); // sends fail meanwhile and are retried
    await srv.restart();
    await h.until(() => clients.every((c) => c.connects >= 2 && c.recovered === c.connects && c.socket.connected),
      40000, 'every socket reconnected and recovered');
    await h.until(() => acked.every((m) => Math.max(...m.keys()) >= 6), 10000, 'messages after the restart');
    sending = false;
    await Promise.all(senders);

    const finals = acked.map((m) => Math.max(...m.keys()));
    await h.until(() => clients.every((c) => c.next > finals[rooms.indexOf(c.room)]), 20000, 'every socket caught up');
    for (const c of clients) {
      const r = rooms.indexOf(c.room);
      const want = Array.from({ length: finals[r] }, (_, k) => acked[r].get(k + 1));
      assert.deepEqual(c.errors, []);
      assert.equal(c.dups, 0, 'no duplicate');
      assert.equal(c.skipped, 0, 'no hole');
      assert.deepEqual(c.ids, want, `socket of ${c.room} holds every acked message once, in order`);
    }
    const metrics = (await h.http(srv.url, 'GET', '/metrics')).text;
    assert.equal(h.metricValue(metrics, 'tsunagi_db_acquire_timeouts_total') ?? 0, 0,
      'join/sync queued behind the history gate instead of timing out on the pool');
    assert.equal(h.metricValue(metrics, 'tsunagi_history_reads_total', { result: 'refused' }), 0);
    assert.ok(h.metricValue(metrics, 'tsunagi_admission_handshakes_total', { result: 'admitted' }) >= CLIENTS);
  });
});
