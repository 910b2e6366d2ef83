// Exactly once, in seq order: several senders, and a client that joins late.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { h, connect, collect, assertContiguous } from './helpers.mjs';

let server;
const clients = [];
after(async () => { for (const c of clients) c.close(); await server?.destroy(); });

test('several senders and a late joiner: each message once, in seq order, equal to the history', async () => {
  server = await h.startServer({ env: { TSUNAGI_SEND_RATE: '0' } });
  const tok = (u) => h.userToken(u);
  await h.createRoom(server.url, tok('alice'), 'many');
  const open = (u) => { const c = connect({ url: server.url, token: tok(u), transports: ['websocket'] }); clients.push(c); return c; };

  const senders = ['alice', 'bob', 'carol'].map(open);
  assert.equal(senders[0].userId, 'alice');
  const rooms = senders.map((c) => c.room('many'));
  assert.equal(senders[0].room('many'), rooms[0], 'one Room object per id');
  const got = rooms.map(collect);
  await Promise.all(rooms.map((r) => r.join()));

  const PER = 30;
  const acked = [];
  let late;
  let lateGot;
  const sendAll = rooms.map(async (r, k) => {
    for (let i = 0; i < PER; i++) {
      acked.push(await r.send(`${k}:${i}`));
      if (k === 0 && i === 10) {
        late = open('dave').room('many');
        lateGot = collect(late);
        await late.join();
      }
    }
  });
  await Promise.all(sendAll);
  const total = 3 * PER;
  await h.until(() => got.every((g) => g.length >= total) && lateGot.length && lateGot.at(-1).seq === total, 15000, 'delivery');

  const history = await h.fullHistory(server.url, tok('alice'), 'many');
  assert.equal(history.length, total);
  for (const g of got) {
    assert.deepEqual(g.map((m) => m.id), history.map((m) => m.id));
    assertContiguous(g);
  }
  // The late joiner: its join history, then live ones, contiguous up to the last, nothing twice.
  assertContiguous(lateGot, lateGot[0].seq);
  assert.ok(lateGot[0].seq <= 12, `late joiner starts at ${lateGot[0].seq}`);
  // Every ack is one message of the history, with the client_id the client chose.
  const byId = new Map(history.map((m) => [m.id, m]));
  for (const m of acked) {
    assert.equal(byId.get(m.id)?.client_id, m.client_id);
    assert.ok(m.client_id);
  }
  // Each sender's own messages are committed in the order it sent them.
  for (let k = 0; k < 3; k++) {
    const mine = history.filter((m) => m.content.startsWith(`${k}:`)).map((m) => m.content);
    assert.deepEqual(mine, Array.from({ length: PER }, (_, i) => `${k}:${i}`));
  }
  for (const r of rooms) assert.deepEqual(r.pending(), []);
});
