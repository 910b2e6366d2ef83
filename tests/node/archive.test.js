'use strict';
// PROTOCOL.md §6.3 "Hot and cold history", through the official socket.io-client and HTTP:
// archive passes queued with POST /api/v1/admin/archive while 10 senders write and 10 clients
// sync; afterwards `sync` from 0 and `GET …/messages` paged backwards from the end return every
// message once, in order; `join` history and retried client_ids read archived messages; the
// admin stats count hot and cold. Then the same across two instances with Redis.

const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const crypto = require('node:crypto');
const h = require('./harness');

const { ack, assertHttpError } = h;

/** The background archiver is off (0 = never): only the passes the tests queue run. */
const BASE_ENV = { TSUNAGI_SEND_RATE: '0', TSUNAGI_ARCHIVE_AFTER: '0', TSUNAGI_ARCHIVE_BATCH: '25' };
const REDIS_ALL = process.env.TSUNAGI_TEST_REDIS_ALL || '';
const SENDERS = 10;
const PER_SENDER = 40;
const TOTAL = SENDERS * PER_SENDER;

const admin = h.adminToken('ar-ops');

/** Every message of `room` through `sync`, from 0, in pages of `limit`. */
async function syncAll(s, room, limit = 500) {
  const all = [];
  let since = 0;
  for (;;) {
    const res = await ack(s, 'sync', { room, since_seq: since, limit });
    assert.equal(res.ok, true, JSON.stringify(res));
    all.push(...res.messages);
    if (!res.more) return all;
    since = res.messages[res.messages.length - 1].seq;
  }
}

/** Every message of `room` through GET …/messages, paged backwards from the end, ascending. */
async function pagedBackwards(base, token, room, limit = 500) {
  const pages = [];
  let before = null;
  for (;;) {
    const q = before === null ? `limit=${limit}` : `limit=${limit}&before_seq=${before}`;
    const r = await h.http(base, 'GET', `/api/v1/rooms/${room}/messages?${q}`, token);
    assert.equal(r.status, 200, r.text);
    pages.unshift(r.body.items);
    if (!r.body.more) return pages.flat();
    before = r.body.items[0].seq;
  }
}

/** The seqs 1..n, each once, in order; and each message as acked. */
function assertComplete(messages, acked, what) {
  assert.deepEqual(messages.map((m) => m.seq), Array.from({ length: acked.size }, (_, i) => i + 1), what);
  for (const m of messages) assert.deepEqual(m, acked.get(m.seq), `${what}: seq ${m.seq}`);
}

const queuePass = (base, body = { older_than: '0s' }) =>
  h.http(base, 'POST', '/api/v1/admin/archive', admin, body);

async function stats(base) {
  const r = await h.http(base, 'GET', '/api/v1/admin/stats', admin);
  assert.equal(r.status, 200, r.text);
  return r.body.messages;
}

/**
 * 10 senders (round-robin over `bases`) write PER_SENDER messages each with client_ids, 10
 * clients sync the room over and over checking each page continues the last without a gap,
 * and archive passes are queued every 50 ms; then a last pass moves everything. → the acked
 * messages by seq.
 */
async function sendSyncAndArchive(bases, room) {
  const senders = await Promise.all(Array.from({ length: SENDERS }, (_, i) =>
    h.connect(bases[i % bases.length], h.userToken(`ar-s${i}`))));
  const syncers = await Promise.all(Array.from({ length: 10 }, (_, i) =>
    h.connect(bases[i % bases.length], h.userToken(`ar-r${i}`))));
  const acked = new Map();
  let sending = true;
  const archiving = (async () => {
    let passes = 0;
    while (sending) {
      const r = await queuePass(bases[passes % bases.length]);
      assert.equal(r.status, 202, r.text);
      passes++;
      await h.sleep(50);
    }
    return passes;
  })();
  const syncing = syncers.map(async (s, i) => {
    let since = 0;
    let rounds = 0;
    const limit = 7 + i * 11;
    while (sending || since < TOTAL) {
      const res = await ack(s, 'sync', { room, since_seq: since, limit });
      assert.equal(res.ok, true, JSON.stringify(res));
      res.messages.forEach((m, k) => assert.equal(m.seq, since + k + 1, `syncer ${i} after ${since}`));
      if (res.messages.length > 0) since = res.messages[res.messages.length - 1].seq;
      else if (!res.more) { since = 0; rounds++; await h.sleep(5); }
    }
    return rounds;
  });
  await Promise.all(senders.map(async (s, i) => {
    for (let k = 0; k < PER_SENDER; k++) {
      const res = await ack(s, 'send', { room, content: `s${i}-${k}`, client_id: `ar-${i}-${k}` });
      assert.equal(res.ok, true, JSON.stringify(res));
      acked.set(res.message.seq, res.message);
    }
  }));
  sending = false;
  assert.ok(await archiving > 0);
  await Promise.all(syncing);
  // a last pass moves what the others left
  assert.equal((await queuePass(bases[0])).status, 202);
  await h.until(async () => (await stats(bases[0])).hot === 0, 20000, 'every message archived');
  for (const s of [...senders, ...syncers]) s.disconnect();
  return acked;
}

