'use strict';
// PROTOCOL.md §6.1: sensors and readings (time series), through HTTP and the official
// socket.io-client: SENSOR-INFO, the readings write rules (validation, idempotency,
// write-behind, push-back), readings and series queries, `reading` / `subscribe` /
// `unsubscribe` and the live throttle.

const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const h = require('./harness');

const { ack, assertAckError, assertHttpError } = h;

// ------------------------------------------------------------------ helpers

const SEC = 1000;
const MIN = 60 * SEC;
const HOUR = 60 * MIN;
const DAY = 24 * HOUR;
/** The buckets of §6.1 and their lengths in ms. */
const BUCKETS = { '1s': SEC, '10s': 10 * SEC, '1m': MIN, '5m': 5 * MIN, '15m': 15 * MIN, '1h': HOUR, '6h': 6 * HOUR, '1d': DAY };
const AGGS = ['avg', 'min', 'max', 'sum', 'count', 'last'];
const DEFAULT_AGGS = ['avg', 'min', 'max', 'count'];
/** How long we listen to be sure an event does NOT arrive (after a positive marker arrived). */
const QUIET_MS = 400;
/** Servers here: no write rate (many sensors are created), no send rate. */
const BASE_ENV = { TSUNAGI_WRITE_RATE: '0', TSUNAGI_SEND_RATE: '0' };

/** RFC 3339 UTC with milliseconds, the form READING.ts and series `t` take. */
const iso = (ms) => new Date(ms).toISOString();
const RFC3339_MS = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/;

let sensors = 0;
/** A fresh, valid SENSOR id (uses the whole alphabet: A-Z a-z 0-9 _ . : -). */
const sensorId = (prefix = 's') => `${prefix}-${process.pid}_${++sensors}.T:x`;

/** A small deterministic PRNG (mulberry32), so a failing data set can be reproduced. */
function prng(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const enc = encodeURIComponent;
const qs = (params) => {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== undefined && v !== null) q.set(k, String(v));
  const s = q.toString();
  return s ? `?${s}` : '';
};

/** POST /api/v1/sensors (asserting 201) → SENSOR-INFO. */
async function createSensor(url, token, id, extra = {}) {
  const r = await h.http(url, 'POST', '/api/v1/sensors', token, { id, ...extra });
  if (r.status !== 201) throw new Error(`create sensor ${id}: ${r.status} ${r.text}`);
  return r.body;
}

/** POST …/readings → the raw response. `query` e.g. '?durable=true'. */
const postReadings = (url, token, id, readings, query = '') =>
  h.http(url, 'POST', `/api/v1/sensors/${enc(id)}/readings${query}`, token, { readings });

/** Writes readings with ?durable=true in requests of at most 1000 (asserting 201 each). */
async function writeDurable(url, token, id, readings) {
  for (let i = 0; i < readings.length; i += 1000) {
    const chunk = readings.slice(i, i + 1000);
    const r = await postReadings(url, token, id, chunk, '?durable=true');
    assert.equal(r.status, 201, r.text);
    assert.deepEqual(r.body, { accepted: chunk.length, durable: true });
  }
}

/** GET …/readings with the given query → the raw response. */
const getReadings = (url, token, id, params = {}) =>
  h.http(url, 'GET', `/api/v1/sensors/${enc(id)}/readings${qs(params)}`, token);

/** Every reading of [from, to) through GET …/readings, following next_cursor. */
async function allReadings(url, token, id, from, to, limit = 5000) {
  const items = [];
  let cursor;
  for (let pages = 1; ; pages++) {
    const r = await getReadings(url, token, id, { from, to, limit, cursor });
    assert.equal(r.status, 200, r.text);
    assert.deepEqual(Object.keys(r.body).sort(), ['items', 'next_cursor']);
    assert.ok(r.body.items.length <= limit);
    items.push(...r.body.items);
    if (r.body.next_cursor === null) return { items, pages };
    assert.equal(typeof r.body.next_cursor, 'string');
    assert.ok(pages < 10000, 'too many pages');
    cursor = r.body.next_cursor;
  }
}

/** GET …/series with the given query → the raw response. */
const getSeries = (url, token, id, params = {}) =>
  h.http(url, 'GET', `/api/v1/sensors/${enc(id)}/series${qs(params)}`, token);

/** The READING we expect the server to show for a written { value, ts (ms), tags? }. */
const expected = (id, r) => ({ sensor: id, ts: iso(r.ts), value: r.value, tags: r.tags || {} });

function assertReadingShape(r, id) {
  assert.equal(typeof r, 'object', JSON.stringify(r));
  assert.deepEqual(Object.keys(r).sort(), ['sensor', 'tags', 'ts', 'value'], JSON.stringify(r));
  if (id !== undefined) assert.equal(r.sensor, id);
  assert.match(r.ts, RFC3339_MS);
  assert.equal(typeof r.value, 'number');
  assert.ok(r.tags && typeof r.tags === 'object' && !Array.isArray(r.tags), JSON.stringify(r));
  for (const v of Object.values(r.tags)) assert.equal(typeof v, 'string');
}

function assertSensorInfoShape(s, { metadata = false } = {}) {
  const keys = ['created_at', 'id', 'last_ts', 'name', 'owner_id', 'private'];
  if (metadata) keys.push('metadata');
  assert.deepEqual(Object.keys(s).sort(), keys.sort(), JSON.stringify(s));
  assert.match(s.id, /^[A-Za-z0-9_.:-]{1,128}$/);
  assert.equal(typeof s.name, 'string');
  assert.equal(typeof s.private, 'boolean');
  assert.equal(typeof s.owner_id, 'string');
  assert.ok(!Number.isNaN(Date.parse(s.created_at)), s.created_at);
  assert.match(s.created_at, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)$/);
  if (s.last_ts !== null) assert.match(s.last_ts, RFC3339_MS);
}

/** Float equality up to rounding (sums and averages may be added up in another order). */
function assertClose(actual, wanted, what) {
  assert.equal(typeof actual, 'number', `${what}: ${actual}`);
  const tol = 1e-9 * Math.max(1, Math.abs(wanted));
  assert.ok(Math.abs(actual - wanted) <= tol, `${what}: got ${actual}, want ${wanted}`);
}

/**
 * The series the server must answer for `readings` ({ ts (ms), value }, unique ts) in [from, to):
 * buckets at whole multiples of their length since the epoch, only non-empty ones, ascending,
 * with `t` and exactly the asked aggregates.
 */
function referenceSeries(readings, from, to, bucketMs, aggs) {
  const groups = new Map();
  for (const r of readings) {
    if (r.ts < from || r.ts >= to) continue;
    const t = Math.floor(r.ts / bucketMs) * bucketMs;
    if (!groups.has(t)) groups.set(t, []);
    groups.get(t).push(r);
  }
  return [...groups.keys()].sort((a, b) => a - b).map((t) => {
    const rs = groups.get(t);
    const values = rs.map((r) => r.value);
    const sum = values.reduce((a, b) => a + b, 0);
    const all = {
      count: rs.length,
      sum,
      avg: sum / rs.length,
      min: Math.min(...values),
      max: Math.max(...values),
      last: rs.reduce((a, b) => (b.ts > a.ts ? b : a)).value,
    };
    const item = { t: iso(t) };
    for (const a of aggs) item[a] = all[a];
    return item;
  });
}

function assertSeriesEqual(got, want, what) {
  assert.equal(got.length, want.length, `${what}: ${got.length} buckets, want ${want.length}`);
  for (let i = 0; i < want.length; i++) {
    const g = got[i];
    const w = want[i];
    const at = `${what} bucket ${w.t}`;
    assert.deepEqual(Object.keys(g).sort(), Object.keys(w).sort(), `${at}: ${JSON.stringify(g)}`);
    assert.equal(g.t, w.t, at);
    for (const k of Object.keys(w)) {
      if (k === 't') continue;
      if (k === 'avg' || k === 'sum') assertClose(g[k], w[k], `${at} ${k}`);
      else if (k === 'count') { assert.ok(Number.isInteger(g.count), `${at} count ${g.count}`); assert.equal(g.count, w.count, `${at} count`); }
      else assert.equal(g[k], w[k], `${at} ${k}`);
    }
  }
}

/** The largest number of `times` (sorted ms) inside any window of `windowMs`. */
function maxPerWindow(times, windowMs) {
  let max = 0;
  for (let i = 0, j = 0; i < times.length; i++) {
    while (times[i] - times[j] >= windowMs) j++;
    max = Math.max(max, i - j + 1);
  }
  return max;
}

// ------------------------------------------------------------------ SENSOR-INFO

