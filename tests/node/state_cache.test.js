'use strict';
// The state cache (issue 14, PROTOCOL.md §6.2): on one instance a join's `state` and a
// `state_get` of a room read before are answered from memory — no state statement runs — and
// say exactly what the database says (read again by a restarted server), under concurrent
// conditional writes and deletes; a writer reads its own write at once.

const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const h = require('./harness');

const { ack } = h;
const REDIS_ALL = process.env.TSUNAGI_TEST_REDIS_ALL || '';

async function stateReads(url) {
  const text = (await h.http(url, 'GET', '/metrics')).text;
  return h.metricValue(text, 'tsunagi_db_query_seconds_count', { statement: 'state_room' }) ?? 0;
}

/** STATE items as the contract orders them (by key). */
const items = (r) => {
  assert.equal(r.ok, true, JSON.stringify(r));
  return r.items;
};

describe('state cache: one instance', () => {
  let srv;
  const owner = h.userToken('sc-owner');
  before(async () => {
    srv = await h.startServer({ env: { TSUNAGI_SEND_RATE: '0', TSUNAGI_WRITE_RATE: '0' } });
  });
  after(async () => { h.closeAll(); if (srv) await srv.destroy(); });

  it('join and state_get answer from memory what the database holds, through racing writers', async () => {
    const room = h.roomId('sc');
    await h.createRoom(srv.url, owner, room);
    const tokens = [1, 2, 3].map((i) => h.userToken(`sc-w${i}`));
    const writers = await Promise.all(tokens.map((t) => h.connect(srv.url, t)));
    const reader = await h.connect(srv.url, h.userToken('sc-reader'));
    assert.equal((await ack(writers[0], 'state_set', { room, key: 'a', value: 0 })).ok, true);
    assert.equal((await ack(reader, 'join', { room })).ok, true); // the first read: from the database

    const before = await stateReads(srv.url);
    // three writers race on shared keys with conditional writes (some conflict) and read their
    // own writes back at once; on key x they write and delete (HTTP: deletes are HTTP only)
    await Promise.all(writers.map(async (s, w) => {
      for (let i = 0; i < 30; i++) {
        if (i % 7 === 6) {
          assert.equal((await ack(s, 'state_set', { room, key: 'x', value: w })).ok, true);
          const d = await h.http(srv.url, 'DELETE', `/api/v1/rooms/${room}/state/x`, tokens[w]);
          assert.ok(d.status === 204 || d.status === 404, d.text); // 404: another deleted it first
          continue;
        }
        const key = ['a', 'b', 'c'][(i + w) % 3];
        const current = items(await ack(s, 'state_get', { room, key }));
        const version = current.length ? current[0].version : 0;
        const r = await ack(s, 'state_set', { room, key, value: { w, i }, version });
        if (r.ok) {
          // never older than the write just answered (a, b, c are never deleted meanwhile)
          const [mine] = items(await ack(s, 'state_get', { room, key }));
          assert.ok(mine.version >= r.state.version, JSON.stringify([mine, r.state]));
          if (mine.version === r.state.version) assert.deepEqual(mine, r.state);
        } else {
          h.assertAckError(assert, r, 'conflict');
        }
      }
    }));
    const del = await h.http(srv.url, 'DELETE', `/api/v1/rooms/${room}/state/b`, owner);
    assert.equal(del.status, 204, del.text);
    await ack(writers[1], 'state_set', { room, key: 'd', value: 'last' });

    const late = await h.connect(srv.url, h.userToken('sc-late'));
    const join = await ack(late, 'join', { room });
    assert.equal(join.ok, true, JSON.stringify(join));
    const got = items(await ack(late, 'state_get', { room }));
    assert.deepEqual(got, join.state);
    assert.deepEqual(got.map((s) => s.key), ['a', 'c', 'd']);
    if (!REDIS_ALL) {
      // one instance: the cache answered every read since the first one
      assert.equal(await stateReads(srv.url), before, 'a state statement ran');
    }

    // what the database holds: read by the same server started again (its cache empty)
    h.closeAll();
    await srv.stop();
    await srv.restart();
    const again = await h.connect(srv.url, h.userToken('sc-after'));
    const fromDb = items(await ack(again, 'state_get', { room }));
    assert.deepEqual(fromDb, join.state);
    assert.equal(await stateReads(srv.url), 1, 'the restarted server read the database');
  });
});
