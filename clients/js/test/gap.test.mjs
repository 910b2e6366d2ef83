// Gaps: live messages that never arrive, and a connection closed under the client, are recovered with sync.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { h, connect, collect, assertContiguous } from './helpers.mjs';

let server;
const clients = [];
const alice = h.userToken('alice');
before(async () => { server = await h.startServer({ env: { TSUNAGI_SEND_RATE: '0' } }); });
after(async () => { for (const c of clients) c.close(); await server?.destroy(); });

const open = (opts = {}) => {
  const c = connect({ url: server.url, token: h.userToken('bob'), transports: ['websocket'], ...opts });
  clients.push(c);
  return c;
};
const post = (room, content) => h.http(server.url, 'POST', `/api/v1/rooms/${room}/messages`, alice, { content });

/** Counts the client's outgoing `sync` events. */
function countSyncs(client) {
  const counter = { n: 0 };
  const emit = client.socket.emit.bind(client.socket);
  client.socket.emit = (ev, ...args) => { if (ev === 'sync') counter.n++; return emit(ev, ...args); };
  // socket.timeout() returns the socket itself with a flag, so emits through it are counted too.
  return counter;
}

test('live messages lost in transit: the next one reveals the gap, sync pages fill it, nothing twice', async () => {
  await h.createRoom(server.url, alice, 'gap1');
  const c = open({ syncLimit: 40 });
  const room = c.room('gap1');
  const got = collect(room);
  await room.join();
  const syncs = countSyncs(c);
  // Drop seq 3..150 on the way in, as a lossy path would.
  const [deliver] = c.socket.listeners('message');
  c.socket.off('message', deliver);
  c.socket.on('message', (m) => { if (m.seq < 3 || m.seq > 150) deliver(m); });

  for (let i = 1; i <= 160; i++) assert.equal((await post('gap1', `m${i}`)).status, 201);
  await h.until(() => got.length >= 160, 15000, 'recovery');
  await new Promise((r) => setTimeout(r, 300));
  assert.equal(got.length, 160);
  assertContiguous(got);
  assert.deepEqual(got.map((m) => m.content), Array.from({ length: 160 }, (_, i) => `m${i + 1}`));
  assert.ok(syncs.n >= 4, `148 missing messages at 40 a page take several sync pages (${syncs.n})`);
});

test('the connection closed under the client: it re-joins, syncs past the 50 of the join history, nothing twice', async () => {
  await h.createRoom(server.url, alice, 'gap2');
  const c = open({ reconnectionDelay: 2500, reconnectionDelayMax: 2500 });
  const room = c.room('gap2');
  const got = collect(room);
  await room.join();
  const statuses = [];
  c.on('status', (s) => statuses.push(s));
  for (let i = 1; i <= 5; i++) await post('gap2', `m${i}`);
  await h.until(() => got.length === 5, 5000, 'first five');

  c.socket.io.engine.close(); // the transport drops; socket.io-client reconnects after the delay
  await h.until(() => c.status === 'offline', 2000, 'offline');
  for (let i = 6; i <= 130; i++) await post('gap2', `m${i}`);
  await h.until(() => got.length >= 130, 15000, 'recovery');
  await new Promise((r) => setTimeout(r, 300));
  assertContiguous(got);
  assert.equal(got.length, 130);
  assert.deepEqual(statuses.slice(0, 2), ['offline', 'connected']);
  // Live again after the recovery.
  await post('gap2', 'after');
  await h.until(() => got.length === 131, 5000, 'live after recovery');
  assert.equal(got[130].content, 'after');
});
