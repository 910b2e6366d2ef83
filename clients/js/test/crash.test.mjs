// SIGKILL mid-stream, restart on the same data dir and port: every acked message arrives once, in order, none lost.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { h, connect, collect, assertContiguous } from './helpers.mjs';

let server;
const clients = [];
after(async () => { for (const c of clients) c.close(); await server?.destroy(); });

test('kill -9 while a producer keeps sending through the client', async () => {
  server = await h.startServer({ env: { TSUNAGI_SEND_RATE: '0' } });
  const alice = h.userToken('alice');
  await h.createRoom(server.url, alice, 'crash');
  const open = (tok) => {
    const c = connect({ url: server.url, token: tok, transports: ['websocket'], reconnectionDelay: 200, reconnectionDelayMax: 500 });
    clients.push(c);
    return c;
  };
  const producer = open(alice).room('crash');
  const consumer = open(h.userToken('carol')).room('crash');
  const seenByProducer = collect(producer);
  const seen = collect(consumer);
  await Promise.all([producer.join(), consumer.join()]);

  let queuedWhileDown = 0;
  producer.on('pending', (p) => { if (killed) queuedWhileDown = Math.max(queuedWhileDown, p.length); });
  const N = 200;
  const sends = [];
  let killed = false;
  for (let i = 0; i < N; i++) {
    sends.push(producer.send(`p${i}`));
    await new Promise((r) => setTimeout(r, 5));
    if (i === 80) {
      await server.kill9();
      killed = true;
      setTimeout(() => server.restart(), 400); // keeps producing while the server is away
    }
  }
  assert.ok(killed);
  assert.ok(queuedWhileDown > 5, `sends piled up in the queue while the server was down (${queuedWhileDown})`);
  const acked = await h.withTimeout(Promise.all(sends), 30000, 'every send acked');
  await h.until(() => seen.length >= N && seenByProducer.length >= N, 15000, 'consumer caught up');
  await new Promise((r) => setTimeout(r, 300));

  const history = await h.fullHistory(server.url, alice, 'crash');
  assert.equal(history.length, N, 'retries with the same client_id made no duplicates, nothing lost');
  assertContiguous(history);
  assert.deepEqual(history.map((m) => m.content), Array.from({ length: N }, (_, i) => `p${i}`), 'in send order');
  for (const got of [seen, seenByProducer]) {
    assert.deepEqual(got.map((m) => m.id), history.map((m) => m.id), 'each message once, in seq order');
  }
  const ids = new Set(history.map((m) => m.id));
  for (const m of acked) assert.ok(ids.has(m.id), `acked ${m.seq} is in the history`);
  assert.equal(new Set(acked.map((m) => m.id)).size, N);
});