describe('POST and GET /api/v1/sensors/{id}', () => {
  let srv;
  let url;
  before(async () => { srv = await h.startServer({ env: BASE_ENV }); url = srv.url; });
  after(async () => { h.closeAll(); if (srv) await srv.destroy(); });

  const post = (token, body) => h.http(url, 'POST', '/api/v1/sensors', token, body);
  const info = (token, id) => h.http(url, 'GET', `/api/v1/sensors/${enc(id)}`, token);

  it('201 SENSOR-INFO: name defaults to the id, public, owner = sub, last_ts null, no metadata key', async () => {
    const id = sensorId('ci');
    const before = Date.now();
    const r = await post(h.userToken('si-owner'), { id });
    assert.equal(r.status, 201, r.text);
    assertSensorInfoShape(r.body);
    assert.equal(r.body.id, id);
    assert.equal(r.body.name, id);
    assert.equal(r.body.private, false);
    assert.equal(r.body.owner_id, 'si-owner');
    assert.equal(r.body.last_ts, null);
    assert.ok(Math.abs(Date.parse(r.body.created_at) - before) < 60000, r.body.created_at);
    // GET answers the same SENSOR-INFO, to anyone with a token
    const g = await info(h.userToken('si-someone'), id);
    assert.equal(g.status, 200, g.text);
    assert.deepEqual(g.body, r.body);
  });

  it('name, private and metadata are kept; metadata appears only when given', async () => {
    const id = sensorId('cm');
    const metadata = { unit: '°C', floor: 3, tags: ['a', 'b'], nested: { ok: true } };
    const r = await post(h.userToken('si-owner'), { id, name: 'Boiler 3', private: true, metadata });
    assert.equal(r.status, 201, r.text);
    assertSensorInfoShape(r.body, { metadata: true });
    assert.equal(r.body.name, 'Boiler 3');
    assert.equal(r.body.private, true);
    assert.deepEqual(r.body.metadata, metadata);
    const g = await info(h.userToken('si-owner'), id);
    assert.equal(g.status, 200, g.text);
    assert.deepEqual(g.body, r.body);
    // null is the same as absent
    const id2 = sensorId('cn');
    const r2 = await post(h.userToken('si-owner'), { id: id2, name: null, private: null, metadata: null, extra: 1 });
    assert.equal(r2.status, 201, r2.text);
    assertSensorInfoShape(r2.body);
    assert.equal(r2.body.name, id2);
    assert.equal(r2.body.private, false);
  });

  it('every SENSOR character is accepted, 1 and 128 characters too', async () => {
    const t = h.userToken('si-chars');
    for (const id of ['AZaz09_.:-', 'x', 'Q'.repeat(128), `m:${process.pid}.a-b_C`]) {
      const r = await post(t, { id });
      assert.equal(r.status, 201, `${id}: ${r.text}`);
      assert.equal(r.body.id, id);
      const g = await info(t, id);
      assert.equal(g.status, 200, `${id}: ${g.text}`);
      assert.equal(g.body.id, id);
      // ':' and '.' need no escaping in a path
      const raw = await h.http(url, 'GET', `/api/v1/sensors/${id}`, t);
      assert.equal(raw.status, 200, `${id} unescaped: ${raw.text}`);
      assert.equal(raw.body.id, id);
    }
  });

  it('409 conflict on a taken id, whoever asks', async () => {
    const id = sensorId('cc');
    await createSensor(url, h.userToken('si-first'), id, { private: true });
    assertHttpError(assert, await post(h.userToken('si-first'), { id }), 409, 'conflict');
    assertHttpError(assert, await post(h.userToken('si-second'), { id, name: 'other' }), 409, 'conflict');
    assertHttpError(assert, await post(h.adminToken('si-admin'), { id }), 409, 'conflict');
    // the first one is unchanged
    const g = await info(h.userToken('si-first'), id);
    assert.equal(g.body.owner_id, 'si-first');
    assert.equal(g.body.private, true);
  });

  it('400 on a bad id, wrong field types or a malformed body', async () => {
    const t = h.userToken('si-bad');
    for (const bad of ['a b', 'x'.repeat(129), 'é', 'caf\u00e9', '', 'a/b', 'a?b', 'a#b', 5, true, [], {}, null]) {
      assertHttpError(assert, await post(t, { id: bad }), 400, 'bad_request');
    }
    assertHttpError(assert, await post(t, {}), 400, 'bad_request');
    assertHttpError(assert, await post(t, { id: sensorId('cb'), name: 5 }), 400, 'bad_request');
    assertHttpError(assert, await post(t, { id: sensorId('cb'), private: 'yes' }), 400, 'bad_request');
    assertHttpError(assert, await post(t, { id: sensorId('cb'), private: 1 }), 400, 'bad_request');
    for (const md of [[], 'meta', 5, true]) {
      assertHttpError(assert, await post(t, { id: sensorId('cb'), metadata: md }), 400, 'bad_request');
    }
    assertHttpError(assert, await post(t, 'not json'), 400, 'bad_request');
    assertHttpError(assert, await post(t, '{"id":'), 400, 'bad_request');
    assertHttpError(assert, await post(t, []), 400, 'bad_request');
  });

  it('401 without a token', async () => {
    assertHttpError(assert, await post(null, { id: sensorId('cu') }), 401, 'auth_required');
    const id = sensorId('cu');
    await createSensor(url, h.userToken('si-owner'), id);
    assertHttpError(assert, await info(null, id), 401, 'auth_required');
  });

  it('GET: 404 for a missing sensor; a private one → 403 for others, 200 for its owner and admins', async () => {
    assertHttpError(assert, await info(h.userToken('si-x'), `missing-${process.pid}`), 404, 'not_found');
    const id = sensorId('cp');
    const created = await createSensor(url, h.userToken('si-powner'), id, { private: true });
    assertHttpError(assert, await info(h.userToken('si-stranger'), id), 403, 'forbidden');
    const own = await info(h.userToken('si-powner'), id);
    assert.equal(own.status, 200, own.text);
    assert.deepEqual(own.body, created);
    const adm = await info(h.adminToken('si-admin'), id);
    assert.equal(adm.status, 200, adm.text);
    assert.deepEqual(adm.body, created);
  });

  it('GET of an id that is not a SENSOR → 400 (as ROOM in §5), not 404', async () => {
    assertHttpError(assert, await info(h.userToken('si-x'), 'x'.repeat(129)), 400, 'bad_request');
    assertHttpError(assert, await info(h.userToken('si-x'), 'a b'), 400, 'bad_request');
  });

  it('last_ts is null until a reading, then the greatest ts written', async () => {
    const t = h.userToken('si-lt');
    const id = sensorId('cl');
    await createSensor(url, t, id);
    const base = Date.now() - HOUR;
    await writeDurable(url, t, id, [{ value: 1, ts: base + 5000 }, { value: 2, ts: base }, { value: 3, ts: base + 2000 }]);
    const g = await info(t, id);
    assert.equal(g.status, 200, g.text);
    assertSensorInfoShape(g.body);
    assert.equal(g.body.last_ts, iso(base + 5000));
  });
});

// ------------------------------------------------------------------ listing

describe('GET /api/v1/sensors', () => {
  let srv;
  let url;
  const pub = [];
  const privA = [];
  const privB = [];
  before(async () => {
    srv = await h.startServer({ env: BASE_ENV });
    url = srv.url;
    // ids chosen so that the id order interleaves kinds (and sorts alike in any collation)
    for (let i = 0; i < 7; i++) {
      const id = `sensor-${String(i * 3).padStart(2, '0')}`;
      await createSensor(url, h.userToken('ls-x'), id, i === 0 ? { metadata: { k: 'v' } } : {});
      pub.push(id);
    }
    for (let i = 0; i < 3; i++) {
      const id = `sensor-${String(i * 3 + 1).padStart(2, '0')}`;
      await createSensor(url, h.userToken('ls-a'), id, { private: true, name: `A${i}` });
      privA.push(id);
    }
    for (let i = 0; i < 3; i++) {
      const id = `sensor-${String(i * 3 + 2).padStart(2, '0')}`;
      await createSensor(url, h.userToken('ls-b'), id, { private: true });
      privB.push(id);
    }
  });
  after(async () => { h.closeAll(); if (srv) await srv.destroy(); });

  const sorted = (a) => [...a].sort();
  const list = (token, q = '') => h.http(url, 'GET', `/api/v1/sensors${q}`, token);
  async function listAll(token, limit) {
    const { items } = await h.keysetPages((p) => h.http(url, 'GET', p, token), '/api/v1/sensors', limit, 200);
    return items.map((x) => x.id);
  }

  it('a user sees the public sensors and its own private ones, ordered by id, as SENSOR-INFO', async () => {
    const r = await list(h.userToken('ls-a'));
    assert.equal(r.status, 200, r.text);
    assert.deepEqual(Object.keys(r.body).sort(), ['items', 'next_cursor']);
    assert.deepEqual(r.body.items.map((x) => x.id), sorted([...pub, ...privA]));
    assert.equal(r.body.next_cursor, null);
    const byId = Object.fromEntries(r.body.items.map((x) => [x.id, x]));
    for (const it of r.body.items) assertSensorInfoShape(it, { metadata: it.id === pub[0] });
    assert.deepEqual(byId[pub[0]].metadata, { k: 'v' });
    assert.equal(byId[pub[1]].name, pub[1]);
    assert.equal(byId[privA[0]].name, 'A0');
    assert.equal(byId[privA[0]].private, true);
    assert.equal(byId[privA[0]].owner_id, 'ls-a');
  });

  it('private sensors are hidden from others; admins see all', async () => {
    const s = await list(h.userToken('ls-stranger'));
    assert.deepEqual(s.body.items.map((x) => x.id), sorted(pub));
    const b = await list(h.userToken('ls-b'));
    assert.deepEqual(b.body.items.map((x) => x.id), sorted([...pub, ...privB]));
    const a = await list(h.adminToken('ls-admin'));
    assert.deepEqual(a.body.items.map((x) => x.id), sorted([...pub, ...privA, ...privB]));
  });

  it('keyset pagination: limit + next_cursor walk every visible sensor once', async () => {
    for (const limit of [1, 2, 3, 4, 10, 500]) {
      assert.deepEqual(await listAll(h.userToken('ls-a'), limit), sorted([...pub, ...privA]), `limit ${limit}`);
      assert.deepEqual(await listAll(h.userToken('ls-stranger'), limit), sorted(pub), `limit ${limit}`);
    }
    assert.deepEqual(await listAll(h.adminToken('ls-admin'), 4), sorted([...pub, ...privA, ...privB]));
    const p1 = await list(h.userToken('ls-stranger'), '?limit=2');
    assert.deepEqual(p1.body.items.map((x) => x.id), sorted(pub).slice(0, 2));
    assert.equal(typeof p1.body.next_cursor, 'string');
  });

  it('limit default 50; 1 to 500, else 400; 401 without a token', async () => {
    const t = h.adminToken('ls-admin');
    for (let i = 0; i < 45; i++) await createSensor(url, t, `zz-bulk-${String(i).padStart(2, '0')}`);
    const r = await list(t);
    assert.equal(r.status, 200, r.text);
    assert.equal(r.body.items.length, 50);
    assert.equal(typeof r.body.next_cursor, 'string');
    const r2 = await list(t, '?limit=500');
    assert.equal(r2.body.items.length, 7 + 3 + 3 + 45);
    assert.equal(r2.body.next_cursor, null);
    const r1 = await list(t, '?limit=1');
    assert.equal(r1.body.items.length, 1);
    for (const bad of ['0', '501', '-1', 'abc', '1.5']) {
      assertHttpError(assert, await list(t, `?limit=${bad}`), 400, 'bad_request');
    }
    assertHttpError(assert, await list(null), 401, 'auth_required');
  });
});

