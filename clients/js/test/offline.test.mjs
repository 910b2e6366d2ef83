// The offline queue: sends while disconnected are pending, then go out once, in order, with their client_id.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { h, connect, collect, assertContiguous } from './helpers.mjs';

let server;
const clients = [];
const alice = h.userToken('alice');
before(async () => {
  server = await h.startServer({ env: { TSUNAGI_SEND_RATE: '0', TSUNAGI_MAX_MESSAGE_BYTES: '100' } });
  await h.createRoom(server.url, alice, 'q');
});
after(async () => { for (const c of clients) c.close(); await server?.destroy(); });

const open = (opts = {}) => {
  const c = connect({ url: server.url, token: alice, transports: ['websocket'], reconnectionDelayMax: 500, ...opts });
  clients.push(c);
  return c;
};

/** A Storage stand-in (what localStorage offers). */
function memoryStorage() {
  const m = new Map();
  return {
    getItem: (k) => (m.has(k) ? m.get(k) : null), setItem: (k, v) => m.set(k, String(v)),
    removeItem: (k) => m.delete(k), clear: () => m.clear(), key: (i) => [...m.keys()][i] ?? null,
    get length() { return m.size; }, map: m,
  };
}

test('sent while the server is down: pending, then delivered once and in order after it is back', async () => {
  const c = open();
  const room = c.room('q');
  const got = collect(room);
  await room.join();
  await room.send('before');
  await h.until(() => got.length === 1, 5000, 'first');

  await server.stop();
  await h.until(() => c.status === 'offline', 5000, 'offline');
  const pendingEvents = [];
  room.on('pending', (p) => pendingEvents.push(p));
  const sends = ['a', 'b', 'c', 'd'].map((s) => room.send(s));
  const pending = room.pending();
  assert.deepEqual(pending.map((p) => [p.content, p.state]), [['a', 'queued'], ['b', 'queued'], ['c', 'queued'], ['d', 'queued']]);
  assert.equal(new Set(pending.map((p) => p.client_id)).size, 4);
  assert.equal(pendingEvents.length, 4);

  await server.restart();
  const acked = await h.withTimeout(Promise.all(sends), 15000, 'sends after restart');
  assert.deepEqual(acked.map((m) => m.client_id), pending.map((p) => p.client_id));
  assert.deepEqual(room.pending(), []);
  assert.deepEqual(pendingEvents.at(-1), []);
  await h.until(() => got.length === 5, 5000, 'delivered');
  await new Promise((r) => setTimeout(r, 300));
  assertContiguous(got);
  assert.deepEqual(got.map((m) => m.content), ['before', 'a', 'b', 'c', 'd']);
  const history = await h.fullHistory(server.url, alice, 'q');
  assert.deepEqual(history.map((m) => [m.content, m.client_id]), got.map((m) => [m.content, m.client_id]));
});

test('with storage, the queue survives a reload (a new client on the same storage sends it)', async () => {
  const storage = memoryStorage();
  const first = open({ storage });
  const room = first.room('q');
  await room.join();
  await server.stop();
  await h.until(() => first.status === 'offline', 5000, 'offline');
  room.send('kept-1').catch(() => {});
  room.send('kept-2').catch(() => {});
  const ids = room.pending().map((p) => p.client_id);
  first.close(); // the page goes away with its queue unsent
  assert.equal(storage.map.size, 1);
  assert.match([...storage.map.keys()][0], /alice/);

  await server.restart();
  const second = open({ storage });
  const again = second.room('q');
  assert.deepEqual(again.pending().map((p) => p.client_id), ids, 'the reloaded page shows the same queue');
  await h.until(async () => again.pending().length === 0, 10000, 'queue sent');
  assert.equal(storage.map.size, 0);
  const history = await h.fullHistory(server.url, alice, 'q');
  const tail = history.slice(-2);
  assert.deepEqual(tail.map((m) => [m.content, m.client_id]), [['kept-1', ids[0]], ['kept-2', ids[1]]]);
});

test('a definitive error rejects the send and drops it from the queue; the next one still goes out', async () => {
  const c = open();
  const room = c.room('q');
  await room.join();
  const big = room.send('x'.repeat(200));
  const ok = room.send('small');
  await assert.rejects(big, (e) => e.code === 'too_large');
  assert.equal((await ok).content, 'small');
  await assert.rejects(room.send(''), (e) => e.code === 'bad_request');
  assert.deepEqual(room.pending(), []);
});

test('an ack lost after the commit: the retry reuses the client_id and the server keeps one message', async () => {
  const c = open();
  const room = c.room('q');
  await room.join();
  const call = c._call.bind(c);
  let lost = 0;
  // The first send reaches the server and commits, but its ack "times out" on the way back.
  c._call = async (ev, p) => {
    const ack = await call(ev, p);
    if (ev === 'send' && !lost++) throw Object.assign(new Error('timeout'), { code: 'timeout' });
    return ack;
  };
  const before = (await h.fullHistory(server.url, alice, 'q')).length;
  const m = await h.withTimeout(room.send('once'), 10000, 'retried send');
  assert.equal(lost, 2, 'sent twice');
  const history = await h.fullHistory(server.url, alice, 'q');
  assert.equal(history.length, before + 1);
  assert.equal(history.at(-1).id, m.id);
});
