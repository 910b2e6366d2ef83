'use strict';
// PROTOCOL.md §6.2 "Room state", through the official socket.io-client and HTTP: STATE, the
// conditional writes (`version`), concurrent writers, `state_get` and the HTTP endpoints,
// `state` events (order per key, who gets them, deletions), `join`'s state snapshot, the rules
// and the order of errors (§5), the shared send rate, and (with Redis) two instances.

const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const crypto = require('node:crypto');
const h = require('./harness');

const { ack, assertAckError, assertHttpError } = h;

/** How long we listen to be sure an event does NOT arrive (after a positive marker arrived). */
const QUIET_MS = 300;
/** Servers here: no send rate and no write rate, unless a test is about the rate. */
const BASE_ENV = { TSUNAGI_SEND_RATE: '0', TSUNAGI_WRITE_RATE: '0' };
const REDIS_ALL = process.env.TSUNAGI_TEST_REDIS_ALL || '';

const RFC3339 = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)$/;
const STATE_FIELDS = ['key', 'room', 'updated_at', 'updated_by', 'value', 'version'];
const enc = encodeURIComponent;
const range = (n) => Array.from({ length: n }, (_, i) => i + 1);

/** Checks STATE's shape, and the fields given in `want`. */
function assertState(s, want = {}) {
  assert.equal(typeof s, 'object', JSON.stringify(s));
  assert.ok(s !== null);
  assert.deepEqual(Object.keys(s).sort(), STATE_FIELDS, JSON.stringify(s));
  assert.match(s.room, /^[a-z0-9_-]{1,64}$/);
  assert.match(s.key, /^[A-Za-z0-9_.:-]{1,128}$/);
  assert.ok(Number.isInteger(s.version) && s.version >= 1, `version ${s.version}`);
  assert.equal(typeof s.updated_by, 'string');
  assert.match(s.updated_at, RFC3339);
  assert.ok(!Number.isNaN(Date.parse(s.updated_at)), s.updated_at);
  for (const [k, v] of Object.entries(want)) assert.deepEqual(s[k], v, `${k} of ${JSON.stringify(s)}`);
}

/** A conflict ack / 409 body's error: { code: 'conflict', message, current }. */
function assertConflictError(err, current) {
  assert.deepEqual(Object.keys(err).sort(), ['code', 'current', 'message'], JSON.stringify(err));
  assert.equal(err.code, 'conflict');
  assert.equal(typeof err.message, 'string');
  if (current === null) assert.equal(err.current, null, JSON.stringify(err));
  else {
    assertState(err.current);
    if (current !== undefined) assert.deepEqual(err.current, current);
  }
}

// HTTP
const stateUrl = (room, key) => `/api/v1/rooms/${room}/state${key === undefined ? '' : `/${enc(key)}`}`;
const httpList = (url, t, room) => h.http(url, 'GET', stateUrl(room), t);
const httpGet = (url, t, room, key) => h.http(url, 'GET', stateUrl(room, key), t);
const httpPut = (url, t, room, key, body) => h.http(url, 'PUT', stateUrl(room, key), t, body);
const httpDel = (url, t, room, key, version) =>
  h.http(url, 'DELETE', `${stateUrl(room, key)}${version === undefined ? '' : `?version=${enc(String(version))}`}`, t);

/** state_set that must succeed → STATE. */
async function set(s, room, key, value, version) {
  const p = { room, key, value };
  if (version !== undefined) p.version = version;
  const r = await ack(s, 'state_set', p);
  assert.equal(r.ok, true, JSON.stringify(r));
  return r.state;
}

/** Collects `state` events of `room` (and `key`, if given). */
const collectState = (s, room, key) =>
  h.collect(s, 'state', (e) => e && e.room === room && (key === undefined || e.key === key));

/**
 * Emits `join` and records the `state` events of the room in arrival order; `atAck` is how many
 * of them had arrived when the join's ack arrived (taken in the ack callback itself, so events
 * decoded right after the ack are not counted before it).
 */
function joinRecording(socket, room) {
  const log = [];
  socket.on('state', (e) => { if (e && e.room === room) log.push(e); });
  return new Promise((resolve, reject) => {
    socket.timeout(10000).emit('join', { room }, (err, res) => {
      if (err) reject(new Error('no ack for join'));
      else resolve({ res, log, atAck: log.length });
    });
  });
}

/** Versions of `key` in a list of STATE events. */
const versionsOf = (events, key) => events.filter((e) => e.key === key).map((e) => e.version);

function assertStrictlyIncreasing(vs, what) {
  for (let i = 1; i < vs.length; i++) {
    assert.ok(vs[i] > vs[i - 1], `${what}: versions not strictly increasing at ${i}: ${JSON.stringify(vs)}`);
  }
}

// ================================================================== one server

