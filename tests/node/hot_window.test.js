'use strict';
// The hot window (PROTOCOL.md §6.3, issue 14): a join's history and a sync of recent history of an
// active room are answered from memory — no history statement runs — and say exactly what the
// database says (compared with GET …/messages), on one instance and across two through Redis.

const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const crypto = require('node:crypto');
const h = require('./harness');

const REDIS = process.env.TSUNAGI_TEST_REDIS || 'redis://127.0.0.1:6379';
/** Statements that read message history (hot or archived). */
const HISTORY = ['history_backward', 'history_forward', 'archive_history', 'room_archive_mark'];

async function metrics(base) {
  return (await h.http(base, 'GET', '/metrics')).text;
}

/** How often each statement ran, and the hot window's hits and misses. */
async function counts(base) {
  const text = await metrics(base);
  const ran = (statement) => h.metricValue(text, 'tsunagi_db_query_seconds_count', { statement }) ?? 0;
  const reads = (read, result) => h.metricValue(text, 'tsunagi_hot_window_reads_total', { read, result }) ?? 0;
  return {
    history: HISTORY.reduce((n, s) => n + ran(s), 0),
    roomRow: ran('room_by_id'),
    joinHits: reads('join', 'hit'),
    syncHits: reads('sync', 'hit'),
  };
}

async function httpPage(base, token, room, query) {
  const r = await h.http(base, 'GET', `/api/v1/rooms/${room}/messages?${query}`, token);
  assert.equal(r.status, 200, r.text);
  return r.body;
}

async function sendAll(socket, room, n, tag) {
  const acks = [];
  for (let i = 0; i < n; i++) {
    const a = await h.ack(socket, 'send', { room, content: `${tag} ${i}`, client_id: `${tag}-${i}` });
    assert.equal(a.ok, true, JSON.stringify(a));
    acks.push(a.message);
  }
  return acks;
}

describe('hot window: one instance', () => {
  let srv;
  let url;
  const token = h.userToken('hw-owner');
  before(async () => {
    srv = await h.startServer({ env: { TSUNAGI_SEND_RATE: '0', TSUNAGI_HOT_WINDOW_MESSAGES: '64' } });
    url = srv.url;
  });
  after(async () => { h.closeAll(); if (srv) await srv.destroy(); });

  it('a join and a sync of a hot room read no history and answer what the database holds', async () => {
    const room = h.roomId('hw');
    await h.createRoom(url, token, room);
    const sender = await h.connect(url, h.userToken('hw-sender'));
    await sendAll(sender, room, 30, 'a');
    const first = await h.connect(url, h.userToken('hw-first'));
    const live = h.collect(first, 'message', (m) => m.room === room);
    assert.equal((await h.ack(first, 'join', { room })).ok, true); // starts the room's window
    const sent = await sendAll(sender, room, 50, 'b'); // 80 in all, the window keeps 64
    // with Redis the window follows the room's feed: wait until it has brought the last one
    await h.until(() => live.length >= 50, 10000, 'the 50 messages live');

    const before = await counts(url);
    const reader = await h.connect(url, h.userToken('hw-reader'));
    const join = await h.ack(reader, 'join', { room });
    const recent = await h.ack(reader, 'sync', { room, since_seq: 40, epoch: join.epoch, limit: 25 });
    const tail = await h.ack(reader, 'sync', { room, since_seq: 70 });
    const upToDate = await h.ack(reader, 'sync', { room, since_seq: 80 });
    const afterReads = await counts(url);
    assert.equal(afterReads.history, before.history, 'a history statement ran');
    if (!process.env.TSUNAGI_TEST_REDIS_ALL) {
      // one instance: not even the room row is read (its epoch is cached, the window knows the
      // end); with Redis each read asks the primary for the room's last seq
      assert.equal(afterReads.roomRow, before.roomRow, 'the room row was read');
    }
    assert.equal(afterReads.joinHits - before.joinHits, 1);
    assert.equal(afterReads.syncHits - before.syncHits, 3);

    const newest = await httpPage(url, token, room, 'limit=50');
    assert.equal(join.ok, true, JSON.stringify(join));
    assert.deepEqual(join.history, newest.items);
    assert.equal(join.last_seq, 80);
    assert.equal(join.last_seq, sent[sent.length - 1].seq);
    for (const [r, since, limit] of [[recent, 40, 25], [tail, 70, 100], [upToDate, 80, 100]]) {
      assert.equal(r.ok, true, JSON.stringify(r));
      const db = await httpPage(url, token, room, `after_seq=${since}&limit=${limit}`);
      assert.deepEqual({ messages: r.messages, more: r.more }, { messages: db.items, more: db.more });
      assert.equal(r.epoch, join.epoch);
    }

    // older than the window, or another epoch: the database answers, as before
    const old = await h.ack(reader, 'sync', { room, since_seq: 5, limit: 10 });
    const db = await httpPage(url, token, room, 'after_seq=5&limit=10');
    assert.deepEqual({ messages: old.messages, more: old.more }, { messages: db.items, more: db.more });
    h.assertAckError(assert, await h.ack(reader, 'sync', { room, since_seq: 1, epoch: 'nope' }), 'reset');
    h.assertAckError(assert, await h.ack(reader, 'sync', { room, since_seq: 81 }), 'reset');
  });

  it('a message acked a moment ago is in the next join and sync', async () => {
    const room = h.roomId('hw-fresh');
    await h.createRoom(url, token, room);
    const sender = await h.connect(url, h.userToken('hw-fresh-sender'));
    const reader = await h.connect(url, h.userToken('hw-fresh-reader'));
    for (let i = 0; i < 20; i++) {
      const [m] = await sendAll(sender, room, 1, `f${i}`);
      const join = await h.ack(reader, 'join', { room });
      assert.equal(join.last_seq, m.seq);
      assert.deepEqual(join.history[join.history.length - 1], m);
      const sync = await h.ack(reader, 'sync', { room, since_seq: m.seq - 1 });
      assert.deepEqual(sync.messages, [m]);
      assert.equal((await h.ack(reader, 'leave', { room })).ok, true);
    }
  });

  it('a private room still refuses a non-member before anything is read', async () => {
    const room = h.roomId('hw-priv');
    await h.createRoom(url, token, room, { private: true });
    const owner = await h.connect(url, token);
    await sendAll(owner, room, 3, 'p');
    assert.equal((await h.ack(owner, 'join', { room })).ok, true);
    const stranger = await h.connect(url, h.userToken('hw-stranger'));
    h.assertAckError(assert, await h.ack(stranger, 'join', { room }), 'forbidden');
    h.assertAckError(assert, await h.ack(stranger, 'sync', { room, since_seq: 0 }), 'forbidden');
  });
});

