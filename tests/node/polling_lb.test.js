'use strict';
// PROTOCOL.md §7: long-polling through a plain least_conn nginx (no sticky sessions) in front of
// three instances: every request of a session may land on any instance and is forwarded to the
// one owning the session (src/session_routing).

const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const crypto = require('node:crypto');
const h = require('./harness');

const REDIS = process.env.TSUNAGI_TEST_REDIS || 'redis://127.0.0.1:6379';
const POLLING = { transports: ['polling'] };

async function forwarded(servers) {
  let sum = 0;
  for (const s of servers) {
    if (s.proc.exitCode !== null || s.proc.signalCode !== null) continue;
    const r = await h.http(s.url, 'GET', '/metrics');
    sum += h.metricValue(r.text, 'tsunagi_polling_forwarded_total');
  }
  return sum;
}

/** Socket.IO sockets connected to each live instance (a killed one counts 0). */
async function sockets(servers) {
  return Promise.all(servers.map(async (s) => {
    if (s.proc.exitCode !== null || s.proc.signalCode !== null) return 0;
    const r = await h.http(s.url, 'GET', '/metrics');
    return h.metricValue(r.text, 'tsunagi_sockets_connected') ?? 0;
  }));
}

describe('polling behind nginx without sticky sessions', () => {
  let lb;
  before(async () => {
    lb = await h.startBehindNginx(3, {
      env: {
        TSUNAGI_REDIS_URL: REDIS,
        TSUNAGI_REDIS_PREFIX: `tsunagi-test-${crypto.randomBytes(8).toString('hex')}`,
        TSUNAGI_SEND_RATE: '0',
      },
    });
  });
  after(async () => { h.closeAll(); if (lb) await lb.destroy(); });

  it('connect, join, send with acks, live messages in order, history, sync, typing, presence, state', async () => {
    const room = h.roomId('plb');
    await h.createRoom(lb.url, h.userToken('plb-owner'), room);
    const reader = await h.connect(lb.url, h.userToken('plb-r'), POLLING);
    const writer = await h.connect(lb.url, h.userToken('plb-w'), POLLING);
    const got = h.collect(reader, 'message');
    const typing = h.collect(reader, 'typing');
    assert.equal((await h.ack(reader, 'join', { room })).ok, true);
    assert.equal((await h.ack(writer, 'join', { room })).ok, true);
    for (let n = 0; n < 30; n++) {
      const r = await h.ack(writer, 'send', { room, content: `m${n}`, client_id: `c${n}` });
      assert.equal(r.ok, true, JSON.stringify(r));
    }
    await h.until(() => got.length >= 30, 15000, '30 live messages');
    assert.deepEqual(got.map((m) => m.seq), Array.from({ length: 30 }, (_, i) => i + 1));
    const sync = await h.ack(reader, 'sync', { room, since_seq: 10 });
    assert.deepEqual(sync.messages.map((m) => m.seq), Array.from({ length: 20 }, (_, i) => i + 11));
    assert.equal((await h.ack(writer, 'typing', { room })).ok, true);
    await h.until(() => typing.some((t) => t.user_id === 'plb-w'), 10000, 'typing');
    const presence = await h.ack(reader, 'presence', { room });
    assert.ok(presence.users.some((u) => u.user_id === 'plb-w'), JSON.stringify(presence));
    const st = await h.ack(writer, 'state_set', { room, key: 'k', value: { v: 1 } });
    assert.equal(st.ok, true, JSON.stringify(st));
    const history = await h.fullHistory(lb.url, h.userToken('plb-owner'), room);
    assert.equal(history.length, 30);
    const secret = h.roomId('plb-private');
    await h.createRoom(lb.url, h.userToken('plb-owner'), secret, { private: true });
    h.assertAckError(assert, await h.ack(reader, 'join', { room: secret }), 'forbidden');
    assert.ok(await forwarded(lb.servers) > 0, 'some requests were forwarded');
  });

  it('a long session of many polls lands on several instances and stays whole', async () => {
    const room = h.roomId('plb-long');
    await h.createRoom(lb.url, h.userToken('plb-owner'), room);
    const before = await forwarded(lb.servers);
    const s = await h.connect(lb.url, h.userToken('plb-long'), POLLING);
    const got = h.collect(s, 'message');
    assert.equal((await h.ack(s, 'join', { room })).ok, true);
    for (let n = 0; n < 60; n++) {
      assert.equal((await h.ack(s, 'send', { room, content: `x${n}`, client_id: `x${n}` })).ok, true);
    }
    await h.until(() => got.length >= 60, 15000, '60 messages');
    assert.deepEqual(got.map((m) => m.seq), Array.from({ length: 60 }, (_, i) => i + 1));
    assert.equal(s.io.engine.transport.name, 'polling');
    assert.ok(await forwarded(lb.servers) - before >= 20, 'the session\'s requests were forwarded');
  });

  it('the default transports (polling, then upgrade) work through the balancer', async () => {
    const room = h.roomId('plb-up');
    await h.createRoom(lb.url, h.userToken('plb-owner'), room);
    const s = await h.connect(lb.url, h.userToken('plb-up'), { transports: ['polling', 'websocket'] });
    await h.until(() => s.io.engine.transport.name === 'websocket', 10000, 'upgraded to websocket');
    assert.equal((await h.ack(s, 'join', { room })).ok, true);
    assert.equal((await h.ack(s, 'send', { room, content: 'up', client_id: 'up' })).ok, true);
  });

  it('kill -9 of an instance: its polling clients reconnect and recover with sync, nothing acked lost', async () => {
    const room = h.roomId('plb-kill');
    await h.createRoom(lb.url, h.userToken('plb-owner'), room);
    // the earlier tests' sockets go first, so the per-instance socket counts are this test's alone
    h.closeAll();
    await h.until(async () => (await sockets(lb.servers)).every((n) => n === 0), 15000, 'earlier sockets closed');
    const clients = [];
    for (let i = 0; i < 6; i++) {
      clients.push(await h.connect(lb.url, h.userToken(`plb-k${i}`), { ...POLLING, reconnection: true, reconnectionDelay: 100 }));
    }
    const acked = [];
    for (const c of clients) {
      assert.equal((await h.ack(c, 'join', { room })).ok, true);
      const r = await h.ack(c, 'send', { room, content: 'before', client_id: crypto.randomUUID() });
      acked.push(r.message.seq);
    }
    let dropped = 0;
    for (const c of clients) c.on('disconnect', () => { dropped++; });
    // least_conn spreads the sessions unevenly; the instance owning the most of them goes
    const counts = await sockets(lb.servers);
    const victim = counts.indexOf(Math.max(...counts));
    assert.ok(counts[victim] > 0, `sessions per instance ${counts}`);
    await lb.servers[victim].kill9();
    await h.until(() => dropped > 0, 30000, 'the killed instance\'s sessions dropped');
    const writer = clients[clients.length - 1];
    await h.until(async () => {
      const all = await Promise.all(clients.map((c) => c.connected));
      return all.every(Boolean);
    }, 30000, 'every client connected again');
    for (const c of clients) {
      const r = await h.ack(c, 'sync', { room, since_seq: 0 });
      const seqs = r.messages.map((m) => m.seq);
      for (const seq of acked) assert.ok(seqs.includes(seq), `acked seq ${seq} recovered`);
    }
    assert.equal((await h.ack(writer, 'send', { room, content: 'after', client_id: 'after' })).ok, true);
  });
});