describe('room state (§6.2) on one server', () => {
  let srv;
  let url;
  before(async () => { srv = await h.startServer({ env: BASE_ENV }); url = srv.url; });
  after(async () => { h.closeAll(); if (srv) await srv.destroy(); });

  const T = (user) => h.userToken(user);
  const sock = (user) => h.connect(url, T(user));
  async function room(owner = 'st-owner', extra = {}) {
    const id = h.roomId('st');
    await h.createRoom(url, T(owner), id, extra);
    return id;
  }

  // ---------------------------------------------------------------- state_set and versions

  describe('state_set', () => {
    it('a new key gets version 1, each write +1; the ack is { ok, state: STATE }', async () => {
      const id = await room();
      const s = await sock('st-alice');
      const before = Date.now();
      const r = await ack(s, 'state_set', { room: id, key: 'board', value: { cells: [1, 2, 3] } });
      assert.deepEqual(Object.keys(r).sort(), ['ok', 'state'], JSON.stringify(r));
      assert.equal(r.ok, true);
      assertState(r.state, { room: id, key: 'board', value: { cells: [1, 2, 3] }, version: 1, updated_by: 'st-alice' });
      const at = Date.parse(r.state.updated_at);
      assert.ok(at >= before - 5000 && at <= Date.now() + 5000, `updated_at ${r.state.updated_at}`);
      for (let v = 2; v <= 5; v++) {
        const st = await set(s, id, 'board', { cells: [v] });
        assertState(st, { room: id, key: 'board', value: { cells: [v] }, version: v, updated_by: 'st-alice' });
      }
      // another user's write: updated_by follows the writer (the token's sub, never the payload)
      const bob = await sock('st-bob');
      const r2 = await ack(bob, 'state_set', { room: id, key: 'board', value: 'b', updated_by: 'mallory', user_id: 'x' });
      assertState(r2.state, { version: 6, value: 'b', updated_by: 'st-bob' });
    });

    it('any JSON except null is a value, and it comes back as written', async () => {
      const id = await room();
      const s = await sock('st-types');
      const values = [0, false, '', [], {}, 1.5, -7, true, 'text é 日本 😀', [1, 'a', null, { x: [] }],
        { a: null, b: { c: [true, 2.25] }, 'k e y': 'v' }, 'x'.repeat(1000)];
      for (const [i, value] of values.entries()) {
        const st = await set(s, id, `k${i}`, value);
        assertState(st, { key: `k${i}`, value, version: 1 });
        const g = await httpGet(url, T('st-types'), id, `k${i}`);
        assert.equal(g.status, 200, g.text);
        assert.deepEqual(g.body.value, value);
      }
    });

    it('without version the write is unconditional; version null is the same as absent', async () => {
      const id = await room();
      const s = await sock('st-uncond');
      assert.equal((await set(s, id, 'k', 1)).version, 1);
      assert.equal((await set(s, id, 'k', 2)).version, 2);
      assert.equal((await set(s, id, 'k', 3, null)).version, 3);
      assert.equal((await set(s, id, 'fresh', 'x', null)).version, 1);
    });

    it('version = the current version succeeds; a wrong one → conflict with current = the key\'s STATE', async () => {
      const id = await room();
      const s = await sock('st-cond');
      const v1 = await set(s, id, 'k', 'one', 0);
      assert.equal(v1.version, 1);
      const v2 = await set(s, id, 'k', 'two', 1);
      assertState(v2, { version: 2, value: 'two' });
      for (const wrong of [0, 1, 3, 1000]) {
        const r = await ack(s, 'state_set', { room: id, key: 'k', value: 'stale', version: wrong });
        assertAckError(assert, r, 'conflict');
        assertConflictError(r.error, v2);
      }
      // nothing was written by the conflicts
      const g = await ack(s, 'state_get', { room: id, key: 'k' });
      assert.deepEqual(g.items, [v2]);
      assertState(await set(s, id, 'k', 'three', 2), { version: 3, value: 'three' });
    });

    it('version 0 = the key must not exist: a second create → conflict; a version on a missing key → conflict with current null', async () => {
      const id = await room();
      const s = await sock('st-zero');
      const first = await set(s, id, 'once', 'a', 0);
      const r = await ack(s, 'state_set', { room: id, key: 'once', value: 'b', version: 0 });
      assertAckError(assert, r, 'conflict');
      assertConflictError(r.error, first);
      const m = await ack(s, 'state_set', { room: id, key: 'missing', value: 'b', version: 4 });
      assertAckError(assert, m, 'conflict');
      assertConflictError(m.error, null);
      assert.deepEqual((await ack(s, 'state_get', { room: id, key: 'missing' })).items, []);
    });

    it('writes are per (room, key): the same key in two rooms, two keys in one room', async () => {
      const [r1, r2] = [await room(), await room()];
      const s = await sock('st-iso');
      await set(s, r1, 'k', 'a');
      await set(s, r1, 'k', 'b');
      assertState(await set(s, r2, 'k', 'c'), { room: r2, version: 1 });
      assertState(await set(s, r1, 'other', 'd'), { room: r1, version: 1 });
      assert.deepEqual((await ack(s, 'state_get', { room: r2 })).items.map((x) => [x.key, x.value]), [['k', 'c']]);
    });
  });

  // ---------------------------------------------------------------- concurrency

  describe('concurrent writers with the same version', () => {
    let socks;
    before(async () => {
      socks = await Promise.all(range(50).map((i) => sock(`st-cc-${i}`)));
    });

    /** Exactly one winner; every other answer a conflict whose current is the winner's STATE. */
    function oneWinner(results, expectVersion) {
      const oks = results.filter((r) => r.ok);
      const conflicts = results.filter((r) => !r.ok);
      assert.equal(oks.length, 1, `winners: ${JSON.stringify(oks)}`);
      assert.equal(conflicts.length, results.length - 1);
      const winner = oks[0].state;
      assertState(winner, { version: expectVersion });
      for (const c of conflicts) {
        assert.equal(c.error.code, 'conflict', JSON.stringify(c));
        assertConflictError(c.error, winner);
      }
      return winner;
    }

    it('50 sockets set version 1 at once → one ok (version 2), 49 conflict with the winner\'s STATE; joined sockets see one event', async () => {
      const id = await room();
      const t0 = await httpPut(url, T('st-owner'), id, 'race', { value: 'start' });
      assert.equal(t0.status, 200, t0.text);
      const watcher = await sock('st-cc-watch');
      assert.equal((await ack(watcher, 'join', { room: id })).ok, true);
      const events = collectState(watcher, id, 'race');
      const results = await Promise.all(socks.map((s, i) =>
        ack(s, 'state_set', { room: id, key: 'race', value: { writer: i }, version: 1 })));
      const winner = oneWinner(results, 2);
      assert.deepEqual(winner.value, { writer: Number(winner.updated_by.split('-').pop()) - 1 });
      const g = await httpGet(url, T('st-owner'), id, 'race');
      assert.deepEqual(g.body, winner);
      await h.until(() => events.length >= 1, 5000, 'the winner\'s state event');
      await h.sleep(QUIET_MS);
      assert.deepEqual(events, [winner]);
    });

    it('50 sockets create a new key with version 0 at once → one ok (version 1), 49 conflict', async () => {
      const id = await room();
      const results = await Promise.all(socks.map((s, i) =>
        ack(s, 'state_set', { room: id, key: 'claim', value: i, version: 0 })));
      oneWinner(results, 1);
    });

    it('one socket\'s 25 events and 25 HTTP PUTs with the same version, mixed → one ok, 49 conflict', async () => {
      const id = await room();
      const t = T('st-mix');
      const s = await sock('st-mix');
      const v1 = await set(s, id, 'mixed', 'v1');
      assert.equal(v1.version, 1);
      const jobs = [];
      for (let i = 0; i < 50; i++) {
        if (i % 2 === 0) jobs.push(ack(s, 'state_set', { room: id, key: 'mixed', value: { i }, version: 1 }));
        else {
          jobs.push(httpPut(url, t, id, 'mixed', { value: { i }, version: 1 }).then((r) => {
            if (r.status === 200) return { ok: true, state: r.body };
            assertHttpError(assert, r, 409, 'conflict');
            return { ok: false, error: r.body.error };
          }));
        }
      }
      const winner = oneWinner(await Promise.all(jobs), 2);
      assert.deepEqual((await httpGet(url, t, id, 'mixed')).body, winner);
    });

    it('50 HTTP PUTs with the same version at once → one 200, 49 × 409 with current = the winner', async () => {
      const id = await room();
      const t = T('st-put');
      assert.equal((await httpPut(url, t, id, 'p', { value: 0 })).status, 200);
      assert.equal((await httpPut(url, t, id, 'p', { value: 1, version: 1 })).status, 200);
      const res = await Promise.all(range(50).map((i) =>
        httpPut(url, T(`st-put-${i}`), id, 'p', { value: { i }, version: 2 })));
      const oks = res.filter((r) => r.status === 200);
      assert.equal(oks.length, 1, JSON.stringify(res.map((r) => r.status)));
      assertState(oks[0].body, { version: 3 });
      for (const r of res.filter((x) => x.status !== 200)) {
        assertHttpError(assert, r, 409, 'conflict');
        assertConflictError(r.body.error, oks[0].body);
      }
    });

    it('50 unconditional writes at once → all ok, versions 1..50 each once', async () => {
      const id = await room();
      const results = await Promise.all(socks.map((s, i) => ack(s, 'state_set', { room: id, key: 'u', value: i })));
      for (const r of results) assert.equal(r.ok, true, JSON.stringify(r));
      assert.deepEqual(results.map((r) => r.state.version).sort((a, b) => a - b), range(50));
      const last = results.find((r) => r.state.version === 50).state;
      assert.deepEqual((await httpGet(url, T('x'), id, 'u')).body, last);
    });
  });

  // ---------------------------------------------------------------- state_get

  describe('state_get', () => {
    it('→ { ok, items } every key by key (byte order), or the one asked for; key null = every key', async () => {
      const id = await room();
      const s = await sock('st-get');
      const empty = await ack(s, 'state_get', { room: id });
      assert.deepEqual(empty, { ok: true, items: [] });
      const keys = ['b', 'B', 'a', 'A', '_', '-', '.x', ':', '0', 'a.b:c-d_E9', 'Z', 'z'];
      const written = {};
      for (const [i, k] of keys.entries()) written[k] = await set(s, id, k, { i });
      await set(s, id, 'a', 'again');
      written.a = (await ack(s, 'state_get', { room: id, key: 'a' })).items[0];
      const all = await ack(s, 'state_get', { room: id });
      assert.deepEqual(Object.keys(all).sort(), ['items', 'ok']);
      assert.equal(all.ok, true);
      const sorted = [...keys].sort(); // ASCII: code-unit order = byte order
      assert.deepEqual(all.items.map((x) => x.key), sorted);
      for (const st of all.items) {
        assertState(st, { room: id });
        assert.deepEqual(st, written[st.key]);
      }
      assert.deepEqual(written.a.version, 2);
      const one = await ack(s, 'state_get', { room: id, key: 'B' });
      assert.deepEqual(one, { ok: true, items: [written.B] });
      assert.deepEqual((await ack(s, 'state_get', { room: id, key: null })).items, all.items);
      // HTTP lists the same
      const l = await httpList(url, T('st-get'), id);
      assert.equal(l.status, 200, l.text);
      assert.deepEqual(l.body, { items: all.items });
    });

    it('a key that does not exist → { ok: true, items: [] } (the server\'s answer; HTTP GET says 404)', async () => {
      const id = await room();
      const s = await sock('st-get2');
      await set(s, id, 'present', 1);
      assert.deepEqual(await ack(s, 'state_get', { room: id, key: 'absent' }), { ok: true, items: [] });
      assertHttpError(assert, await httpGet(url, T('st-get2'), id, 'absent'), 404, 'not_found');
    });

    it('needs no join; a write is visible to the writer\'s next read at once', async () => {
      const id = await room();
      const s = await sock('st-ryw');
      for (let i = 1; i <= 20; i++) {
        const st = await set(s, id, 'k', i);
        assert.deepEqual((await ack(s, 'state_get', { room: id, key: 'k' })).items, [st]);
        assert.deepEqual((await httpGet(url, T('other'), id, 'k')).body, st);
      }
    });
  });

  // ---------------------------------------------------------------- HTTP

  describe('HTTP', () => {
    it('PUT → 200 STATE (new and existing key); GET list and one key', async () => {
      const id = await room();
      const t = T('st-http');
      const p1 = await httpPut(url, t, id, 'cfg:theme', { value: { dark: true } });
      assert.equal(p1.status, 200, p1.text);
      assertState(p1.body, { room: id, key: 'cfg:theme', value: { dark: true }, version: 1, updated_by: 'st-http' });
      const p2 = await httpPut(url, t, id, 'cfg:theme', { value: { dark: false }, version: 1, extra: 'ignored' });
      assert.equal(p2.status, 200, p2.text);
      assertState(p2.body, { version: 2, value: { dark: false } });
      const p3 = await httpPut(url, t, id, 'cfg.lang', { value: 'ja', version: 0 });
      assert.equal(p3.status, 200, p3.text);
      const g = await httpGet(url, t, id, 'cfg:theme');
      assert.equal(g.status, 200, g.text);
      assert.deepEqual(g.body, p2.body);
      const l = await httpList(url, t, id);
      assert.equal(l.status, 200, l.text);
      assert.deepEqual(Object.keys(l.body), ['items']);
      assert.deepEqual(l.body.items, [p3.body, p2.body]); // 'cfg.lang' < 'cfg:theme'
      // a room with no state
      assert.deepEqual((await httpList(url, t, await room())).body, { items: [] });
      // GET of a missing key: 404
      assertHttpError(assert, await httpGet(url, t, id, 'nope'), 404, 'not_found');
    });

    it('PUT with a wrong version → 409 { error: { code: conflict, message, current } }', async () => {
      const id = await room();
      const t = T('st-http409');
      const p1 = await httpPut(url, t, id, 'k', { value: 'a' });
      for (const wrong of [0, 2, 7]) {
        const r = await httpPut(url, t, id, 'k', { value: 'b', version: wrong });
        assertHttpError(assert, r, 409, 'conflict');
        assertConflictError(r.body.error, p1.body);
      }
      const m = await httpPut(url, t, id, 'missing', { value: 'b', version: 1 });
      assertHttpError(assert, m, 409, 'conflict');
      assertConflictError(m.body.error, null);
    });

    it('DELETE → 204; the key is gone (404, not listed); writing it again starts at version 1', async () => {
      const id = await room();
      const t = T('st-del');
      await httpPut(url, t, id, 'keep', { value: 'k' });
      for (let i = 0; i < 3; i++) await httpPut(url, t, id, 'gone', { value: i });
      const d = await httpDel(url, t, id, 'gone');
      assert.equal(d.status, 204, d.text);
      assert.equal(d.text, '');
      assertHttpError(assert, await httpGet(url, t, id, 'gone'), 404, 'not_found');
      assert.deepEqual((await httpList(url, t, id)).body.items.map((x) => x.key), ['keep']);
      const s = await sock('st-del');
      assert.deepEqual((await ack(s, 'state_get', { room: id, key: 'gone' })).items, []);
      // again from version 1, also with version 0 (the key must not exist: it does not)
      const again = await httpPut(url, t, id, 'gone', { value: 'new', version: 0 });
      assert.equal(again.status, 200, again.text);
      assertState(again.body, { version: 1, value: 'new' });
      // and unconditional writes after a delete start at 1 too
      assert.equal((await httpDel(url, t, id, 'gone', 1)).status, 204);
      assert.equal((await set(s, id, 'gone', 'x')).version, 1);
    });

    it('DELETE ?version= : the right one → 204; a wrong one → 409 with current; missing key: 404 without version, 409 current null with one', async () => {
      const id = await room();
      const t = T('st-delv');
      await httpPut(url, t, id, 'k', { value: 1 });
      const v2 = (await httpPut(url, t, id, 'k', { value: 2 })).body;
      for (const wrong of [0, 1, 3]) {
        const r = await httpDel(url, t, id, 'k', wrong);
        assertHttpError(assert, r, 409, 'conflict');
        assertConflictError(r.body.error, v2);
      }
      assert.deepEqual((await httpGet(url, t, id, 'k')).body, v2);
      assert.equal((await httpDel(url, t, id, 'k', 2)).status, 204);
      // the key is missing now
      assertHttpError(assert, await httpDel(url, t, id, 'k'), 404, 'not_found');
      assertHttpError(assert, await httpDel(url, t, id, 'never'), 404, 'not_found');
      const r = await httpDel(url, t, id, 'never', 3);
      assertHttpError(assert, r, 409, 'conflict');
      assertConflictError(r.body.error, null);
    });

    it('PUT body: value null or missing, not an object, version not a non-negative integer → 400', async () => {
      const id = await room();
      const t = T('st-http400');
      for (const body of [{}, { value: null }, { version: 0 }, { value: null, version: 0 }, [], [1], 'x', 5]) {
        assertHttpError(assert, await httpPut(url, t, id, 'k', body), 400, 'bad_request');
      }
      assertHttpError(assert, await httpPut(url, t, id, 'k', '{not json'), 400, 'bad_request');
      for (const version of [-1, 1.5, '1', true, {}, [1]]) {
        assertHttpError(assert, await httpPut(url, t, id, 'k', { value: 1, version }), 400, 'bad_request');
      }
      for (const version of ['-1', '1.5', 'abc', 'x1']) {
        assertHttpError(assert, await httpDel(url, t, id, 'k', version), 400, 'bad_request');
      }
      assert.deepEqual((await httpList(url, t, id)).body.items, []);
    });

    it('no token → 401 auth_required on every state endpoint', async () => {
      const id = await room();
      assertHttpError(assert, await httpList(url, null, id), 401, 'auth_required');
      assertHttpError(assert, await httpGet(url, null, id, 'k'), 401, 'auth_required');
      assertHttpError(assert, await httpPut(url, null, id, 'k', { value: 1 }), 401, 'auth_required');
      assertHttpError(assert, await httpDel(url, null, id, 'k'), 401, 'auth_required');
    });
  });

  // ---------------------------------------------------------------- state events

  describe('state events', () => {
    it('3 sockets, 100 sequential writes of one key by two writers alternately: each socket gets every version, strictly increasing, equal to the acks', async () => {
      const id = await room();
      const w1 = await sock('st-ev-w1');
      const w2 = await sock('st-ev-w2');
      const obs = await sock('st-ev-obs');
      const all = [w1, w2, obs];
      for (const s of all) assert.equal((await ack(s, 'join', { room: id })).ok, true);
      const got = all.map((s) => collectState(s, id));
      const acked = [];
      for (let i = 0; i < 100; i++) {
        const w = i % 2 === 0 ? w1 : w2;
        // half conditional (on the version the writer last saw), half not
        const st = await set(w, id, 'counter', { n: i }, i % 4 < 2 ? i : undefined);
        assert.equal(st.version, i + 1);
        acked.push(st);
      }
      await h.until(() => got.every((g) => g.length >= 100), 10000, '100 state events on each socket');
      await h.sleep(QUIET_MS);
      for (const g of got) {
        assert.equal(g.length, 100);
        assertStrictlyIncreasing(versionsOf(g, 'counter'), 'counter');
        assert.deepEqual(g, acked);
      }
    });

    it('writes over HTTP and deletions go out too: a deletion as STATE with value null and version one past the deleted one', async () => {
      const id = await room();
      const s = await sock('st-ev-del');
      assert.equal((await ack(s, 'join', { room: id })).ok, true);
      const got = collectState(s, id, 'doc');
      const t = T('st-ev-http');
      const p1 = (await httpPut(url, t, id, 'doc', { value: 'a' })).body;
      const p2 = (await httpPut(url, t, id, 'doc', { value: 'b', version: 1 })).body;
      assert.equal((await httpDel(url, T('st-ev-deleter'), id, 'doc', 2)).status, 204);
      const again = await set(s, id, 'doc', 'c');
      assert.equal(again.version, 1);
      await h.until(() => got.length >= 4, 5000, '4 state events');
      await h.sleep(QUIET_MS);
      assert.equal(got.length, 4, JSON.stringify(got));
      assert.deepEqual(got[0], p1);
      assert.deepEqual(got[1], p2);
      assertState(got[2], { room: id, key: 'doc', value: null, version: 3, updated_by: 'st-ev-deleter' });
      assert.ok(Date.parse(got[2].updated_at) >= Date.parse(p2.updated_at));
      assert.deepEqual(got[3], again); // re-created after the deletion: version 1 arrives, after it
    });

    it('only sockets joined to the room get them: not a non-joined writer, not a socket that left, not another room\'s', async () => {
      const id = await room();
      const otherRoom = await room();
      const joined = await sock('st-ev-j');
      const writer = await sock('st-ev-nw'); // writes without joining
      const left = await sock('st-ev-left');
      const elsewhere = await sock('st-ev-else');
      const idle = await sock('st-ev-idle');
      assert.equal((await ack(joined, 'join', { room: id })).ok, true);
      assert.equal((await ack(left, 'join', { room: id })).ok, true);
      assert.equal((await ack(left, 'leave', { room: id })).ok, true);
      assert.equal((await ack(elsewhere, 'join', { room: otherRoom })).ok, true);
      const seen = collectState(joined, id);
      const stray = [writer, left, elsewhere, idle].map((s) => h.collect(s, 'state'));
      const st = await set(writer, id, 'k', 1);
      assert.equal((await httpPut(url, T('st-ev-nw'), id, 'k2', { value: 2 })).status, 200);
      await h.until(() => seen.length >= 2, 5000, 'the joined socket\'s events');
      await h.sleep(QUIET_MS);
      assert.deepEqual(seen[0], st);
      for (const s of stray) assert.deepEqual(s, []);
    });

    it('the writer\'s own joined socket gets its write, and the user\'s other sockets too', async () => {
      const id = await room();
      const a = await sock('st-ev-self');
      const b = await sock('st-ev-self');
      for (const s of [a, b]) assert.equal((await ack(s, 'join', { room: id })).ok, true);
      const ga = collectState(a, id);
      const gb = collectState(b, id);
      const st = await set(a, id, 'mine', [1]);
      await h.until(() => ga.length >= 1 && gb.length >= 1, 5000, 'state on both sockets');
      assert.deepEqual(ga, [st]);
      assert.deepEqual(gb, [st]);
    });
  });

  // ---------------------------------------------------------------- join

  describe('join', () => {
    it('the ack carries state: [STATE…], every key of the room by key ([] when none)', async () => {
      const id = await room();
      const s = await sock('st-join');
      const j0 = await ack(s, 'join', { room: id });
      assert.equal(j0.ok, true, JSON.stringify(j0));
      assert.deepEqual(j0.state, []);
      const w = await sock('st-join-w');
      const written = [];
      for (const k of ['zeta', 'Alpha', 'mid', 'alpha']) written.push(await set(w, id, k, { k }));
      await set(w, id, 'mid', 'v2');
      assert.equal((await httpDel(url, T('st-join-w'), id, 'zeta')).status, 204);
      const j = await ack(await sock('st-join2'), 'join', { room: id });
      assert.equal(j.ok, true);
      for (const k of ['room', 'epoch', 'last_seq', 'history', 'state']) assert.ok(k in j, `join ack lacks ${k}`);
      assert.deepEqual(j.state.map((x) => x.key), ['Alpha', 'alpha', 'mid']);
      assert.deepEqual(j.state.map((x) => x.version), [1, 1, 2]);
      for (const st of j.state) assertState(st, { room: id });
      assert.deepEqual(j.state, (await ack(w, 'state_get', { room: id })).items);
    });

    it('while writes go on: no state event at or before the join\'s snapshot arrives after the ack, and none after it is missed', async (t) => {
      const id = await room();
      const w = await sock('st-js-w');
      await set(w, id, 'cold', 'never written again');
      let stop = false;
      const finals = {};
      const writer = (async () => {
        let i = 0;
        while (!stop) {
          const key = ['hot1', 'hot2', i > 150 ? 'late' : 'hot1'][i % 3];
          const st = await set(w, id, key, { i });
          finals[key] = st.version;
          i++;
        }
        return i;
      })();
      const joins = [];
      await h.until(() => finals.hot2 >= 5, 10000, 'the writer under way');
      for (let n = 0; n < 12; n++) {
        const s = await sock(`st-js-${n}`);
        const rec = await joinRecording(s, id);
        assert.equal(rec.res.ok, true, JSON.stringify(rec.res));
        joins.push(rec);
        await h.sleep(5 + n * 3);
      }
      await h.until(() => finals.late >= 3, 10000, 'the late key');
      stop = true;
      const writes = await writer;
      assert.ok(writes > 100, `${writes} writes`);
      await h.until(() => joins.every(({ log }) => Object.keys(finals).every((k) => {
        const vs = versionsOf(log, k);
        return vs.length > 0 && vs[vs.length - 1] === finals[k];
      }) || false), 10000, 'every joined socket at the final versions');
      for (const [n, { res, log, atAck }] of joins.entries()) {
        assert.equal(atAck, 0, `join ${n}: state events before the join ack: ${JSON.stringify(log.slice(0, atAck))}`);
        const snap = Object.fromEntries(res.state.map((x) => [x.key, x.version]));
        assert.equal(snap.cold, 1);
        for (const k of Object.keys(finals)) {
          const vs = versionsOf(log.slice(atAck), k);
          const from = snap[k] || 0;
          if (vs.length) {
            assert.ok(vs[0] > from, `join ${n}, key ${k}: event version ${vs[0]} at or before the snapshot's ${from}`);
          }
          // every write after the snapshot arrives, in order
          assert.deepEqual(vs, Array.from({ length: finals[k] - from }, (_, i) => from + 1 + i),
            `join ${n}, key ${k}: snapshot ${from}, events ${JSON.stringify(vs)}`);
        }
        assert.deepEqual(versionsOf(log, 'cold'), []);
      }
      // the joins did land amid the writes: their snapshots differ, and some of them caught
      // 'late' before it existed (its events then start at version 1)
      const snaps = new Set(joins.map(({ res }) => res.state.find((x) => x.key === 'hot1').version));
      assert.ok(snaps.size >= 3, `snapshots of hot1: ${[...snaps]}`);
      const beforeLate = joins.filter(({ res }) => !res.state.some((x) => x.key === 'late')).length;
      t.diagnostic(`${writes} writes; ${snaps.size} distinct snapshots over 12 joins; ${beforeLate} joins before 'late' existed`);
    });
  });

  // ---------------------------------------------------------------- rules and errors

  describe('rules and errors', () => {
    let id;
    let s;
    const t = () => T('st-rules');
    before(async () => {
      id = await room();
      s = await sock('st-rules');
    });

    it('payload missing or not an object, room/key missing or of a wrong type → bad_request', async () => {
      for (const ev of ['state_set', 'state_get']) {
        assertAckError(assert, await ack(s, ev), 'bad_request');
        for (const p of ['x', 42, true, null, [], [{ room: id, key: 'k', value: 1 }]]) {
          assertAckError(assert, await ack(s, ev, p), 'bad_request');
        }
        for (const room of [undefined, 5, true, { id }, [id]]) {
          assertAckError(assert, await ack(s, ev, { room, key: 'k', value: 1 }), 'bad_request');
        }
      }
      for (const key of [undefined, null, 5, true, ['k'], { k: 1 }]) {
        assertAckError(assert, await ack(s, 'state_set', { room: id, key, value: 1 }), 'bad_request');
      }
      for (const key of [5, true, ['k']]) {
        assertAckError(assert, await ack(s, 'state_get', { room: id, key }), 'bad_request');
      }
    });

    it('value null or missing → bad_request / 400', async () => {
      assertAckError(assert, await ack(s, 'state_set', { room: id, key: 'k' }), 'bad_request');
      assertAckError(assert, await ack(s, 'state_set', { room: id, key: 'k', value: null }), 'bad_request');
      assertAckError(assert, await ack(s, 'state_set', { room: id, key: 'k', value: null, version: 0 }), 'bad_request');
      assertHttpError(assert, await httpPut(url, t(), id, 'k', { value: null }), 400, 'bad_request');
      assertHttpError(assert, await httpPut(url, t(), id, 'k', {}), 400, 'bad_request');
    });

    it('a bad room id → bad_request / 400, never not_found', async () => {
      for (const bad of ['Bad', '', 'x'.repeat(65), 'a b', 'a.b', 'é']) {
        assertAckError(assert, await ack(s, 'state_set', { room: bad, key: 'k', value: 1 }), 'bad_request');
        assertAckError(assert, await ack(s, 'state_get', { room: bad }), 'bad_request');
      }
      for (const bad of ['Bad', 'x'.repeat(65), 'a.b', 'a%20b', '%C3%A9']) {
        const p = `/api/v1/rooms/${bad}/state`;
        assertHttpError(assert, await h.http(url, 'GET', p, t()), 400, 'bad_request');
        assertHttpError(assert, await h.http(url, 'GET', `${p}/k`, t()), 400, 'bad_request');
        assertHttpError(assert, await h.http(url, 'PUT', `${p}/k`, t(), { value: 1 }), 400, 'bad_request');
        assertHttpError(assert, await h.http(url, 'DELETE', `${p}/k`, t()), 400, 'bad_request');
      }
    });

    it('KEY: 1 to 128 of A-Z a-z 0-9 _ . : - ; a bad key (empty, 129 chars, "a b", "é", …) → bad_request / 400', async () => {
      const good = ['x', 'K'.repeat(128), 'Az09_.:-', '-', '...x'];
      for (const key of good) {
        assertState(await set(s, id, key, 1), { key });
        const g = await httpGet(url, t(), id, key);
        assert.equal(g.status, 200, `${key}: ${g.text}`);
      }
      const bad = ['', 'k'.repeat(129), 'a b', 'é', 'a/b', 'a\u0000b', 'a+b', 'a#b', 'a?b', 'a%b', '日本'];
      for (const key of bad) {
        assertAckError(assert, await ack(s, 'state_set', { room: id, key, value: 1 }), 'bad_request');
        assertAckError(assert, await ack(s, 'state_get', { room: id, key }), 'bad_request');
        if (key === '') continue; // an empty path segment is another path (see the next test)
        assertHttpError(assert, await httpGet(url, t(), id, key), 400, 'bad_request');
        assertHttpError(assert, await httpPut(url, t(), id, key, { value: 1 }), 400, 'bad_request');
        assertHttpError(assert, await httpDel(url, t(), id, key), 400, 'bad_request');
      }
      // 'é' counts as one character but is not in the alphabet; 128 × 'é' neither
      assertAckError(assert, await ack(s, 'state_set', { room: id, key: 'é'.repeat(10), value: 1 }), 'bad_request');
      assert.deepEqual((await ack(s, 'state_get', { room: id })).items.map((x) => x.key).sort(), [...good].sort());
    });

    it('version not a non-negative integer → bad_request', async () => {
      for (const version of [-1, 1.5, '1', '0', true, false, {}, [1], Number.MAX_VALUE]) {
        assertAckError(assert, await ack(s, 'state_set', { room: id, key: 'v', value: 1, version }), 'bad_request');
      }
      assert.deepEqual((await ack(s, 'state_get', { room: id, key: 'v' })).items, []);
    });

    it('unknown room → not_found / 404 on state_set, state_get, GET, PUT, DELETE', async () => {
      const missing = 'st-no-such-room';
      assertAckError(assert, await ack(s, 'state_set', { room: missing, key: 'k', value: 1 }), 'not_found');
      assertAckError(assert, await ack(s, 'state_set', { room: missing, key: 'k', value: 1, version: 3 }), 'not_found');
      assertAckError(assert, await ack(s, 'state_get', { room: missing }), 'not_found');
      assertAckError(assert, await ack(s, 'state_get', { room: missing, key: 'k' }), 'not_found');
      assertHttpError(assert, await httpList(url, t(), missing), 404, 'not_found');
      assertHttpError(assert, await httpGet(url, t(), missing, 'k'), 404, 'not_found');
      assertHttpError(assert, await httpPut(url, t(), missing, 'k', { value: 1 }), 404, 'not_found');
      assertHttpError(assert, await httpPut(url, t(), missing, 'k', { value: 1, version: 2 }), 404, 'not_found');
      assertHttpError(assert, await httpDel(url, t(), missing, 'k'), 404, 'not_found');
      assertHttpError(assert, await httpDel(url, t(), missing, 'k', 1), 404, 'not_found');
    });

    it('value over 65536 bytes of JSON (the default) → too_large / 413; exactly 65536 is accepted', async () => {
      const max = 'x'.repeat(65536 - 2);
      assertState(await set(s, id, 'big', max), { version: 1 });
      assert.equal((await httpPut(url, t(), id, 'big', { value: max })).status, 200);
      const over = `${max}x`;
      assertAckError(assert, await ack(s, 'state_set', { room: id, key: 'big', value: over }), 'too_large');
      assertHttpError(assert, await httpPut(url, t(), id, 'big', { value: over }), 413, 'too_large');
      assert.equal((await httpGet(url, t(), id, 'big')).body.version, 2);
    });

    it('the order of errors (§5): bad_request, too_large, not_found, forbidden, conflict', async () => {
      const priv = await room('st-rules-owner', { private: true });
      const big = 'x'.repeat(70000);
      const missing = 'st-missing-prec';
      // bad_request over too_large / not_found / forbidden
      assertAckError(assert, await ack(s, 'state_set', { room: 'Bad', key: 'k', value: big }), 'bad_request');
      assertAckError(assert, await ack(s, 'state_set', { room: missing, key: 'a b', value: big }), 'bad_request');
      assertAckError(assert, await ack(s, 'state_set', { room: missing, key: 'k', value: big, version: -1 }), 'bad_request');
      assertAckError(assert, await ack(s, 'state_set', { room: missing, key: 'k', value: null }), 'bad_request');
      assertAckError(assert, await ack(s, 'state_set', { room: priv, key: 'k' }), 'bad_request');
      assertAckError(assert, await ack(s, 'state_get', { room: priv, key: 'a b' }), 'bad_request');
      assertHttpError(assert, await httpPut(url, t(), missing, 'a b', { value: big }), 400, 'bad_request');
      assertHttpError(assert, await httpPut(url, t(), priv, 'k', { value: 1, version: 'x' }), 400, 'bad_request');
      assertHttpError(assert, await httpDel(url, t(), missing, 'k', -1), 400, 'bad_request');
      // too_large over not_found / forbidden
      assertAckError(assert, await ack(s, 'state_set', { room: missing, key: 'k', value: big }), 'too_large');
      assertAckError(assert, await ack(s, 'state_set', { room: priv, key: 'k', value: big, version: 9 }), 'too_large');
      assertHttpError(assert, await httpPut(url, t(), missing, 'k', { value: big }), 413, 'too_large');
      assertHttpError(assert, await httpPut(url, t(), priv, 'k', { value: big }), 413, 'too_large');
      // not_found over conflict; forbidden over conflict
      assertAckError(assert, await ack(s, 'state_set', { room: missing, key: 'k', value: 1, version: 9 }), 'not_found');
      assertAckError(assert, await ack(s, 'state_set', { room: priv, key: 'k', value: 1, version: 9 }), 'forbidden');
      assertHttpError(assert, await httpPut(url, t(), priv, 'k', { value: 1, version: 9 }), 403, 'forbidden');
      assertHttpError(assert, await httpDel(url, t(), priv, 'k', 9), 403, 'forbidden');
      assertHttpError(assert, await httpDel(url, t(), priv, 'k'), 403, 'forbidden');
    });

    it('the socket keeps working after errors', async () => {
      assert.equal(s.connected, true);
      assert.equal((await ack(s, 'state_set', { room: id, key: 'alive', value: true })).ok, true);
    });
  });

  // ---------------------------------------------------------------- private rooms

  describe('private rooms', () => {
    it('a non-member: forbidden / 403 on state_set, state_get, GET, PUT, DELETE; a member, the owner and an admin may', async () => {
      const id = await room('st-pv-owner', { private: true });
      await h.addMember(url, T('st-pv-owner'), id, 'st-pv-member');
      const owner = await sock('st-pv-owner');
      const base = await set(owner, id, 'k', 'base');
      const outsider = await sock('st-pv-out');
      const to = T('st-pv-out');
      assertAckError(assert, await ack(outsider, 'state_set', { room: id, key: 'k', value: 1 }), 'forbidden');
      assertAckError(assert, await ack(outsider, 'state_set', { room: id, key: 'new', value: 1, version: 0 }), 'forbidden');
      assertAckError(assert, await ack(outsider, 'state_get', { room: id }), 'forbidden');
      assertAckError(assert, await ack(outsider, 'state_get', { room: id, key: 'k' }), 'forbidden');
      assertAckError(assert, await ack(outsider, 'state_get', { room: id, key: 'absent' }), 'forbidden');
      assertHttpError(assert, await httpList(url, to, id), 403, 'forbidden');
      assertHttpError(assert, await httpGet(url, to, id, 'k'), 403, 'forbidden');
      assertHttpError(assert, await httpGet(url, to, id, 'absent'), 403, 'forbidden');
      assertHttpError(assert, await httpPut(url, to, id, 'k', { value: 1 }), 403, 'forbidden');
      assertHttpError(assert, await httpDel(url, to, id, 'k'), 403, 'forbidden');
      assertHttpError(assert, await httpDel(url, to, id, 'absent'), 403, 'forbidden');
      assertAckError(assert, await ack(outsider, 'join', { room: id }), 'forbidden');
      // nothing changed
      assert.deepEqual((await ack(owner, 'state_get', { room: id })).items, [base]);

      let version = base.version;
      for (const token of [T('st-pv-member'), h.adminToken('st-pv-admin')]) {
        const s = await h.connect(url, token);
        const st = await set(s, id, 'k', { by: 'socket' }, version);
        assert.equal(st.version, ++version);
        assert.deepEqual((await ack(s, 'state_get', { room: id, key: 'k' })).items, [st]);
        assert.equal((await httpList(url, token, id)).status, 200);
        assert.deepEqual((await httpGet(url, token, id, 'k')).body, st);
        const p = await httpPut(url, token, id, 'k', { value: { by: 'http' }, version });
        assert.equal(p.status, 200, p.text);
        version++;
        assert.equal((await httpPut(url, token, id, 'tmp', { value: 1 })).status, 200);
        assert.equal((await httpDel(url, token, id, 'tmp', 1)).status, 204);
        const j = await ack(s, 'join', { room: id });
        assert.equal(j.ok, true);
        assert.deepEqual(j.state, [p.body]);
      }
    });
  });
});