// ------------------------------------------------------------------ writing readings

describe('POST /api/v1/sensors/{id}/readings', () => {
  let srv;
  let url;
  const OWNER = h.userToken('wr-owner');
  before(async () => { srv = await h.startServer({ env: BASE_ENV }); url = srv.url; });
  after(async () => { h.closeAll(); if (srv) await srv.destroy(); });

  async function fresh(extra = {}) {
    const id = sensorId('w');
    await createSensor(url, OWNER, id, extra);
    return id;
  }
  /** The newest accepted readings (buffered or written) as `subscribe` shows them. */
  async function lastAccepted(id, token = OWNER) {
    const s = await h.connect(url, token);
    try {
      const a = await ack(s, 'subscribe', { sensor: id });
      assert.equal(a.ok, true, JSON.stringify(a));
      return a.last;
    } finally { s.close(); }
  }
  const everything = (id) => allReadings(url, OWNER, id, 0, Date.now() + 10 * MIN);

  it('202 { accepted, durable: false }; ?durable=true → 201 { accepted, durable: true }, readable at once', async () => {
    const id = await fresh();
    const base = Date.now() - HOUR;
    const r = await postReadings(url, OWNER, id, [{ value: 1, ts: base }, { value: 2, ts: base + 1 }]);
    assert.equal(r.status, 202, r.text);
    assert.deepEqual(r.body, { accepted: 2, durable: false });
    const f = await postReadings(url, OWNER, id, [{ value: 3, ts: base + 2 }], '?durable=false');
    assert.equal(f.status, 202, f.text);
    assert.deepEqual(f.body, { accepted: 1, durable: false });
    const readings = [{ value: 10.25, ts: base + 10 }, { value: -4, ts: base + 11, tags: { a: 'b' } }, { value: 0, ts: base + 12 }];
    const d = await postReadings(url, OWNER, id, readings, '?durable=true');
    assert.equal(d.status, 201, d.text);
    assert.deepEqual(d.body, { accepted: 3, durable: true });
    const g = await getReadings(url, OWNER, id, { from: base + 10, to: base + 13 });
    assert.equal(g.status, 200, g.text);
    assert.deepEqual(g.body, { items: readings.map((x) => expected(id, x)), next_cursor: null });
  });

  it('non-durable readings become readable within about one flush interval', async () => {
    const id = await fresh();
    const ts = Date.now() - 10 * MIN;
    const r = await postReadings(url, OWNER, id, [{ value: 7.5, ts, tags: { room: 'k' } }]);
    assert.equal(r.status, 202, r.text);
    let items = [];
    await h.until(async () => {
      items = (await getReadings(url, OWNER, id, { from: ts, to: ts + 1 })).body.items;
      return items.length > 0;
    }, 1000 + 4000, 'the buffered reading to be written');
    assert.deepEqual(items, [expected(id, { value: 7.5, ts, tags: { room: 'k' } })]);
  });

  it('ts as RFC 3339 (any offset, finer than ms truncated) or integer ms; absent → the time of acceptance', async () => {
    const id = await fresh();
    const day = new Date(Date.now() - 2 * DAY).toISOString().slice(0, 10); // YYYY-MM-DD, two days ago
    const at = (hms) => Date.parse(`${day}T${hms}Z`);
    const beforeWrite = Date.now();
    await writeDurable(url, OWNER, id, [
      { value: 1, ts: `${day}T10:00:00.123Z` },
      { value: 2, ts: `${day}T12:00:01.500+02:00` },
      { value: 3, ts: `${day}T10:00:02.123999Z` },
      { value: 4, ts: `${day}T10:00:03Z` },
      { value: 5, ts: `${day}T06:30:04.25-03:30` },
      { value: 6, ts: at('10:00:05.007') },
      { value: 7 },
    ]);
    const afterWrite = Date.now();
    const { items } = await everything(id);
    for (const it of items) assertReadingShape(it, id);
    assert.deepEqual(items.slice(0, 6).map((x) => [x.ts, x.value]), [
      [`${day}T10:00:00.123Z`, 1],
      [`${day}T10:00:01.500Z`, 2],
      [`${day}T10:00:02.123Z`, 3],
      [`${day}T10:00:03.000Z`, 4],
      [`${day}T10:00:04.250Z`, 5],
      [`${day}T10:00:05.007Z`, 6],
    ]);
    assert.equal(items.length, 7);
    const now = Date.parse(items[6].ts);
    assert.equal(items[6].value, 7);
    assert.ok(now >= beforeWrite - 5 && now <= afterWrite + 5, `server ts ${items[6].ts}`);
  });

  it('ts up to 5 minutes ahead is accepted; more → 400; before 1970 → 400; 1970 itself is fine', async () => {
    const id = await fresh();
    const ok = await postReadings(url, OWNER, id, [{ value: 1, ts: Date.now() + 4 * MIN }]);
    assert.equal(ok.status, 202, ok.text);
    assertHttpError(assert, await postReadings(url, OWNER, id, [{ value: 1, ts: Date.now() + 6 * MIN }]), 400, 'bad_request');
    assertHttpError(assert, await postReadings(url, OWNER, id, [{ value: 1, ts: iso(Date.now() + 6 * MIN) }]), 400, 'bad_request');
    assertHttpError(assert, await postReadings(url, OWNER, id, [{ value: 1, ts: -1 }]), 400, 'bad_request');
    assertHttpError(assert, await postReadings(url, OWNER, id, [{ value: 1, ts: '1969-12-31T23:59:59.999Z' }]), 400, 'bad_request');
    const epoch = await postReadings(url, OWNER, await fresh(), [{ value: 1, ts: 0 }], '?durable=true');
    assert.equal(epoch.status, 201, epoch.text);
  });

  it('value must be a finite JSON number; ts RFC 3339 or a JSON integer → else 400', async () => {
    const id = await fresh();
    const ts = Date.now() - HOUR;
    for (const bad of [{ value: '1.5' }, {}, { value: true }, { value: null }, { value: [1] }, { value: { v: 1 } },
      { value: 1, ts: 1.5e12 + 0.5 }, { value: 1, ts: 'yesterday' }, { value: 1, ts: '' }, { value: 1, ts: true },
      { value: 1, ts: [ts] }, { value: 1, ts: '2026-13-01T00:00:00Z' }]) {
      assertHttpError(assert, await postReadings(url, OWNER, id, [bad]), 400, 'bad_request');
    }
    for (const raw of ['{"readings":[{"value":NaN}]}', '{"readings":[{"value":Infinity}]}', '{"readings":[{"value":1e999}]}',
      `{"readings":[{"value":1,"ts":${ts}.5}]}`]) {
      assertHttpError(assert, await h.http(url, 'POST', `/api/v1/sensors/${enc(id)}/readings`, OWNER, raw), 400, 'bad_request');
    }
    // integers, negatives, tiny and huge finite numbers are values
    const good = [{ value: 0, ts }, { value: -17, ts: ts + 1 }, { value: 1e-300, ts: ts + 2 }, { value: 1.7976931348623157e308, ts: ts + 3 }];
    await writeDurable(url, OWNER, id, good);
    const { items } = await everything(id);
    assert.deepEqual(items, good.map((x) => expected(id, x)));
  });

  it('tags: an object of at most 16 string pairs and 1024 bytes of JSON, else 400; {} when none', async () => {
    const id = await fresh();
    const ts = Date.now() - HOUR;
    const sixteen = Object.fromEntries(Array.from({ length: 16 }, (_, i) => [`k${i}`, `v${i}`]));
    const seventeen = { ...sixteen, k16: 'v16' };
    const bytes = (n) => ({ k: 'x'.repeat(n - 8) }); // {"k":"…"} is n bytes of JSON
    assert.equal(JSON.stringify(bytes(1024)).length, 1024);
    for (const tags of [[], 'a=b', 5, true, { a: 1 }, { a: null }, { a: ['b'] }, { a: { b: 'c' } }, seventeen, bytes(1025)]) {
      assertHttpError(assert, await postReadings(url, OWNER, id, [{ value: 1, ts, tags }]), 400, 'bad_request');
    }
    const good = [
      { value: 1, ts, tags: sixteen },
      { value: 2, ts: ts + 1, tags: bytes(1024) },
      { value: 3, ts: ts + 2, tags: {} },
      { value: 4, ts: ts + 3 },
      { value: 5, ts: ts + 4, tags: null },
      { value: 6, ts: ts + 5, tags: { 'ключ': 'значение', e: '😀' } },
    ];
    await writeDurable(url, OWNER, id, good);
    const { items } = await everything(id);
    assert.deepEqual(items, good.map((x) => expected(id, { ...x, tags: x.tags || {} })));
  });

  it('1 to 1000 readings per request: 0 or 1001 → 400; readings missing, not an array, not objects → 400', async () => {
    const id = await fresh();
    const ts = Date.now() - 2 * HOUR;
    const many = (n) => Array.from({ length: n }, (_, i) => ({ value: i, ts: ts + i }));
    assertHttpError(assert, await postReadings(url, OWNER, id, []), 400, 'bad_request');
    assertHttpError(assert, await postReadings(url, OWNER, id, many(1001)), 400, 'bad_request');
    assertHttpError(assert, await postReadings(url, OWNER, id, many(1001), '?durable=true'), 400, 'bad_request');
    for (const body of [{}, { readings: null }, { readings: { value: 1 } }, { readings: 'x' }, { readings: [5] },
      { readings: [null] }, { readings: [[1]] }, [], 'nope', '{"readings":[']) {
      const r = await h.http(url, 'POST', `/api/v1/sensors/${enc(id)}/readings`, OWNER, body);
      assertHttpError(assert, r, 400, 'bad_request');
    }
    assert.deepEqual(await lastAccepted(id), []);
    const r = await postReadings(url, OWNER, id, many(1000), '?durable=true');
    assert.equal(r.status, 201, r.text);
    assert.deepEqual(r.body, { accepted: 1000, durable: true });
    assert.equal((await everything(id)).items.length, 1000);
  });

  it('one bad reading fails the whole request: 400 and nothing accepted', async () => {
    const id = await fresh();
    const ts = Date.now() - HOUR;
    const good = Array.from({ length: 50 }, (_, i) => ({ value: i, ts: ts + i }));
    for (const bad of [{ value: 'x', ts: ts + 100 }, { value: 1, ts: Date.now() + HOUR }, { value: 1, ts: ts + 101, tags: { a: 1 } }]) {
      assertHttpError(assert, await postReadings(url, OWNER, id, [...good, bad]), 400, 'bad_request');
      assertHttpError(assert, await postReadings(url, OWNER, id, [bad, ...good], '?durable=true'), 400, 'bad_request');
    }
    // nothing waits in the buffer …
    assert.deepEqual(await lastAccepted(id), []);
    // … and after a durable write only that write is stored
    const marker = { value: 99, ts: ts + 5000 };
    await writeDurable(url, OWNER, id, [marker]);
    assert.deepEqual((await everything(id)).items, [expected(id, marker)]);
  });

  it('only the owner and admins write: others → 403; missing sensor → 404; no token → 401', async () => {
    const id = await fresh();
    const ts = Date.now() - HOUR;
    assertHttpError(assert, await postReadings(url, h.userToken('wr-other'), id, [{ value: 1, ts }]), 403, 'forbidden');
    assertHttpError(assert, await postReadings(url, h.userToken('wr-other'), id, [{ value: 1, ts }], '?durable=true'), 403, 'forbidden');
    const adm = await postReadings(url, h.adminToken('wr-admin'), id, [{ value: 2, ts: ts + 1 }], '?durable=true');
    assert.equal(adm.status, 201, adm.text);
    assert.deepEqual((await everything(id)).items, [expected(id, { value: 2, ts: ts + 1 })]);
    const priv = await fresh({ private: true });
    assertHttpError(assert, await postReadings(url, h.userToken('wr-other'), priv, [{ value: 1, ts }]), 403, 'forbidden');
    assert.equal((await postReadings(url, h.adminToken('wr-admin'), priv, [{ value: 1, ts }])).status, 202);
    const missing = `missing-${process.pid}`;
    assertHttpError(assert, await postReadings(url, OWNER, missing, [{ value: 1, ts }]), 404, 'not_found');
    // bad_request comes before not_found
    assertHttpError(assert, await postReadings(url, OWNER, missing, []), 400, 'bad_request');
    assertHttpError(assert, await postReadings(url, OWNER, missing, [{ value: 'x' }]), 400, 'bad_request');
    assertHttpError(assert, await postReadings(url, null, id, [{ value: 1, ts }]), 401, 'auth_required');
  });

  it('idempotent: the same (sensor, ts) twice → one reading, the later value (both committed)', async () => {
    const id = await fresh();
    const ts = Date.now() - HOUR;
    await writeDurable(url, OWNER, id, [{ value: 1, ts }, { value: 10, ts: ts + 1 }]);
    await writeDurable(url, OWNER, id, [{ value: 2, ts, tags: { v: '2' } }, { value: 10, ts: ts + 1 }]);
    assert.deepEqual((await everything(id)).items, [
      expected(id, { value: 2, ts, tags: { v: '2' } }),
      expected(id, { value: 10, ts: ts + 1 }),
    ]);
    // an exact retry of a request stores nothing twice
    const batch = Array.from({ length: 20 }, (_, i) => ({ value: i, ts: ts + 100 + i }));
    await writeDurable(url, OWNER, id, batch);
    await writeDurable(url, OWNER, id, batch);
    assert.equal((await everything(id)).items.length, 22);
  });

  it('idempotent within one request: the later of two readings with one ts wins', async () => {
    const id = await fresh();
    const ts = Date.now() - HOUR;
    const r = await postReadings(url, OWNER, id, [{ value: 1, ts }, { value: 5, ts: ts + 1 }, { value: 2, ts }], '?durable=true');
    assert.equal(r.status, 201, r.text);
    assert.equal(r.body.durable, true);
    assert.deepEqual((await everything(id)).items, [expected(id, { value: 2, ts }), expected(id, { value: 5, ts: ts + 1 })]);
  });

  it('idempotent while buffered: two non-durable writes of one ts, then a durable write → the later value, once', async () => {
    const id = await fresh();
    const ts = Date.now() - HOUR;
    assert.equal((await postReadings(url, OWNER, id, [{ value: 1, ts }])).status, 202);
    assert.equal((await postReadings(url, OWNER, id, [{ value: 2, ts, tags: { second: 'yes' } }])).status, 202);
    // subscribe sees the accepted readings, buffered or not: one, the later
    assert.deepEqual(await lastAccepted(id), [expected(id, { value: 2, ts, tags: { second: 'yes' } })]);
    await writeDurable(url, OWNER, id, [{ value: 3, ts: ts + 1000 }]);
    let items = [];
    await h.until(async () => {
      items = (await everything(id)).items;
      return items.some((x) => x.ts === iso(ts));
    }, 5000, 'the buffered reading to be written');
    assert.deepEqual(items, [expected(id, { value: 2, ts, tags: { second: 'yes' } }), expected(id, { value: 3, ts: ts + 1000 })]);
  });

  it('idempotent across paths: a buffered reading replaced by a durable one never comes back', async () => {
    const id = await fresh();
    const ts = Date.now() - HOUR;
    assert.equal((await postReadings(url, OWNER, id, [{ value: 1, ts }])).status, 202);
    await writeDurable(url, OWNER, id, [{ value: 2, ts }]);
    // a later non-durable marker: once it is written, the earlier buffered reading was handled too
    assert.equal((await postReadings(url, OWNER, id, [{ value: 9, ts: ts + 1 }])).status, 202);
    let items = [];
    await h.until(async () => {
      items = (await everything(id)).items;
      return items.some((x) => x.ts === iso(ts + 1));
    }, 5000, 'the marker to be written');
    assert.deepEqual(items, [expected(id, { value: 2, ts }), expected(id, { value: 9, ts: ts + 1 })]);
    // and a durable reading replaced by a later non-durable one ends as the later one
    assert.equal((await postReadings(url, OWNER, id, [{ value: 3, ts }])).status, 202);
    await h.until(async () => {
      items = (await everything(id)).items;
      return items.some((x) => x.ts === iso(ts) && x.value === 3);
    }, 5000, 'the later value to be written');
    assert.equal(items.length, 2);
  });
});