describe('hot window: two instances through Redis', () => {
  let servers;
  let a;
  let b;
  const token = h.userToken('hw2-owner');
  before(async () => {
    servers = await h.startCluster(2, {
      env: {
        TSUNAGI_REDIS_URL: REDIS,
        TSUNAGI_REDIS_PREFIX: `tsunagi-test-${crypto.randomBytes(8).toString('hex')}`,
        TSUNAGI_SEND_RATE: '0',
      },
    });
    [a, b] = servers.map((s) => s.url);
    for (const u of [a, b]) {
      await h.until(async () => (await h.http(u, 'GET', '/readyz')).status === 200, 10000, 'ready');
    }
  });
  after(async () => { h.closeAll(); if (servers) await servers.destroy(); });

  it('messages sent on the other instance are served from the window, exactly', async () => {
    const room = h.roomId('hw2');
    await h.createRoom(a, token, room);
    const watcher = await h.connect(b, h.userToken('hw2-watch'));
    const got = h.collect(watcher, 'message', (m) => m.room === room);
    assert.equal((await h.ack(watcher, 'join', { room })).ok, true);
    const sender = await h.connect(a, h.userToken('hw2-sender'));
    await sendAll(sender, room, 40, 'x');
    await h.until(() => got.length >= 40, 10000, 'the 40 messages on B');

    const before = await counts(b);
    const reader = await h.connect(b, h.userToken('hw2-reader'));
    const join = await h.ack(reader, 'join', { room });
    const sync = await h.ack(reader, 'sync', { room, since_seq: 20, epoch: join.epoch });
    const afterReads = await counts(b);
    assert.equal(afterReads.history, before.history, 'a history statement ran on B');
    assert.equal(afterReads.joinHits - before.joinHits, 1);
    assert.equal(afterReads.syncHits - before.syncHits, 1);
    assert.deepEqual(join.history, (await httpPage(a, token, room, 'limit=50')).items);
    assert.equal(join.last_seq, 40);
    const db = await httpPage(a, token, room, 'after_seq=20&limit=100');
    assert.deepEqual({ messages: sync.messages, more: sync.more }, { messages: db.items, more: db.more });
  });

  it('a message acked on A is in a join and a sync on B at once (a trailing window is not used)', async () => {
    const room = h.roomId('hw2-fresh');
    await h.createRoom(a, token, room);
    const watcher = await h.connect(b, h.userToken('hw2-fresh-watch'));
    assert.equal((await h.ack(watcher, 'join', { room })).ok, true); // B watches: a window exists
    const sender = await h.connect(a, h.userToken('hw2-fresh-sender'));
    const reader = await h.connect(b, h.userToken('hw2-fresh-reader'));
    for (let i = 0; i < 20; i++) {
      const [m] = await sendAll(sender, room, 1, `g${i}`);
      const sync = await h.ack(reader, 'sync', { room, since_seq: m.seq - 1 });
      assert.deepEqual(sync.messages, [m]);
      const join = await h.ack(reader, 'join', { room });
      assert.equal(join.last_seq, m.seq);
      assert.deepEqual(join.history[join.history.length - 1], m);
      assert.equal((await h.ack(reader, 'leave', { room })).ok, true);
    }
  });
});