// ================================================================== size limit

describe('room state with TSUNAGI_MAX_STATE_BYTES=1024', () => {
  let srv;
  let url;
  let id;
  let s;
  const t = h.userToken('st-small');
  before(async () => {
    srv = await h.startServer({ env: { ...BASE_ENV, TSUNAGI_MAX_STATE_BYTES: '1024' } });
    url = srv.url;
    id = h.roomId('sts');
    await h.createRoom(url, t, id);
    s = await h.connect(url, t);
  });
  after(async () => { h.closeAll(); if (srv) await srv.destroy(); });

  // [value, its compact JSON length in UTF-8 bytes]
  const cases = [
    ['x'.repeat(1022), 1024],
    ['x'.repeat(1023), 1025],
    ['é'.repeat(511), 1024],
    ['é'.repeat(512), 1026],
    [{ a: 'x'.repeat(1016) }, 1024],
    [{ a: 'x'.repeat(1017) }, 1025],
    [Array(512).fill(0), 1025], // [0,0,…] = 2 + 512 + 511
  ];

  it('at most 1024 bytes of JSON: the limit is bytes, not characters (socket and HTTP)', async () => {
    for (const [i, [value, bytes]] of cases.entries()) {
      assert.equal(Buffer.byteLength(JSON.stringify(value)), bytes);
      const r = await ack(s, 'state_set', { room: id, key: `k${i}`, value });
      const p = await httpPut(url, t, id, `p${i}`, { value });
      if (bytes <= 1024) {
        assert.equal(r.ok, true, `${bytes} bytes: ${JSON.stringify(r).slice(0, 200)}`);
        assert.deepEqual(r.state.value, value);
        assert.equal(p.status, 200, p.text.slice(0, 200));
      } else {
        assertAckError(assert, r, 'too_large');
        assertHttpError(assert, p, 413, 'too_large');
      }
    }
  });

  it('too large for an unknown room → too_large; for a private room of others → too_large; a bad key wins over it', async () => {
    const big = 'x'.repeat(2000);
    assertAckError(assert, await ack(s, 'state_set', { room: 'sts-unknown', key: 'k', value: big }), 'too_large');
    assertHttpError(assert, await httpPut(url, t, 'sts-unknown', 'k', { value: big }), 413, 'too_large');
    const priv = h.roomId('stsp');
    await h.createRoom(url, h.userToken('st-small-other'), priv, { private: true });
    assertAckError(assert, await ack(s, 'state_set', { room: priv, key: 'k', value: big }), 'too_large');
    assertAckError(assert, await ack(s, 'state_set', { room: 'sts-unknown', key: 'a b', value: big }), 'bad_request');
    // within the limit: the usual not_found / forbidden
    assertAckError(assert, await ack(s, 'state_set', { room: 'sts-unknown', key: 'k', value: 1 }), 'not_found');
    assertAckError(assert, await ack(s, 'state_set', { room: priv, key: 'k', value: 1 }), 'forbidden');
  });
});

