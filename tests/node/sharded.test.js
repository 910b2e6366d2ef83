'use strict';
// Scale-out (issue 15): room events travel on Redis sharded pub/sub, and an instance subscribes
// only to the shards of the rooms its sockets are in. Runs on one Redis, or on a Redis Cluster
// when TSUNAGI_TEST_REDIS_CLUSTER holds its comma-separated seed URLs.

const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const crypto = require('node:crypto');
const h = require('./harness');

const REDIS = process.env.TSUNAGI_TEST_REDIS_CLUSTER || process.env.TSUNAGI_TEST_REDIS || 'redis://127.0.0.1:6379';
const SHARDS = 64;

/** The shard of a room: FNV-1a 32 modulo the shard count, as src/bus/redis/shards.rs. */
function shardOf(room, shards = SHARDS) {
  let hash = 0x811c9dc5;
  for (const b of Buffer.from(room)) hash = Math.imul(hash ^ b, 0x01000193) >>> 0;
  return hash % shards;
}

async function metric(base, name, labels) {
  return h.metricValue((await h.http(base, 'GET', '/metrics')).text, name, labels) ?? 0;
}

describe('sharded bus: three instances', () => {
  let servers;
  let a;
  let b;
  let c;
  const tag = crypto.randomBytes(4).toString('hex');
  const busy = `sh-busy-${tag}`;
  let other;
  before(async () => {
    for (let i = 0; ; i++) {
      other = `sh-other-${tag}-${i}`;
      if (shardOf(other) !== shardOf(busy)) break;
    }
    servers = await h.startCluster(3, {
      env: {
        TSUNAGI_REDIS_URL: REDIS,
        TSUNAGI_REDIS_PREFIX: `tsunagi-test-${crypto.randomBytes(8).toString('hex')}`,
        TSUNAGI_BUS_SHARDS: String(SHARDS),
        TSUNAGI_SEND_RATE: '0',
      },
    });
    [a, b, c] = servers.map((s) => s.url);
    for (const u of [a, b, c]) {
      await h.until(async () => (await h.http(u, 'GET', '/readyz')).status === 200, 10000, 'ready');
    }
    await h.createRoom(a, h.userToken('sh-owner'), busy);
    await h.createRoom(a, h.userToken('sh-owner'), other);
  });
  after(async () => { h.closeAll(); if (servers) await servers.destroy(); });

  it('messages reach every instance in order; an instance in other rooms receives none of them', async () => {
    const bystander = await h.connect(c, h.userToken('sh-by'));
    assert.equal((await h.ack(bystander, 'join', { room: other })).ok, true);
    const readers = [await h.connect(a, h.userToken('sh-ra')), await h.connect(b, h.userToken('sh-rb'))];
    const got = readers.map((s) => h.collect(s, 'message'));
    for (const s of readers) assert.equal((await h.ack(s, 'join', { room: busy })).ok, true);
    const before = await metric(c, 'tsunagi_bus_received_events_total', { kind: 'message' });
    const writers = [await h.connect(a, h.userToken('sh-wa')), await h.connect(b, h.userToken('sh-wb'))];
    await Promise.all(writers.map(async (w, i) => {
      for (let n = 0; n < 40; n++) {
        const r = await h.ack(w, 'send', { room: busy, content: `w${i} ${n}`, client_id: `w${i}-${n}` });
        assert.equal(r.ok, true, JSON.stringify(r));
      }
    }));
    await h.until(() => got.every((g) => g.length >= 80), 10000, '80 messages on both readers');
    for (const g of got) assert.deepEqual(g.map((m) => m.seq), Array.from({ length: 80 }, (_, i) => i + 1));
    // B received A's writer's messages through the bus (its metric counts them), C none
    assert.ok(await metric(b, 'tsunagi_bus_received_events_total', { kind: 'message' }) >= 40);
    assert.equal(await metric(c, 'tsunagi_bus_received_events_total', { kind: 'message' }), before);
    assert.equal(await metric(c, 'tsunagi_bus_shards_subscribed'), 1);
    assert.ok(await metric(a, 'tsunagi_bus_shards_subscribed') >= 1);
  });

  it('typing and presence cross instances', async () => {
    const watcher = await h.connect(b, h.userToken('sh-watch'));
    assert.equal((await h.ack(watcher, 'join', { room: busy })).ok, true);
    const presence = h.collect(watcher, 'presence');
    const typing = h.collect(watcher, 'typing');
    const alice = await h.connect(c, h.userToken('sh-alice'));
    assert.equal((await h.ack(alice, 'join', { room: busy })).ok, true);
    await h.until(() => presence.some((p) => p.user_id === 'sh-alice' && p.status === 'online'), 5000, 'online');
    assert.equal((await h.ack(alice, 'typing', { room: busy })).ok, true);
    await h.until(() => typing.some((t) => t.user_id === 'sh-alice'), 5000, 'typing');
    assert.equal((await h.ack(alice, 'leave', { room: busy })).ok, true);
    await h.until(() => presence.some((p) => p.user_id === 'sh-alice' && p.status === 'offline'), 5000, 'offline');
  });

  it('a socket joining a busy room late, on an instance not subscribed to its shard, misses nothing', async () => {
    // on a shard C is not subscribed to (C's one socket is in `other`)
    let room;
    for (let i = 0; ; i++) {
      room = `sh-late-${tag}-${i}`;
      if (![busy, other].map((r) => shardOf(r)).includes(shardOf(room))) break;
    }
    // alice left `busy` on C: its shard lingers, then is dropped
    await h.until(async () => (await metric(c, 'tsunagi_bus_shards_subscribed')) === 1, 10000,
      'C to drop the shard of the room it left');
    await h.createRoom(a, h.userToken('sh-owner'), room);
    const writer = await h.connect(a, h.userToken('sh-lw'));
    const reader = await h.connect(a, h.userToken('sh-lr'));
    assert.equal((await h.ack(reader, 'join', { room })).ok, true);
    let sending = true;
    let sent = 0;
    const sends = (async () => {
      while (sending) {
        const r = await h.ack(writer, 'send', { room, content: `m${sent}`, client_id: `l-${sent}` });
        assert.equal(r.ok, true, JSON.stringify(r));
        sent++;
      }
    })();
    await h.until(() => sent >= 20, 10000, 'the room to be busy');
    const late = await h.connect(c, h.userToken('sh-late'));
    const got = h.collect(late, 'message');
    const joined = await h.ack(late, 'join', { room });
    assert.equal(joined.ok, true);
    await h.until(() => sent >= joined.last_seq + 30, 10000, 'more messages after the join');
    sending = false;
    await sends;
    await h.until(() => got.length > 0 && got[got.length - 1].seq === sent, 10000, 'every message on the late socket');
    assert.deepEqual(got.map((m) => m.seq),
      Array.from({ length: sent - joined.last_seq }, (_, i) => joined.last_seq + 1 + i));
    assert.equal(await metric(c, 'tsunagi_bus_shards_subscribed'), 2, 'the join subscribed a new shard');
  });
});
