'use strict';
// PROTOCOL.md §3 "Across instances": with TSUNAGI_REDIS_URL, two tsunagi processes on one
// database act as one for official socket.io-client sockets (messages in seq order with no gap,
// presence, typing).

const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const crypto = require('node:crypto');
const h = require('./harness');

const REDIS = process.env.TSUNAGI_TEST_REDIS || 'redis://127.0.0.1:6379';

describe('two instances on one Redis', () => {
  let servers;
  let a;
  let b;
  const room = 'cluster-room';
  before(async () => {
    servers = await h.startCluster(2, {
      env: {
        TSUNAGI_REDIS_URL: REDIS,
        TSUNAGI_REDIS_PREFIX: `tsunagi-test-${crypto.randomBytes(8).toString('hex')}`,
        TSUNAGI_SEND_RATE: '0',
      },
    });
    [a, b] = servers.map((s) => s.url);
    await h.until(async () => (await h.http(b, 'GET', '/readyz')).status === 200, 10000, 'B ready');
    await h.createRoom(a, h.userToken('cl-owner'), room);
  });
  after(async () => { h.closeAll(); if (servers) await servers.destroy(); });

  it('sends on both reach sockets on both, every message once, in seq order', async () => {
    const readers = [await h.connect(a, h.userToken('cl-ra')), await h.connect(b, h.userToken('cl-rb'))];
    const got = readers.map((s) => h.collect(s, 'message'));
    for (const s of readers) assert.equal((await h.ack(s, 'join', { room })).ok, true);
    const writers = [await h.connect(a, h.userToken('cl-wa')), await h.connect(b, h.userToken('cl-wb'))];
    await Promise.all(writers.map(async (w, i) => {
      for (let n = 0; n < 40; n++) {
        const r = await h.ack(w, 'send', { room, content: `w${i} ${n}`, client_id: `w${i}-${n}` });
        assert.equal(r.ok, true, JSON.stringify(r));
      }
    }));
    await h.until(() => got.every((g) => g.length >= 80), 10000, '80 messages on both readers');
    for (const g of got) assert.deepEqual(g.map((m) => m.seq), Array.from({ length: 80 }, (_, i) => i + 1));
    for (const s of readers) assert.equal(s.connected, true);
  });

  it('presence and typing from a socket on A reach a socket on B', async () => {
    const watcher = await h.connect(b, h.userToken('cl-watch'));
    assert.equal((await h.ack(watcher, 'join', { room })).ok, true);
    const presence = h.collect(watcher, 'presence');
    const typing = h.collect(watcher, 'typing');
    const alice = await h.connect(a, h.userToken('cl-alice'));
    assert.equal((await h.ack(alice, 'join', { room })).ok, true);
    await h.until(() => presence.some((p) => p.user_id === 'cl-alice' && p.status === 'online'), 5000, 'online');
    const list = await h.ack(watcher, 'presence', { room });
    assert.ok(list.users.some((u) => u.user_id === 'cl-alice'), JSON.stringify(list));
    assert.equal((await h.ack(alice, 'typing', { room })).ok, true);
    await h.until(() => typing.some((t) => t.user_id === 'cl-alice'), 5000, 'typing');
    assert.equal((await h.ack(alice, 'leave', { room })).ok, true);
    await h.until(() => presence.some((p) => p.user_id === 'cl-alice' && p.status === 'offline'), 5000, 'offline');
  });
});