// ------------------------------------------------------------------ reading back

describe('GET …/readings and …/series', () => {
  let srv;
  let url;
  const OWNER = h.userToken('rq-owner');
  // the readings sensor: 1200 readings a minute apart (plus a little), some with tags
  let rid;
  let written; // sorted by ts
  // the series sensor: dense and sparse readings over a few days (unique ts)
  let sid;
  let data;
  let day0; // midnight UTC four days ago

  before(async () => {
    srv = await h.startServer({ env: BASE_ENV });
    url = srv.url;
    rid = sensorId('rq');
    await createSensor(url, OWNER, rid);
    const base = Date.now() - 2 * DAY;
    written = Array.from({ length: 1200 }, (_, i) => ({
      ts: base + i * MIN + (i % 7),
      value: i / 2,
      ...(i % 3 === 0 ? { tags: { i: String(i) } } : {}),
    }));
    // written out of order: the order of ts is the server's to keep
    const shuffled = [...written];
    const rnd = prng(7);
    for (let i = shuffled.length - 1; i > 0; i--) {
      const j = Math.floor(rnd() * (i + 1));
      [shuffled[i], shuffled[j]] = [shuffled[j], shuffled[i]];
    }
    await writeDurable(url, OWNER, rid, shuffled);

    sid = sensorId('ser');
    await createSensor(url, OWNER, sid);
    day0 = Math.floor(Date.now() / DAY) * DAY - 4 * DAY;
    const rnd2 = prng(42);
    const seen = new Map();
    const add = (ts, value) => { if (!seen.has(ts)) seen.set(ts, { ts, value }); };
    const val = () => Math.round(rnd2() * 200000 - 100000) / 1000;
    const within = (start, len) => start + Math.floor(rnd2() * len);
    // exact bucket boundaries and their neighbours
    for (const b of [10 * HOUR, 12 * HOUR, DAY, 2 * DAY, 3 * DAY, 5 * HOUR]) {
      add(day0 + b, val()); add(day0 + b - 1, val()); add(day0 + b + 1, val());
    }
    for (let i = 0; i < 150; i++) add(within(day0 + 10 * HOUR, 30 * SEC), val()); // several per second
    for (let i = 0; i < 300; i++) add(within(day0 + 10 * HOUR, HOUR), val()); // several per 10 s / minute
    for (let i = 0; i < 700; i++) add(within(day0, 3.5 * DAY), val()); // spread over days
    for (let i = 0; i < 20; i++) add(within(day0 + 20 * HOUR, 2 * SEC), Math.round(rnd2() * 10)); // integer values
    data = [...seen.values()];
    await writeDurable(url, OWNER, sid, data);
  });
  after(async () => { h.closeAll(); if (srv) await srv.destroy(); });

  const exp = (i) => expected(rid, written[i]);
  const span = () => ({ from: written[0].ts, to: written[written.length - 1].ts + 1 });

  // ------------------------------------------------------------ readings

  it('READING = { sensor, ts, value, tags }, ascending ts, tags {} when none; limit up to 5000', async () => {
    const r = await getReadings(url, OWNER, rid, { ...span(), limit: 5000 });
    assert.equal(r.status, 200, r.text);
    assert.deepEqual(Object.keys(r.body).sort(), ['items', 'next_cursor']);
    for (const x of r.body.items) assertReadingShape(x, rid);
    assert.equal(r.body.items.length, 1200);
    assert.deepEqual(r.body.items, written.map((_, i) => exp(i)));
    assert.equal(r.body.next_cursor, null);
    // a reader who is not the owner reads a public sensor
    const other = await getReadings(url, h.userToken('rq-other'), rid, { ...span(), limit: 3 });
    assert.equal(other.status, 200, other.text);
    assert.deepEqual(other.body.items, [exp(0), exp(1), exp(2)]);
  });

  it('limit defaults to 500, with a next_cursor', async () => {
    const r = await getReadings(url, OWNER, rid, span());
    assert.equal(r.status, 200, r.text);
    assert.equal(r.body.items.length, 500);
    assert.deepEqual(r.body.items, written.slice(0, 500).map((_, i) => exp(i)));
    assert.equal(typeof r.body.next_cursor, 'string');
  });

  it('paging with next_cursor returns every reading once, in order', async () => {
    for (const limit of [500, 333, 1]) {
      const { from, to } = limit === 1 ? { from: written[40].ts, to: written[60].ts } : span();
      const { items, pages } = await allReadings(url, OWNER, rid, from, to, limit);
      const want = limit === 1 ? written.slice(40, 60) : written;
      assert.deepEqual(items.map((x) => x.ts), want.map((x) => iso(x.ts)), `limit ${limit}`);
      assert.deepEqual(items, want.map((x) => expected(rid, x)), `limit ${limit}`);
      assert.ok(pages <= Math.ceil(want.length / limit) + 1, `limit ${limit}: ${pages} pages`);
    }
    // a cursor walk inside a range stops at `to`
    const { items } = await allReadings(url, OWNER, rid, written[100].ts, written[150].ts, 7);
    assert.deepEqual(items, written.slice(100, 150).map((x) => expected(rid, x)));
  });

  it('from ≤ ts < to, in RFC 3339 (any offset) or integer ms', async () => {
    const want = written.slice(10, 20).map((x) => expected(rid, x));
    const from = written[10].ts;
    const to = written[20].ts;
    const shifted = (ms) => {
      // the same instant at +05:30
      const d = new Date(ms + 5.5 * HOUR).toISOString();
      return `${d.slice(0, 23)}+05:30`;
    };
    for (const [f, t] of [[from, to], [iso(from), iso(to)], [shifted(from), shifted(to)], [iso(from), to]]) {
      const r = await getReadings(url, OWNER, rid, { from: f, to: t });
      assert.equal(r.status, 200, `${f} ${t}: ${r.text}`);
      assert.deepEqual(r.body.items, want, `${f} … ${t}`);
    }
    // one ms either side
    const r2 = await getReadings(url, OWNER, rid, { from: from + 1, to: to + 1 });
    assert.deepEqual(r2.body.items, written.slice(11, 21).map((x) => expected(rid, x)));
    // an empty range
    const r3 = await getReadings(url, OWNER, rid, { from, to: from });
    assert.equal(r3.status, 200, r3.text);
    assert.deepEqual(r3.body, { items: [], next_cursor: null });
  });

  it('to defaults to now and from to one hour before it', async () => {
    const id = sensorId('rd');
    await createSensor(url, OWNER, id);
    const now = Date.now();
    const rs = [{ value: 1, ts: now - 2 * HOUR }, { value: 2, ts: now - 50 * MIN }, { value: 3, ts: now - 5 * MIN }, { value: 4, ts: now + 3 * MIN }];
    await writeDurable(url, OWNER, id, rs);
    const r = await getReadings(url, OWNER, id);
    assert.equal(r.status, 200, r.text);
    assert.deepEqual(r.body.items, [expected(id, rs[1]), expected(id, rs[2])]);
    const f = await getReadings(url, OWNER, id, { from: now - 3 * HOUR });
    assert.deepEqual(f.body.items, [expected(id, rs[0]), expected(id, rs[1]), expected(id, rs[2])]);
    const s = await getSeries(url, OWNER, id, { bucket: '1m', agg: 'count' });
    assert.equal(s.status, 200, s.text);
    assert.deepEqual(s.body.items.map((x) => x.count), [1, 1]);
  });

  it('readings: limit 1 to 5000 else 400; a bad from / to / cursor → 400; from > to → 400', async () => {
    for (const limit of ['0', '5001', '-1', 'abc', '1.5']) {
      assertHttpError(assert, await getReadings(url, OWNER, rid, { ...span(), limit }), 400, 'bad_request');
    }
    for (const bad of ['abc', 'yesterday', '-1', '1.5', '2026-13-01T00:00:00Z']) {
      assertHttpError(assert, await getReadings(url, OWNER, rid, { from: bad }), 400, 'bad_request');
      assertHttpError(assert, await getReadings(url, OWNER, rid, { from: 0, to: bad }), 400, 'bad_request');
    }
    assertHttpError(assert, await getReadings(url, OWNER, rid, { from: written[5].ts, to: written[4].ts }), 400, 'bad_request');
    assertHttpError(assert, await getReadings(url, OWNER, rid, { ...span(), cursor: '!!not-a-cursor!!' }), 400, 'bad_request');
    const ok = await getReadings(url, OWNER, rid, { ...span(), limit: 1 });
    assert.equal(ok.status, 200);
    assert.equal(ok.body.items.length, 1);
  });

  it('readings and series: 404 for a missing sensor, 401 without a token', async () => {
    const missing = `missing-${process.pid}`;
    assertHttpError(assert, await getReadings(url, OWNER, missing), 404, 'not_found');
    assertHttpError(assert, await getSeries(url, OWNER, missing, { bucket: '1m' }), 404, 'not_found');
    assertHttpError(assert, await getSeries(url, OWNER, missing, { bucket: '2m' }), 400, 'bad_request');
    assertHttpError(assert, await getReadings(url, null, rid), 401, 'auth_required');
    assertHttpError(assert, await getSeries(url, null, rid, { bucket: '1m' }), 401, 'auth_required');
  });

  it('a private sensor: 403 on info, readings and series for others; its owner and admins read it', async () => {
    const id = sensorId('rp');
    const owner = h.userToken('rq-powner');
    await createSensor(url, owner, id, { private: true });
    const ts = Date.now() - HOUR;
    await writeDurable(url, owner, id, [{ value: 1, ts }]);
    const other = h.userToken('rq-stranger');
    assertHttpError(assert, await h.http(url, 'GET', `/api/v1/sensors/${enc(id)}`, other), 403, 'forbidden');
    assertHttpError(assert, await getReadings(url, other, id, { from: ts }), 403, 'forbidden');
    assertHttpError(assert, await getSeries(url, other, id, { from: ts, bucket: '1m' }), 403, 'forbidden');
    for (const t of [owner, h.adminToken('rq-admin')]) {
      const r = await getReadings(url, t, id, { from: ts });
      assert.equal(r.status, 200, r.text);
      assert.deepEqual(r.body.items, [expected(id, { value: 1, ts })]);
      const s = await getSeries(url, t, id, { from: ts, bucket: '1m' });
      assert.equal(s.status, 200, s.text);
      assert.equal(s.body.items.length, 1);
    }
  });

  // ------------------------------------------------------------ series

  /** The [from, to) asked of each bucket: within 10000 buckets, mostly not aligned to the bucket. */
  const ranges = () => ({
    '1s': [day0 + 10 * HOUR - 1234, day0 + 12 * HOUR - 1234],
    '10s': [day0 + 6 * HOUR + 777, day0 + 30 * HOUR + 777],
    '1m': [day0 - HOUR, day0 + 3.5 * DAY + HOUR],
    '5m': [day0 + 5 * HOUR, day0 + 3 * DAY],
    '15m': [day0 + 5 * HOUR + 3, day0 + 3 * DAY],
    '1h': [day0 + 5 * HOUR + 3, day0 + 3 * DAY + 1],
    '6h': [day0 - 7 * DAY, day0 + 4 * DAY],
    '1d': [day0 + 5 * HOUR, day0 + 3 * DAY],
  });

  it('series answers { sensor, bucket, items } with the default aggregates avg,min,max,count', async () => {
    const [from, to] = ranges()['1h'];
    const r = await getSeries(url, OWNER, sid, { from, to, bucket: '1h' });
    assert.equal(r.status, 200, r.text);
    assert.deepEqual(Object.keys(r.body).sort(), ['bucket', 'items', 'sensor']);
    assert.equal(r.body.sensor, sid);
    assert.equal(r.body.bucket, '1h');
    assert.ok(r.body.items.length > 20);
    for (const it of r.body.items) {
      assert.deepEqual(Object.keys(it).sort(), ['avg', 'count', 'max', 'min', 't']);
      assert.match(it.t, RFC3339_MS);
    }
    assertSeriesEqual(r.body.items, referenceSeries(data, from, to, HOUR, DEFAULT_AGGS), '1h default');
  });

  for (const bucket of Object.keys(BUCKETS)) {
    it(`series bucket=${bucket}: every aggregate matches a reference computed from the readings`, async () => {
      const [from, to] = ranges()[bucket];
      const want = (aggs) => referenceSeries(data, from, to, BUCKETS[bucket], aggs);
      assert.ok(want(['count']).length >= 3, 'the data set exercises this bucket');
      // the reference sees several readings in some bucket (so min/max/last/avg differ)
      assert.ok(want(['count']).some((x) => x.count >= 2), 'some bucket holds several readings');
      const asks = [
        [undefined, DEFAULT_AGGS],
        ...AGGS.map((a) => [a, [a]]),
        ['sum,last', ['sum', 'last']],
        ['last,count', ['last', 'count']],
        [AGGS.join(','), AGGS],
      ];
      for (const [agg, aggs] of asks) {
        // from/to given as ms for some, as RFC 3339 for others
        const q = agg && agg.includes('last') ? { from: iso(from), to: iso(to) } : { from, to };
        const r = await getSeries(url, OWNER, sid, { ...q, bucket, agg });
        assert.equal(r.status, 200, `${bucket} ${agg}: ${r.text}`);
        assert.equal(r.body.sensor, sid);
        assert.equal(r.body.bucket, bucket);
        assertSeriesEqual(r.body.items, want(aggs), `${bucket} agg=${agg ?? '(default)'}`);
      }
    });
  }

  it('series: a bucket is listed from its aligned start even when from falls inside it', async () => {
    // from = day0 + 5h exactly on a reading; the 1d bucket still starts at day0, the 6h at day0
    const from = day0 + 5 * HOUR;
    const r = await getSeries(url, OWNER, sid, { from, to: day0 + DAY, bucket: '1d', agg: 'count,min' });
    assert.equal(r.status, 200, r.text);
    assert.equal(r.body.items.length, 1);
    assert.equal(r.body.items[0].t, iso(day0));
    assert.equal(r.body.items[0].count, data.filter((x) => x.ts >= from && x.ts < day0 + DAY).length);
  });

  it('series: bucket missing or not one of the eight → 400; unknown agg → 400', async () => {
    const [from, to] = ranges()['1h'];
    assertHttpError(assert, await getSeries(url, OWNER, sid, { from, to }), 400, 'bad_request');
    for (const bucket of ['2m', '1w', '', '1S', '60s', '1M', '1 h', '30m', 'hour']) {
      assertHttpError(assert, await getSeries(url, OWNER, sid, { from, to, bucket }), 400, 'bad_request');
    }
    for (const agg of ['median', 'avg,median', 'AVG', 'avg;min', 'p99']) {
      assertHttpError(assert, await getSeries(url, OWNER, sid, { from, to, bucket: '1h', agg }), 400, 'bad_request');
    }
  });

  it('series: more than 10000 buckets in from–to → 400; exactly 10000 is fine; from > to → 400', async () => {
    const aligned = day0 + 10 * HOUR;
    assertHttpError(assert, await getSeries(url, OWNER, sid, { from: day0, to: day0 + DAY, bucket: '1s' }), 400, 'bad_request');
    assertHttpError(assert, await getSeries(url, OWNER, sid, { from: day0, to: day0 + 2 * DAY, bucket: '10s' }), 400, 'bad_request');
    assertHttpError(assert, await getSeries(url, OWNER, sid, { from: aligned, to: aligned + 10001 * SEC, bucket: '1s' }), 400, 'bad_request');
    const ok = await getSeries(url, OWNER, sid, { from: aligned, to: aligned + 10000 * SEC, bucket: '1s', agg: 'count' });
    assert.equal(ok.status, 200, ok.text);
    assertSeriesEqual(ok.body.items, referenceSeries(data, aligned, aligned + 10000 * SEC, SEC, ['count']), '1s × 10000');
    // since 1970 in days is more than 10000 buckets too
    assertHttpError(assert, await getSeries(url, OWNER, sid, { from: 0, to: day0, bucket: '1d' }), 400, 'bad_request');
    const okDays = await getSeries(url, OWNER, sid, { from: day0 - 9000 * DAY, to: day0 + 4 * DAY, bucket: '1d', agg: 'count' });
    assert.equal(okDays.status, 200, okDays.text);
    assertSeriesEqual(okDays.body.items, referenceSeries(data, day0 - 9000 * DAY, day0 + 4 * DAY, DAY, ['count']), '1d × 9004');
    assertHttpError(assert, await getSeries(url, OWNER, sid, { from: day0 + HOUR, to: day0, bucket: '1h' }), 400, 'bad_request');
    for (const bad of ['abc', '-1', '1.5']) {
      assertHttpError(assert, await getSeries(url, OWNER, sid, { from: bad, to: day0, bucket: '1d' }), 400, 'bad_request');
    }
  });
});