// ================================================================== rate limit

describe('room state and the send rate (TSUNAGI_SEND_RATE=1, TSUNAGI_SEND_BURST=2)', () => {
  let srv;
  let url;
  let id;
  before(async () => {
    srv = await h.startServer({ env: { TSUNAGI_SEND_RATE: '1', TSUNAGI_SEND_BURST: '2', TSUNAGI_WRITE_RATE: '0' } });
    url = srv.url;
    id = h.roomId('str');
    await h.createRoom(url, h.userToken('st-rl-owner'), id);
  });
  after(async () => { h.closeAll(); if (srv) await srv.destroy(); });

  function assertLimited(r) {
    assertAckError(assert, r, 'rate_limited');
    assert.deepEqual(Object.keys(r.error).sort(), ['code', 'message', 'retry_after_ms']);
    assert.ok(Number.isInteger(r.error.retry_after_ms) && r.error.retry_after_ms > 0, JSON.stringify(r));
  }
  function assert429(r) {
    assertHttpError(assert, r, 429, 'rate_limited');
    const ra = r.headers.get('retry-after');
    assert.ok(ra !== null && /^\d+$/.test(ra) && Number(ra) >= 1, `Retry-After ${ra}`);
  }

  it('the third quick state_set → rate_limited with retry_after_ms; after it, a write succeeds', async () => {
    const s = await h.connect(url, h.userToken('st-rl-a'));
    await set(s, id, 'a', 1);
    await set(s, id, 'a', 2);
    const r = await ack(s, 'state_set', { room: id, key: 'a', value: 3 });
    assertLimited(r);
    // the refused write wrote nothing
    assert.equal((await ack(s, 'state_get', { room: id, key: 'a' })).items[0].version, 2);
    await h.sleep(r.error.retry_after_ms + 50);
    assert.equal((await set(s, id, 'a', 3, 2)).version, 3);
  });

  it('sends and state writes share one budget (socket and HTTP, PUT and DELETE)', async () => {
    // 2 sends, then a state_set
    const s1 = await h.connect(url, h.userToken('st-rl-b'));
    for (const c of ['m1', 'm2']) assert.equal((await ack(s1, 'send', { room: id, content: c })).ok, true);
    assertLimited(await ack(s1, 'state_set', { room: id, key: 'b', value: 1 }));
    // 2 state_sets, then a send
    const s2 = await h.connect(url, h.userToken('st-rl-c'));
    await set(s2, id, 'c', 1);
    await set(s2, id, 'c', 2);
    assertLimited(await ack(s2, 'send', { room: id, content: 'x' }));
    // 2 PUTs, then a socket send and an HTTP message
    const td = h.userToken('st-rl-d');
    const s3 = await h.connect(url, td);
    for (const v of [1, 2]) assert.equal((await httpPut(url, td, id, 'd', { value: v })).status, 200);
    assertLimited(await ack(s3, 'send', { room: id, content: 'x' }));
    assert429(await h.http(url, 'POST', `/api/v1/rooms/${id}/messages`, td, { content: 'x' }));
    // a message and a PUT, then DELETE → 429, PUT → 429
    const te = h.userToken('st-rl-e');
    assert.equal((await h.http(url, 'POST', `/api/v1/rooms/${id}/messages`, te, { content: 'x' })).status, 201);
    assert.equal((await httpPut(url, te, id, 'e', { value: 1 })).status, 200);
    assert429(await httpDel(url, te, id, 'e'));
    assert429(await httpPut(url, te, id, 'e', { value: 2 }));
    assert.equal((await httpGet(url, te, id, 'e')).body.version, 1);
  });

  it('reads do not count: state_get and GET still answer with the budget spent', async () => {
    const tf = h.userToken('st-rl-f');
    const s = await h.connect(url, tf);
    await set(s, id, 'f', 1);
    await set(s, id, 'f', 2);
    assertLimited(await ack(s, 'state_set', { room: id, key: 'f', value: 3 }));
    for (let i = 0; i < 5; i++) {
      assert.equal((await ack(s, 'state_get', { room: id })).ok, true);
      assert.equal((await httpList(url, tf, id)).status, 200);
      assert.equal((await httpGet(url, tf, id, 'f')).status, 200);
    }
    assert.equal((await ack(s, 'join', { room: id })).ok, true);
  });

  it('with the budget spent: bad_request, too_large, not_found, forbidden still win; rate_limited wins over conflict', async () => {
    const priv = h.roomId('strp');
    await h.createRoom(url, h.userToken('st-rl-owner'), priv, { private: true });
    const tg = h.userToken('st-rl-g');
    const s = await h.connect(url, tg);
    await set(s, id, 'g', 1);
    await set(s, id, 'g', 2);
    assertAckError(assert, await ack(s, 'state_set', { room: 'Bad', key: 'g', value: 1 }), 'bad_request');
    assertAckError(assert, await ack(s, 'state_set', { room: id, key: 'g', value: null }), 'bad_request');
    assertAckError(assert, await ack(s, 'state_set', { room: id, key: 'g', value: 'x'.repeat(70000) }), 'too_large');
    assertAckError(assert, await ack(s, 'state_set', { room: 'str-unknown', key: 'g', value: 1 }), 'not_found');
    assertAckError(assert, await ack(s, 'state_set', { room: priv, key: 'g', value: 1 }), 'forbidden');
    assertHttpError(assert, await httpDel(url, tg, priv, 'g'), 403, 'forbidden');
    assertHttpError(assert, await httpDel(url, tg, 'str-unknown', 'g'), 404, 'not_found');
    assertLimited(await ack(s, 'state_set', { room: id, key: 'g', value: 1, version: 99 }));
    assert429(await httpPut(url, tg, id, 'g', { value: 1, version: 99 }));
  });
});