describe('hot and cold history on one server', () => {
  let server;
  let base;
  const owner = h.userToken('ar-owner');
  before(async () => { server = await h.startServer({ env: BASE_ENV }); base = server.url; });
  after(async () => { h.closeAll(); if (server) await server.destroy(); });

  it('queuing a pass: admins only, older_than a duration string, 202 JOB', async () => {
    assertHttpError(assert, await h.http(base, 'POST', '/api/v1/admin/archive', owner, {}), 403, 'forbidden');
    for (const older_than of ['soon', 5, '1w', '-1d']) {
      assertHttpError(assert, await queuePass(base, { older_than }), 400, 'bad_request');
    }
    for (const body of [{}, { older_than: null }, { older_than: '12h' }]) {
      const r = await queuePass(base, body);
      assert.equal(r.status, 202, r.text);
      assert.deepEqual(Object.keys(r.body).sort(),
        ['attempts', 'created_at', 'id', 'kind', 'last_error', 'run_at', 'state', 'updated_at']);
      assert.equal(r.body.kind, 'archive');
    }
  });

  it('archiving while 10 senders write and 10 clients sync: every message once, in order', async () => {
    const room = h.roomId('ar');
    await h.createRoom(base, owner, room);
    const acked = await sendSyncAndArchive([base], room);
    assert.equal(acked.size, TOTAL);
    const reader = await h.connect(base, h.userToken('ar-reader'));
    assertComplete(await syncAll(reader, room), acked, 'sync from 0');
    assertComplete(await syncAll(reader, room, 13), acked, 'sync from 0 in pages of 13');
    assertComplete(await pagedBackwards(base, owner, room), acked, 'GET …/messages backwards');
    assertComplete(await pagedBackwards(base, owner, room, 17), acked, 'GET …/messages backwards by 17');
    // join's history: the newest 50, archived as they are
    const joined = await ack(reader, 'join', { room });
    assert.equal(joined.ok, true);
    assert.deepEqual(joined.history, [...acked.values()].sort((a, b) => a.seq - b.seq).slice(-50));
    const counts = await stats(base);
    assert.equal(counts.hot, 0);
    assert.ok(counts.cold >= TOTAL, JSON.stringify(counts));
    assert.equal(counts.oldest_hot_at, null);
  });

  it('a retried client_id of an archived message returns it and broadcasts nothing', async () => {
    const room = h.roomId('arr');
    await h.createRoom(base, owner, room);
    const s = await h.connect(base, h.userToken('ar-retry'));
    const first = await ack(s, 'send', { room, content: 'original', client_id: 'keep-me' });
    assert.equal(first.ok, true);
    assert.equal((await queuePass(base)).status, 202);
    await h.until(async () => (await stats(base)).hot === 0, 20000, 'archived');
    const watcher = await h.connect(base, h.userToken('ar-watch'));
    assert.equal((await ack(watcher, 'join', { room })).ok, true);
    const heard = h.collect(watcher, 'message');
    const again = await ack(s, 'send', { room, content: 'changed', client_id: 'keep-me' });
    assert.deepEqual(again.message, first.message);
    const viaHttp = await h.http(base, 'POST', `/api/v1/rooms/${room}/messages`, h.userToken('ar-retry'),
      { content: 'changed again', client_id: 'keep-me' });
    assert.equal(viaHttp.status, 200, viaHttp.text);
    assert.deepEqual(viaHttp.body, first.message);
    const next = await ack(s, 'send', { room, content: 'new', client_id: 'new-one' });
    assert.equal(next.message.seq, 2);
    await h.until(() => heard.length >= 1, 5000, 'the new message');
    assert.deepEqual(heard.map((m) => m.seq), [2]);
  });
});

describe('hot and cold history across two instances with Redis', { skip: !REDIS_ALL && 'TSUNAGI_TEST_REDIS_ALL not set' }, () => {
  let cluster;
  const owner = h.userToken('arx-owner');
  before(async () => {
    cluster = await h.startCluster(2, {
      env: {
        ...BASE_ENV,
        TSUNAGI_REDIS_URL: REDIS_ALL,
        TSUNAGI_REDIS_PREFIX: `tsunagi-test-${crypto.randomBytes(8).toString('hex')}`,
      },
    });
    await h.until(async () => (await h.http(cluster[1].url, 'GET', '/readyz')).status === 200, 10000, 'B ready');
  });
  after(async () => { h.closeAll(); if (cluster) await cluster.destroy(); });

  it('senders, syncers and archive passes on both: every message once, in order, on both', async () => {
    const [A, B] = cluster.map((s) => s.url);
    const room = h.roomId('arx');
    await h.createRoom(A, owner, room);
    const acked = await sendSyncAndArchive([A, B], room);
    for (const base of [A, B]) {
      const reader = await h.connect(base, h.userToken('arx-reader'));
      assertComplete(await syncAll(reader, room, 41), acked, `sync from 0 on ${base}`);
      assertComplete(await pagedBackwards(base, owner, room, 29), acked, `backwards on ${base}`);
    }
  });
});