// ------------------------------------------------------------------ Socket.IO

describe('sensors over Socket.IO', () => {
  let srv;
  let url;
  const OWNER_SUB = 'so-owner';
  const OWNER = h.userToken(OWNER_SUB);
  before(async () => { srv = await h.startServer({ env: BASE_ENV }); url = srv.url; });
  after(async () => { h.closeAll(); if (srv) await srv.destroy(); });

  async function fresh(extra = {}) {
    const id = sensorId('so');
    await createSensor(url, OWNER, id, extra);
    return id;
  }
  const sock = (sub) => h.connect(url, h.userToken(sub));

  it('reading → { ok: true, durable: false }; with durable: true → { ok: true, durable: true }, readable at once', async () => {
    const id = await fresh();
    const s = await h.connect(url, OWNER);
    const ts = Date.now() - HOUR;
    assert.deepEqual(await ack(s, 'reading', { sensor: id, value: 1.5, ts }), { ok: true, durable: false });
    assert.deepEqual(await ack(s, 'reading', { sensor: id, value: 2, ts: ts + 1, durable: false }), { ok: true, durable: false });
    assert.deepEqual(await ack(s, 'reading', { sensor: id, value: 3, ts: iso(ts + 2), tags: { a: 'b' }, durable: true }), { ok: true, durable: true });
    const r = await getReadings(url, OWNER, id, { from: ts + 2, to: ts + 3 });
    assert.deepEqual(r.body.items, [expected(id, { value: 3, ts: ts + 2, tags: { a: 'b' } })]);
    // ts absent → the time of acceptance
    const before = Date.now();
    assert.deepEqual(await ack(s, 'reading', { sensor: id, value: 4, durable: true, tags: null, ts: null }), { ok: true, durable: true });
    const after = Date.now();
    const r2 = await getReadings(url, OWNER, id, { from: before - 5, to: after + 5 });
    assert.equal(r2.body.items.length, 1, r2.text);
    assert.equal(r2.body.items[0].value, 4);
    assert.deepEqual(r2.body.items[0].tags, {});
  });

  it('reading with a bad payload → bad_request, and nothing is accepted', async () => {
    const id = await fresh();
    const s = await h.connect(url, OWNER);
    const ts = Date.now() - HOUR;
    assertAckError(assert, await ack(s, 'reading'), 'bad_request');
    for (const bad of ['x', 5, [], null, [{ sensor: id, value: 1 }], {}, { value: 1 }, { sensor: 5, value: 1 },
      { sensor: 'a b', value: 1 }, { sensor: 'x'.repeat(129), value: 1 }, { sensor: '', value: 1 },
      { sensor: id }, { sensor: id, value: '1' }, { sensor: id, value: true }, { sensor: id, value: null }, { sensor: id, value: [1] },
      { sensor: id, value: 1, ts: Date.now() + 10 * MIN }, { sensor: id, value: 1, ts: -1 }, { sensor: id, value: 1, ts: ts + 0.5 },
      { sensor: id, value: 1, ts: 'now' }, { sensor: id, value: 1, ts: '1969-12-31T23:59:59Z' },
      { sensor: id, value: 1, tags: [] }, { sensor: id, value: 1, tags: { a: 1 } }, { sensor: id, value: 1, tags: 'a' },
      { sensor: id, value: 1, tags: Object.fromEntries(Array.from({ length: 17 }, (_, i) => [`k${i}`, 'v'])) },
      { sensor: id, value: 1, tags: { k: 'x'.repeat(1100) } },
      { sensor: id, value: 1, durable: 'yes' }, { sensor: id, value: 1, durable: 1 }]) {
      assertAckError(assert, await ack(s, 'reading', bad), 'bad_request');
    }
    // bad_request comes before not_found and forbidden
    assertAckError(assert, await ack(s, 'reading', { sensor: `missing-${process.pid}`, value: 'x' }), 'bad_request');
    const st = await sock('so-stranger');
    assertAckError(assert, await ack(st, 'reading', { sensor: id, value: 'x' }), 'bad_request');
    const sub = await ack(s, 'subscribe', { sensor: id });
    assert.deepEqual(sub, { ok: true, last: [] });
  });

  it('reading: missing sensor → not_found; not the owner → forbidden; an admin may write', async () => {
    const id = await fresh();
    const ts = Date.now() - HOUR;
    const s = await h.connect(url, OWNER);
    assertAckError(assert, await ack(s, 'reading', { sensor: `missing-${process.pid}`, value: 1 }), 'not_found');
    const other = await sock('so-other');
    assertAckError(assert, await ack(other, 'reading', { sensor: id, value: 1, ts }), 'forbidden');
    assertAckError(assert, await ack(other, 'reading', { sensor: id, value: 1, ts, durable: true }), 'forbidden');
    const adm = await h.connect(url, h.adminToken('so-admin'));
    assert.deepEqual(await ack(adm, 'reading', { sensor: id, value: 8, ts: ts + 1, durable: true }), { ok: true, durable: true });
    const r = await getReadings(url, OWNER, id, { from: ts });
    assert.deepEqual(r.body.items, [expected(id, { value: 8, ts: ts + 1 })]);
  });

  it('subscribe → { ok, last }: the 10 newest by ts, oldest first', async () => {
    const id = await fresh();
    const base = Date.now() - HOUR;
    // 15 readings, written in an order that is not their ts order
    const order = [7, 0, 14, 3, 11, 1, 9, 13, 2, 5, 12, 4, 8, 10, 6];
    const rs = order.map((k) => ({ value: k * 1.5, ts: base + k * SEC, ...(k % 2 ? { tags: { k: String(k) } } : {}) }));
    await writeDurable(url, OWNER, id, rs);
    const s = await sock('so-reader');
    const a = await ack(s, 'subscribe', { sensor: id });
    assert.deepEqual(Object.keys(a).sort(), ['last', 'ok']);
    assert.equal(a.ok, true);
    for (const x of a.last) assertReadingShape(x, id);
    const want = Array.from({ length: 10 }, (_, i) => i + 5)
      .map((k) => expected(id, { value: k * 1.5, ts: base + k * SEC, ...(k % 2 ? { tags: { k: String(k) } } : {}) }));
    assert.deepEqual(a.last, want);
  });

  it('subscribe: last holds accepted readings that are still buffered; fewer than 10 → all of them', async () => {
    const id = await fresh();
    const base = Date.now() - HOUR;
    await writeDurable(url, OWNER, id, [{ value: 1, ts: base }]);
    assert.equal((await postReadings(url, OWNER, id, [{ value: 2, ts: base + 1 }, { value: 3, ts: base + 2 }])).status, 202);
    const s = await sock('so-reader2');
    const a = await ack(s, 'subscribe', { sensor: id });
    assert.deepEqual(a, { ok: true, last: [1, 2, 3].map((v, i) => expected(id, { value: v, ts: base + i })) });
  });

  it('after subscribe, readings written by another client arrive as `reading` events', async () => {
    const id = await fresh();
    const s = await sock('so-live');
    assert.equal((await ack(s, 'subscribe', { sensor: id })).ok, true);
    const got = h.collect(s, 'reading');
    const ts = Date.now() - 5 * MIN;
    // over HTTP, non-durable (live before durable), then durable
    assert.equal((await postReadings(url, OWNER, id, [{ value: 1, ts, tags: { via: 'http' } }])).status, 202);
    await h.until(() => got.length >= 1, 5000, 'the first live reading');
    assertReadingShape(got[0], id);
    assert.deepEqual(got[0], expected(id, { value: 1, ts, tags: { via: 'http' } }));
    // over Socket.IO
    const w = await h.connect(url, OWNER);
    assert.equal((await ack(w, 'reading', { sensor: id, value: 2, ts: ts + 1000, durable: true })).ok, true);
    await h.until(() => got.length >= 2, 5000, 'the second live reading');
    assert.deepEqual(got[1], expected(id, { value: 2, ts: ts + 1000 }));
    got.stop();
  });

  it('unsubscribe → { ok: true } and the events stop; other subscriptions go on', async () => {
    const a = await fresh();
    const b = await fresh();
    const s = await sock('so-unsub');
    assert.equal((await ack(s, 'subscribe', { sensor: a })).ok, true);
    assert.equal((await ack(s, 'subscribe', { sensor: b })).ok, true);
    const gotA = h.collect(s, 'reading', (x) => x.sensor === a);
    const ts = Date.now() - 5 * MIN;
    const markerA = h.waitFor(s, 'reading', (x) => x.sensor === a && x.value === 1);
    assert.equal((await postReadings(url, OWNER, a, [{ value: 1, ts }])).status, 202);
    await markerA;
    assert.deepEqual(await ack(s, 'unsubscribe', { sensor: a }), { ok: true });
    assert.equal((await postReadings(url, OWNER, a, [{ value: 2, ts: ts + 1 }])).status, 202);
    const markerB = h.waitFor(s, 'reading', (x) => x.sensor === b);
    assert.equal((await postReadings(url, OWNER, b, [{ value: 3, ts: ts + 2 }])).status, 202);
    await markerB;
    await h.sleep(QUIET_MS);
    assert.deepEqual(gotA.map((x) => x.value), [1]);
    gotA.stop();
  });

  it('subscribe twice is ok and still one event per reading; unsubscribe of a sensor not subscribed → ok', async () => {
    const id = await fresh();
    const other = await fresh();
    const s = await sock('so-twice');
    assert.equal((await ack(s, 'subscribe', { sensor: id })).ok, true);
    assert.equal((await ack(s, 'subscribe', { sensor: id })).ok, true);
    const got = h.collect(s, 'reading', (x) => x.sensor === id);
    const first = h.waitFor(s, 'reading', (x) => x.sensor === id);
    assert.equal((await postReadings(url, OWNER, id, [{ value: 1, ts: Date.now() - MIN }])).status, 202);
    await first;
    await h.sleep(QUIET_MS);
    assert.equal(got.length, 1, JSON.stringify(got));
    got.stop();
    assert.deepEqual(await ack(s, 'unsubscribe', { sensor: other }), { ok: true });
    // once unsubscribed, a second unsubscribe is fine too
    assert.deepEqual(await ack(s, 'unsubscribe', { sensor: id }), { ok: true });
    assert.deepEqual(await ack(s, 'unsubscribe', { sensor: id }), { ok: true });
  });

  it('subscribe / unsubscribe: bad payload → bad_request; unknown sensor → not_found', async () => {
    const s = await sock('so-bad');
    for (const ev of ['subscribe', 'unsubscribe']) {
      assertAckError(assert, await ack(s, ev), 'bad_request');
      for (const bad of ['x', 5, null, [], {}, { sensor: 5 }, { sensor: 'a b' }, { sensor: '' }, { sensor: 'x'.repeat(129) }]) {
        assertAckError(assert, await ack(s, ev, bad), 'bad_request');
      }
      assertAckError(assert, await ack(s, ev, { sensor: `missing-${process.pid}` }), 'not_found');
    }
  });

  it('a private sensor: subscribe → forbidden for others (no events), ok for its owner and admins', async () => {
    const id = await fresh({ private: true });
    const ts = Date.now() - HOUR;
    await writeDurable(url, OWNER, id, [{ value: 1, ts }]);
    const st = await sock('so-stranger2');
    assertAckError(assert, await ack(st, 'subscribe', { sensor: id }), 'forbidden');
    assertAckError(assert, await ack(st, 'reading', { sensor: id, value: 2 }), 'forbidden');
    const leaked = h.collect(st, 'reading');
    const own = await h.connect(url, OWNER);
    assert.deepEqual(await ack(own, 'subscribe', { sensor: id }), { ok: true, last: [expected(id, { value: 1, ts })] });
    const adm = await h.connect(url, h.adminToken('so-admin2'));
    assert.deepEqual(await ack(adm, 'subscribe', { sensor: id }), { ok: true, last: [expected(id, { value: 1, ts })] });
    const seen = h.waitFor(adm, 'reading', (x) => x.sensor === id && x.value === 3);
    assert.equal((await postReadings(url, OWNER, id, [{ value: 3, ts: ts + 1 }])).status, 202);
    await seen;
    await h.sleep(QUIET_MS);
    assert.deepEqual(leaked, []);
    leaked.stop();
  });
});

