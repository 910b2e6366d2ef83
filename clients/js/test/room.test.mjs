// reset handling, room state (set, conflict, join snapshot, events), presence and typing.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { h, connect, collect, assertContiguous } from './helpers.mjs';

let server;
const clients = [];
const alice = h.userToken('alice');
before(async () => { server = await h.startServer({ env: { TSUNAGI_SEND_RATE: '0' } }); });
after(async () => { for (const c of clients) c.close(); await server?.destroy(); });

const open = (tok, opts = {}) => {
  const c = connect({ url: server.url, token: tok, transports: ['websocket'], reconnectionDelayMax: 500, ...opts });
  clients.push(c);
  return c;
};
const post = (room, content) => h.http(server.url, 'POST', `/api/v1/rooms/${room}/messages`, alice, { content });

test('a sync answered with reset: the room re-joins, emits reset and re-delivers from the join history', async () => {
  await h.createRoom(server.url, alice, 'r1');
  for (let i = 1; i <= 3; i++) await post('r1', `m${i}`);
  const c = open(h.userToken('bob'));
  const room = c.room('r1');
  const got = collect(room);
  let resets = 0;
  room.on('reset', () => { resets++; got.length = 0; }); // a UI drops what it shows
  await room.join();
  assert.equal(got.length, 3);

  // The next sync is answered `reset` (what the server says for a foreign epoch or a cursor past its end).
  const call = c._call.bind(c);
  let faked = 0;
  c._call = (ev, p) => (ev === 'sync' && !faked++ ? Promise.reject(Object.assign(new Error('reset'), { code: 'reset' })) : call(ev, p));
  const [deliver] = c.socket.listeners('message');
  c.socket.off('message', deliver);
  c.socket.on('message', (m) => { if (m.seq !== 4) deliver(m); }); // seq 4 lost → seq 5 reveals a gap → sync
  await post('r1', 'm4');
  await post('r1', 'm5');
  await h.until(() => resets === 1 && got.length === 5, 5000, 'reset and re-delivery');
  assert.equal(faked, 1);
  assertContiguous(got);
  assert.deepEqual(got.map((m) => m.content), ['m1', 'm2', 'm3', 'm4', 'm5']);
});

test('a wiped server with the room created again (a new epoch): reset, then the new history', async () => {
  await h.createRoom(server.url, alice, 'r2');
  for (let i = 1; i <= 4; i++) await post('r2', `old${i}`);
  const c = open(h.userToken('bob'));
  const room = c.room('r2');
  const got = collect(room);
  let resets = 0;
  room.on('reset', () => { resets++; got.length = 0; });
  const { epoch } = await room.join();
  assert.equal(got.length, 4);

  // Offline during the wipe (no reconnect yet), so the re-join finds the room created again.
  c.socket.disconnect();
  await server.stop();
  server.wipe();
  await server.restart();
  const again = await h.createRoom(server.url, alice, 'r2');
  c.socket.connect();
  assert.notEqual(again.epoch, epoch);
  await post('r2', 'new1');
  await h.until(() => resets === 1 && got.length === 1, 10000, 'reset after the new epoch');
  assert.equal(got[0].content, 'new1');
  assert.equal(got[0].seq, 1);
  assert.equal(room.epoch, again.epoch);
  await post('r2', 'new2');
  await h.until(() => got.length === 2, 5000, 'live after reset');
  assertContiguous(got);
  // (Rooms created before the wipe are gone; later tests create their own.)
});

test('room state: set, conflict with current, events in version order, the join snapshot', async () => {
  await h.createRoom(server.url, alice, 's1');
  const a = open(alice).room('s1');
  const b = open(h.userToken('bob')).room('s1');
  await Promise.all([a.join(), b.join()]);
  const seenByB = [];
  b.state.on('state', (s) => seenByB.push([s.key, s.value, s.version]));

  const s1 = await a.state.set('topic', 'hello', 0);
  assert.equal(s1.version, 1);
  assert.equal(a.state.get('topic').value, 'hello');
  const s2 = await a.state.set('topic', 'world', 1);
  assert.equal(s2.version, 2);
  await assert.rejects(b.state.set('topic', 'stale', 1), (e) => e.code === 'conflict' && e.current.version === 2 && e.current.value === 'world');
  await b.state.set('other', { n: 1 });
  await h.until(() => seenByB.length === 3, 5000, 'state events');
  assert.deepEqual(seenByB, [['topic', 'hello', 1], ['topic', 'world', 2], ['other', { n: 1 }, 1]]);
  assert.deepEqual(b.state.all().map((s) => [s.key, s.version]), [['other', 1], ['topic', 2]]);

  const late = open(h.userToken('carol')).room('s1');
  await late.join();
  assert.equal(late.state.get('topic').value, 'world');
  assert.equal(late.state.get('other').version, 1);
});

test('presence and typing round trip', async () => {
  await h.createRoom(server.url, alice, 'p1');
  const a = open(alice).room('p1');
  await a.join();
  const presence = [];
  const typing = [];
  a.on('presence', (e) => presence.push(e));
  a.on('typing', (e) => typing.push(e));

  const bobClient = open(h.userToken('bob'));
  const b = bobClient.room('p1');
  await b.join();
  await h.until(() => presence.some((e) => e.user_id === 'bob' && e.status === 'online'), 5000, 'bob online');
  const users = await a.presence();
  assert.deepEqual(users.map((u) => u.user_id).sort(), ['alice', 'bob']);

  b.typing();
  b.typing(); // throttled: at most one per 2 s
  await h.until(() => typing.length === 1, 5000, 'typing');
  await new Promise((r) => setTimeout(r, 300));
  assert.deepEqual(typing, [{ room: 'p1', user_id: 'bob' }]);

  bobClient.close();
  await h.until(() => presence.some((e) => e.user_id === 'bob' && e.status === 'offline'), 5000, 'bob offline');
});

test('history pages backwards over HTTP without emitting messages; http() errors carry status and code', async () => {
  await h.createRoom(server.url, alice, 'h1');
  for (let i = 1; i <= 12; i++) await post('h1', `m${i}`);
  const c = open(alice);
  const room = c.room('h1');
  const got = collect(room);
  await room.join();
  const page = await room.history({ beforeSeq: 6, limit: 3 });
  assert.deepEqual(page.items.map((m) => m.seq), [3, 4, 5]);
  assert.equal(page.more, true);
  assert.equal(got.length, 12);
  await assert.rejects(c.http('GET', '/api/v1/rooms/nope-404/messages'), (e) => e.status === 404 && e.code === 'not_found');
});

test('a refused token: status auth_failed with its code, no more reconnects; setToken recovers', async () => {
  const c = open(h.mintToken('eve', {}, { secret: 'wrong-secret-wrong-secret-wrong-secret!!' }));
  const statuses = [];
  c.on('status', (s, d) => statuses.push([s, d?.code]));
  await h.until(() => c.status === 'auth_failed', 5000, 'auth_failed');
  assert.deepEqual(statuses.at(-1), ['auth_failed', 'invalid_token']);
  await new Promise((r) => setTimeout(r, 1500));
  assert.equal(statuses.length, 1, 'stopped reconnecting');
  c.setToken(h.userToken('eve'));
  await h.until(() => c.status === 'connected', 5000, 'connected with the new token');
  assert.equal(c.userId, 'eve');
});
