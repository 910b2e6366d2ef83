'use strict';
// Issue 15: a rolling restart behind nginx under load. Each instance in turn gets SIGTERM, must
// exit 0 after draining, and starts again on the same port: no acked message is lost or
// repeated, and every client that was on it is back (through nginx, by itself) within seconds.

const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const crypto = require('node:crypto');
const h = require('../harness');
const { closeClients, untilAllHold, reader, sender, assertHistoryComplete, socketsOn } = require('./fleet');

const REDIS = process.env.TSUNAGI_TEST_REDIS || 'redis://127.0.0.1:6379';
if (!process.env.TSUNAGI_TEST_PG) throw new Error('TSUNAGI_TEST_PG must name the PostgreSQL server (postgres://user@host:port)');

describe('rolling restart behind nginx', () => {
  let lb;
  const room = h.roomId('roll');
  before(async () => {
    lb = await h.startBehindNginx(3, {
      env: {
        TSUNAGI_REDIS_URL: REDIS,
        TSUNAGI_REDIS_PREFIX: `tsunagi-test-${crypto.randomBytes(8).toString('hex')}`,
        TSUNAGI_SEND_RATE: '0',
        TSUNAGI_SHUTDOWN_TIMEOUT_S: '5',
      },
    });
    await h.createRoom(lb.url, h.userToken('roll-owner'), room);
  });
  after(async () => { closeClients(); if (lb) await lb.destroy(); });

  it('SIGTERM each instance in turn under load: exit 0, nothing acked lost or repeated, clients back within seconds', async () => {
    const rs = [];
    for (let i = 0; i < 9; i++) {
      const r = reader(lb.url, h.userToken(`roll-r${i}`), room);
      await h.withTimeout(r.joined, 10000, `reader ${i} joins`);
      rs.push(r);
    }
    const ss = [];
    for (let i = 0; i < 6; i++) {
      const s = sender(lb.url, h.userToken(`roll-s${i}`), room, { name: `roll-s${i}` });
      await h.withTimeout(s.connected(), 10000, `sender ${i} connects`);
      ss.push(s);
    }
    const held = await Promise.all(lb.servers.map(socketsOn));
    assert.ok(held.every((n) => n > 0), `senders and readers on every instance: ${held}`);

    let stop = false;
    const load = Promise.all(ss.map(async (s, i) => {
      for (let n = 0; !stop; n++) {
        await s.send(`${i} ${n}`);
        await h.sleep(10);
      }
    }));
    for (const server of lb.servers) {
      const acked = ss.reduce((a, s) => a + s.acked.length, 0);
      await h.until(() => ss.reduce((a, s) => a + s.acked.length, 0) >= acked + 30, 10000, 'load runs');
      const onIt = await socketsOn(server);
      const t0 = Date.now();
      const exit = await server.stop();
      const stopMs = Date.now() - t0;
      assert.deepEqual(exit, { code: 0, signal: null }, `graceful exit (${onIt} sockets, ${stopMs} ms):\n${server.log()}`);
      await server.restart();
    }
    const acked = ss.reduce((a, s) => a + s.acked.length, 0);
    await h.until(() => ss.reduce((a, s) => a + s.acked.length, 0) >= acked + 30, 10000, 'load runs after the last restart');
    stop = true;
    await load;

    const { history, acked: total } = await assertHistoryComplete(lb.url, room, ss);
    assert.equal(history.length, total, 'every message in history was acked once (no duplicate send)');
    await untilAllHold(rs, total, 15000);
    const clients = [...rs, ...ss];
    const reconnects = clients.flatMap((c) => c.stats.disconnects);
    assert.ok(reconnects.length >= 15, `every client was on a restarted instance at least once: ${reconnects.length}`);
    assert.ok(clients.every((c) => c.socket.connected && !c.down()), 'every client is connected again');
    const reasons = [...new Set(clients.flatMap((c) => c.stats.reasons))];
    assert.ok(!reasons.includes('io server disconnect'), `the server never ends a session for good: ${reasons}`);
    reconnects.sort((a, b) => a - b);
    const p = (q) => reconnects[Math.min(reconnects.length - 1, Math.floor(q * reconnects.length))];
    console.log(`# rolling restart: ${total} messages, ${reconnects.length} reconnections, `
      + `time to reconnect p50 ${p(0.5)} ms, p99 ${p(0.99)} ms, max ${reconnects[reconnects.length - 1]} ms (${reasons})`);
    assert.ok(reconnects[reconnects.length - 1] < 5000, `every client back within 5 s: max ${reconnects[reconnects.length - 1]} ms`);
  });
});