// ------------------------------------------------------------------ live throttle

describe('live throttle (TSUNAGI_SENSOR_LIVE_RATE=5)', () => {
  const RATE = 5;
  let srv;
  let url;
  const OWNER = h.userToken('lt-owner');
  before(async () => {
    srv = await h.startServer({ env: { ...BASE_ENV, TSUNAGI_SENSOR_LIVE_RATE: String(RATE) } });
    url = srv.url;
  });
  after(async () => { h.closeAll(); if (srv) await srv.destroy(); });

  /** A subscribed socket that records every `reading` of `id` with its arrival time. */
  async function subscriber(sub, id) {
    const s = await h.connect(url, h.userToken(sub));
    assert.equal((await ack(s, 'subscribe', { sensor: id })).ok, true);
    const got = [];
    s.on('reading', (r) => { if (r.sensor === id) got.push({ at: Date.now(), r }); });
    return got;
  }

  it('200 readings in one request: at most rate + 1 events, and the newest is delivered to every subscriber', async () => {
    const id = sensorId('lt');
    await createSensor(url, OWNER, id);
    const a = await subscriber('lt-a', id);
    const b = await subscriber('lt-b', id);
    const base = Date.now() - 10 * MIN;
    const rs = Array.from({ length: 200 }, (_, i) => ({ value: i, ts: base + i }));
    const r = await postReadings(url, OWNER, id, rs);
    assert.equal(r.status, 202, r.text);
    const newest = expected(id, rs[199]);
    for (const got of [a, b]) {
      await h.until(() => got.some((x) => x.r.ts === newest.ts), 5000, 'the newest reading');
      assert.deepEqual(got[got.length - 1].r, newest);
      assert.ok(got.length <= RATE + 1, `${got.length} events for one request`);
      for (const x of got) assert.deepEqual(x.r, expected(id, rs[Date.parse(x.r.ts) - base]));
    }
  });

  it('a steady stream: at most rate per second (+1) per socket, one per interval, ascending, ending with the newest', async () => {
    const id = sensorId('lt');
    await createSensor(url, OWNER, id);
    const got = await subscriber('lt-c', id);
    const base = Date.now() - 10 * MIN;
    const started = Date.now();
    let n = 0;
    // ~2.5 s of writes, a request of 20 every ~50 ms (pacing the writer, not waiting for a condition)
    while (Date.now() - started < 2500) {
      const rs = Array.from({ length: 20 }, () => ({ value: n, ts: base + n++ }));
      const r = await postReadings(url, OWNER, id, rs);
      assert.equal(r.status, 202, r.text);
      await h.sleep(50);
    }
    const writing = Date.now() - started;
    const newest = iso(base + n - 1);
    await h.until(() => got.some((x) => x.r.ts === newest), 5000, 'the newest reading');
    const times = got.map((x) => x.at);
    const perSecond = maxPerWindow(times, 1000);
    assert.ok(perSecond <= RATE + 1, `${perSecond} events within one second: ${JSON.stringify(times.map((t) => t - started))}`);
    // the newest of each interval: roughly rate × seconds events, not just the first and the last
    assert.ok(got.length >= Math.floor((writing / 1000) * RATE * 0.5), `only ${got.length} events in ${writing} ms`);
    assert.ok(got.length <= Math.ceil((writing / 1000 + 1) * RATE) + 2, `${got.length} events in ${writing} ms`);
    const ts = got.map((x) => Date.parse(x.r.ts));
    for (let i = 1; i < ts.length; i++) assert.ok(ts[i] > ts[i - 1], 'events in ascending ts');
    assert.equal(got[got.length - 1].r.ts, newest);
  });
});