// ================================================================== two instances

describe('room state across two instances on one database and Redis', { skip: !REDIS_ALL && 'TSUNAGI_TEST_REDIS_ALL not set' }, () => {
  let cluster;
  let A;
  let B;
  let id;
  before(async () => {
    cluster = await h.startCluster(2, {
      env: {
        ...BASE_ENV,
        TSUNAGI_REDIS_URL: REDIS_ALL,
        TSUNAGI_REDIS_PREFIX: `tsunagi-test-${crypto.randomBytes(8).toString('hex')}`,
      },
    });
    [A, B] = cluster.map((x) => x.url);
    await h.until(async () => (await h.http(B, 'GET', '/readyz')).status === 200, 10000, 'B ready');
    id = h.roomId('stx');
    await h.createRoom(A, h.userToken('st-x-owner'), id);
  });
  after(async () => { h.closeAll(); if (cluster) await cluster.destroy(); });

  it('a write on A (socket and HTTP) reaches a socket joined on B, and B reads it at once', async () => {
    const onB = await h.connect(B, h.userToken('st-x-b'));
    assert.equal((await ack(onB, 'join', { room: id })).ok, true);
    const got = collectState(onB, id, 'hello');
    const w = await h.connect(A, h.userToken('st-x-a'));
    const st = await set(w, id, 'hello', { from: 'A' });
    assert.deepEqual((await ack(onB, 'state_get', { room: id, key: 'hello' })).items, [st]);
    const p = await httpPut(A, h.userToken('st-x-a'), id, 'hello', { value: 'http', version: 1 });
    assert.equal(p.status, 200, p.text);
    assert.equal((await httpDel(A, h.userToken('st-x-a'), id, 'hello', 2)).status, 204);
    await h.until(() => got.length >= 3, 5000, 'three state events on B');
    assert.deepEqual(got.slice(0, 2), [st, p.body]);
    assertState(got[2], { value: null, version: 3, key: 'hello' });
    // B's join sees A's writes in its snapshot
    const st2 = await set(w, id, 'snap', 1);
    const j = await ack(await h.connect(B, h.userToken('st-x-b2')), 'join', { room: id });
    assert.deepEqual(j.state.filter((x) => x.key === 'snap'), [st2]);
  });

  it('50 writes of one key alternating between A and B: both instances\' sockets see increasing versions up to 50', async (t) => {
    const key = 'ping-pong';
    const wa = await h.connect(A, h.userToken('st-x-wa'));
    const wb = await h.connect(B, h.userToken('st-x-wb'));
    const oa = await h.connect(A, h.userToken('st-x-oa'));
    const ob = await h.connect(B, h.userToken('st-x-ob'));
    const all = [wa, wb, oa, ob];
    for (const s of all) assert.equal((await ack(s, 'join', { room: id })).ok, true);
    const got = all.map((s) => collectState(s, id, key));
    for (let i = 0; i < 50; i++) {
      const w = i % 2 === 0 ? wa : wb;
      assert.equal((await set(w, id, key, { i }, i % 3 === 0 ? i : undefined)).version, i + 1);
    }
    await h.until(() => got.every((g) => g.length && g[g.length - 1].version === 50), 10000, 'version 50 on every socket');
    await h.sleep(QUIET_MS);
    const names = ['writer on A', 'writer on B', 'observer on A', 'observer on B'];
    for (const [n, g] of got.entries()) {
      const vs = g.map((e) => e.version);
      assertStrictlyIncreasing(vs, names[n]);
      assert.equal(vs[vs.length - 1], 50);
      if (vs.length !== 50) t.diagnostic(`${names[n]}: ${50 - vs.length} of 50 versions not delivered: ${JSON.stringify(vs)}`);
      // every version: the writes were sequential, each acked before the next began
      assert.deepEqual(vs, range(50), `${names[n]} missed versions`);
    }
  });

  it('two writers on A and B at once, 50 unconditional writes each: every socket\'s versions strictly increase, up to 100', async (t) => {
    const key = 'contended';
    const wa = await h.connect(A, h.userToken('st-x-ca'));
    const wb = await h.connect(B, h.userToken('st-x-cb'));
    const oa = await h.connect(A, h.userToken('st-x-coa'));
    const ob = await h.connect(B, h.userToken('st-x-cob'));
    const all = [wa, wb, oa, ob];
    for (const s of all) assert.equal((await ack(s, 'join', { room: id })).ok, true);
    const got = all.map((s) => collectState(s, id, key));
    const acked = [];
    await Promise.all([wa, wb].map(async (w, n) => {
      for (let i = 0; i < 50; i++) acked.push((await set(w, id, key, { n, i })).version);
    }));
    assert.deepEqual(acked.sort((x, y) => x - y), range(100));
    await h.until(() => got.every((g) => g.length && g[g.length - 1].version === 100), 10000, 'version 100 on every socket');
    await h.sleep(QUIET_MS);
    for (const [n, g] of got.entries()) {
      const vs = g.map((e) => e.version);
      assertStrictlyIncreasing(vs, `socket ${n}`);
      // an event that lost the race through Redis may be dropped (docs/protocol.md), never reordered
      if (vs.length !== 100) t.diagnostic(`socket ${n}: ${100 - vs.length} of 100 versions dropped`);
    }
  });
});