// ------------------------------------------------------------------ push-back and shutdown

describe('push-back (TSUNAGI_SENSOR_BUFFER=1000, FLUSH_MS=60000, BATCH=100000)', () => {
  let srv;
  let url;
  const OWNER = h.userToken('pb-owner');
  let id;
  let base;
  let filled;
  before(async () => {
    srv = await h.startServer({
      env: { ...BASE_ENV, TSUNAGI_SENSOR_BUFFER: '1000', TSUNAGI_SENSOR_FLUSH_MS: '60000', TSUNAGI_SENSOR_BATCH: '100000' },
    });
    url = srv.url;
    id = sensorId('pb');
    await createSensor(url, OWNER, id);
    base = Date.now() - HOUR;
  });
  after(async () => { h.closeAll(); if (srv) await srv.destroy(); });

  it('1000 readings are accepted (and sent live before they are written); the next write → 503 unavailable with Retry-After', async () => {
    const s = await h.connect(url, h.userToken('pb-reader'));
    assert.equal((await ack(s, 'subscribe', { sensor: id })).ok, true);
    filled = Array.from({ length: 1000 }, (_, i) => ({ value: i, ts: base + i }));
    const newestLive = h.waitFor(s, 'reading', (x) => x.ts === iso(base + 999), 5000);
    const r = await postReadings(url, OWNER, id, filled);
    assert.equal(r.status, 202, r.text);
    assert.deepEqual(r.body, { accepted: 1000, durable: false });
    assert.deepEqual(await newestLive, expected(id, filled[999]));
    const full = await postReadings(url, OWNER, id, [{ value: 1, ts: base + 5000 }]);
    assertHttpError(assert, full, 503, 'unavailable');
    const retry = full.headers.get('retry-after');
    assert.ok(retry !== null, 'Retry-After header');
    assert.match(retry, /^\d+$/);
    // the buffered readings are what subscribe shows
    const again = await ack(s, 'subscribe', { sensor: id });
    assert.deepEqual(again.last, filled.slice(990).map((x) => expected(id, x)));
  });

  it('over Socket.IO the reading ack is { ok: false, error: { code: unavailable, retry_after_ms } }', async () => {
    const s = await h.connect(url, OWNER);
    const a = await ack(s, 'reading', { sensor: id, value: 1, ts: base + 6000 });
    assertAckError(assert, a, 'unavailable');
    assert.ok(Number.isInteger(a.error.retry_after_ms) && a.error.retry_after_ms > 0, JSON.stringify(a));
    // nothing refused was accepted
    const last = await ack(s, 'subscribe', { sensor: id });
    assert.equal(last.last[last.last.length - 1].ts, iso(base + 999));
  });

  it('SIGTERM writes every accepted reading, exits 0; after a restart all 1000 are there, none refused', async () => {
    const exit = await srv.stop();
    assert.deepEqual(exit, { code: 0, signal: null }, srv.log());
    await srv.restart();
    const { items } = await allReadings(url, OWNER, id, base, base + HOUR);
    assert.deepEqual(items, filled.map((x) => expected(id, x)));
  });

  it('durable: true answers once committed (not after the flush interval) and survives kill -9', async () => {
    const r = await postReadings(url, OWNER, id, [{ value: 42, ts: base + 7000 }], '?durable=true');
    assert.equal(r.status, 201, r.text);
    const s = await h.connect(url, OWNER);
    assert.deepEqual(await ack(s, 'reading', { sensor: id, value: 43, ts: base + 7001, durable: true }), { ok: true, durable: true });
    s.close();
    await srv.kill9();
    await srv.restart();
    const g = await getReadings(url, OWNER, id, { from: base + 7000, to: base + 7002 });
    assert.deepEqual(g.body.items, [expected(id, { value: 42, ts: base + 7000 }), expected(id, { value: 43, ts: base + 7001 })]);
  });
});
