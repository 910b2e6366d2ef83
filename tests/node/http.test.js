'use strict';
// PROTOCOL.md §4/§5: messages endpoints, errors and statuses, ops endpoints.

const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const h = require('./harness');

const { assertHttpError, assertMessageShape } = h;
const range = (a, b) => (a > b ? [] : Array.from({ length: b - a + 1 }, (_, i) => a + i));

describe('HTTP messages', () => {
  let srv;
  let url;
  let room;
  const T = h.userToken('hm-owner');
  before(async () => {
    srv = await h.startServer({ env: { TSUNAGI_SEND_RATE: '0' } });
    url = srv.url;
    room = h.roomId('hm');
    await h.createRoom(url, T, room);
    const s = await h.connect(url, T);
    const acks = await Promise.all(range(1, 130).map((i) => h.ack(s, 'send', { room, content: `m${i}` })));
    for (const a of acks) assert.equal(a.ok, true);
    s.close();
  });
  after(async () => { h.closeAll(); if (srv) await srv.destroy(); });

  const get = (q) => h.http(url, 'GET', `/api/v1/rooms/${room}/messages${q}`, T);
  async function page(q) {
    const r = await get(q);
    assert.equal(r.status, 200, `${q}: ${r.text}`);
    assert.deepEqual(Object.keys(r.body).sort(), ['items', 'more'], q);
    assert.equal(typeof r.body.more, 'boolean');
    return [r.body.items.map((m) => m.seq), r.body.more];
  }

  it('no cursor → the newest 50 (default limit), ascending, more:true', async () => {
    const r = await get('');
    assert.equal(r.status, 200);
    assert.match(r.headers.get('content-type'), /application\/json/);
    for (const m of r.body.items) { assertMessageShape(assert, m); assert.equal(m.room, room); }
    assert.deepEqual(r.body.items.map((m) => m.seq), range(81, 130));
    assert.deepEqual(r.body.items.map((m) => m.content), range(81, 130).map((i) => `m${i}`));
    assert.equal(r.body.more, true);
  });

  it('no cursor with limit', async () => {
    assert.deepEqual(await page('?limit=5'), [range(126, 130), true]);
    assert.deepEqual(await page('?limit=130'), [range(1, 130), false]);
    assert.deepEqual(await page('?limit=500'), [range(1, 130), false]);
    assert.deepEqual(await page('?limit=129'), [range(2, 130), true]);
  });

  it('after_seq → the first limit with seq > N; more forward', async () => {
    assert.deepEqual(await page('?after_seq=0&limit=10'), [range(1, 10), true]);
    assert.deepEqual(await page('?after_seq=10&limit=10'), [range(11, 20), true]);
    assert.deepEqual(await page('?after_seq=120&limit=10'), [range(121, 130), false]);
    assert.deepEqual(await page('?after_seq=125&limit=10'), [range(126, 130), false]);
    assert.deepEqual(await page('?after_seq=130'), [[], false]);
    assert.deepEqual(await page('?after_seq=5000'), [[], false]);
    assert.deepEqual(await page('?after_seq=0'), [range(1, 50), true]);
    assert.deepEqual(await page('?after_seq=80'), [range(81, 130), false]);
  });

  it('before_seq → the limit nearest with seq < N, ascending; more backward', async () => {
    assert.deepEqual(await page('?before_seq=131&limit=10'), [range(121, 130), true]);
    assert.deepEqual(await page('?before_seq=50&limit=10'), [range(40, 49), true]);
    assert.deepEqual(await page('?before_seq=11&limit=10'), [range(1, 10), false]);
    assert.deepEqual(await page('?before_seq=6&limit=10'), [range(1, 5), false]);
    assert.deepEqual(await page('?before_seq=1'), [[], false]);
    assert.deepEqual(await page('?before_seq=0'), [[], false]);
    assert.deepEqual(await page('?before_seq=101'), [range(51, 100), true]);
    assert.deepEqual(await page('?before_seq=51'), [range(1, 50), false]);
  });

  it('both → the first limit of the range, ascending; more = more remain in the range', async () => {
    assert.deepEqual(await page('?after_seq=10&before_seq=20'), [range(11, 19), false]);
    assert.deepEqual(await page('?after_seq=10&before_seq=20&limit=5'), [range(11, 15), true]);
    assert.deepEqual(await page('?after_seq=10&before_seq=20&limit=9'), [range(11, 19), false]);
    assert.deepEqual(await page('?after_seq=15&before_seq=20&limit=4'), [range(16, 19), false]);
    assert.deepEqual(await page('?after_seq=10&before_seq=11'), [[], false]);
    assert.deepEqual(await page('?after_seq=20&before_seq=10'), [[], false]);
    assert.deepEqual(await page('?after_seq=100&before_seq=1000&limit=50'), [range(101, 130), false]);
  });

  it('paging backward from the newest reaches seq 1 with no gap', async () => {
    const seen = [];
    let [seqs, more] = await page('?limit=40');
    seen.unshift(...seqs);
    while (more) {
      [seqs, more] = await page(`?before_seq=${seen[0]}&limit=40`);
      seen.unshift(...seqs);
    }
    assert.deepEqual(seen, range(1, 130));
  });

  it('limit 0 / 501 / -1 / abc / 1.5 → 400; cursors -1 / abc / 1.5 → 400', async () => {
    for (const bad of ['0', '501', '-1', 'abc', '1.5', '1e2']) {
      assertHttpError(assert, await get(`?limit=${bad}`), 400, 'bad_request');
    }
    for (const bad of ['-1', 'abc', '1.5', '0x10']) {
      assertHttpError(assert, await get(`?after_seq=${bad}`), 400, 'bad_request');
      assertHttpError(assert, await get(`?before_seq=${bad}`), 400, 'bad_request');
    }
  });

  it('GET messages: 404 for a missing room, 400 for a bad room id, 401 without a token', async () => {
    assertHttpError(assert, await h.http(url, 'GET', '/api/v1/rooms/no-such-room-x/messages', T), 404, 'not_found');
    assertHttpError(assert, await h.http(url, 'GET', '/api/v1/rooms/Bad/messages', T), 400, 'bad_request');
    assertHttpError(assert, await h.http(url, 'GET', `/api/v1/rooms/${'x'.repeat(65)}/messages`, T), 400, 'bad_request');
    assertHttpError(assert, await h.http(url, 'GET', '/api/v1/rooms/no-such-room-x/messages?limit=0', T), 400, 'bad_request');
    assertHttpError(assert, await h.http(url, 'GET', `/api/v1/rooms/${room}/messages`), 401, 'auth_required');
  });
});

describe('HTTP POST messages', () => {
  let srv;
  let url;
  before(async () => { srv = await h.startServer({ env: { TSUNAGI_SEND_RATE: '0' } }); url = srv.url; });
  after(async () => { h.closeAll(); if (srv) await srv.destroy(); });

  it('201 with a new MESSAGE, broadcast once; 200 with the same body for a known client_id', async () => {
    const room = h.roomId('hp');
    await h.createRoom(url, h.userToken('hp-owner'), room);
    const s = await h.connect(url, h.userToken('hp-reader'));
    assert.equal((await h.ack(s, 'join', { room })).ok, true);
    const got = h.collect(s, 'message');
    const t = h.userToken('hp-user');
    const p = (body) => h.http(url, 'POST', `/api/v1/rooms/${room}/messages`, t, body);
    const r1 = await p({ content: 'via http', client_id: 'h-1' });
    assert.equal(r1.status, 201, r1.text);
    assertMessageShape(assert, r1.body);
    assert.equal(r1.body.user_id, 'hp-user');
    assert.equal(r1.body.room, room);
    assert.equal(r1.body.content, 'via http');
    assert.equal(r1.body.client_id, 'h-1');
    assert.equal(r1.body.seq, 1);
    const r2 = await p({ content: 'different', client_id: 'h-1' });
    assert.equal(r2.status, 200, r2.text);
    assert.deepEqual(r2.body, r1.body);
    // a socket retry of the HTTP client_id by the same user returns it too
    const su = await h.connect(url, t);
    assert.deepEqual(await h.ack(su, 'send', { room, content: 'third', client_id: 'h-1' }), { ok: true, message: r1.body });
    const r3 = await p({ content: 'no client id' });
    assert.equal(r3.status, 201);
    assert.equal(r3.body.client_id, null);
    assert.equal(r3.body.seq, 2);
    const r4 = await p({ content: 'null client id', client_id: null });
    assert.equal(r4.status, 201, r4.text);
    assert.equal(r4.body.client_id, null);
    await h.until(() => got.length >= 3, 10000, 'broadcasts');
    await h.sleep(400);
    assert.deepEqual(got, [r1.body, r3.body, r4.body]);
  });

  it('the author is the token sub; unknown fields are ignored', async () => {
    const room = h.roomId('hp');
    await h.createRoom(url, h.userToken('hp-owner'), room);
    const r = await h.http(url, 'POST', `/api/v1/rooms/${room}/messages`, h.userToken('hp-real'),
      { content: 'x', user_id: 'mallory', room: 'other', seq: 7, extra: true });
    assert.equal(r.status, 201, r.text);
    assert.equal(r.body.user_id, 'hp-real');
    assert.equal(r.body.room, room);
    assert.equal(r.body.seq, 1);
  });

  it('POST messages: 400 on bad input, 404 missing room, 401 without token', async () => {
    const room = h.roomId('hp');
    await h.createRoom(url, h.userToken('hp-owner'), room);
    const t = h.userToken('hp-user');
    const p = (body, r = room) => h.http(url, 'POST', `/api/v1/rooms/${r}/messages`, t, body);
    for (const bad of [{}, { content: '' }, { content: 'a\u0000b' }, { content: 5 }, { content: null },
      { content: 'x', client_id: '' }, { content: 'x', client_id: 'c'.repeat(129) }, { content: 'x', client_id: 3 },
      [], 'nope', '{"content":']) {
      assertHttpError(assert, await p(bad), 400, 'bad_request');
    }
    const ok128 = await p({ content: 'x', client_id: '😀'.repeat(128) });
    assert.equal(ok128.status, 201, ok128.text);
    assertHttpError(assert, await p({ content: 'x' }, 'no-such-room-p'), 404, 'not_found');
    assertHttpError(assert, await p({ content: '' }, 'no-such-room-p'), 400, 'bad_request');
    assertHttpError(assert, await p({ content: 'x' }, 'Bad'), 400, 'bad_request');
    assertHttpError(assert, await h.http(url, 'POST', `/api/v1/rooms/${room}/messages`, null, { content: 'x' }), 401, 'auth_required');
    const hist = await h.fullHistory(url, t, room);
    assert.deepEqual(hist.map((m) => m.seq), [1]);
  });
});

describe('HTTP auth and ops', () => {
  let srv;
  let url;
  before(async () => { srv = await h.startServer({ env: { TSUNAGI_SEND_RATE: '0' } }); url = srv.url; });
  after(async () => { h.closeAll(); if (srv) await srv.destroy(); });

  const now = () => Math.floor(Date.now() / 1000);

  it('401 codes: auth_required / invalid_token / token_expired', async () => {
    const g = (headers) => h.http(url, 'GET', '/api/v1/rooms', null, undefined, headers);
    assertHttpError(assert, await g({}), 401, 'auth_required');
    assertHttpError(assert, await g({ authorization: 'Bearer garbage' }), 401, 'invalid_token');
    assertHttpError(assert, await g({ authorization: `Bearer ${h.mintToken('x', {}, { secret: 'wrong-secret-wrong-secret-wrong-secret' })}` }), 401, 'invalid_token');
    assertHttpError(assert, await g({ authorization: `Bearer ${h.mintToken('x', {}, { header: { alg: 'none' }, signature: '' })}` }), 401, 'invalid_token');
    assertHttpError(assert, await g({ authorization: `Bearer ${h.mintToken('x', { exp: undefined })}` }), 401, 'invalid_token');
    assertHttpError(assert, await g({ authorization: `Bearer ${h.mintToken(undefined)}` }), 401, 'invalid_token');
    assertHttpError(assert, await g({ authorization: `Bearer ${h.mintToken('x', { exp: now() - 3600 })}` }), 401, 'token_expired');
    // a valid token works
    assert.equal((await g({ authorization: `Bearer ${h.userToken('x')}` })).status, 200);
  });

  it('POST rooms → 201 ROOM-INFO; creator is owner; 401 without token', async () => {
    const id = h.roomId('ho');
    const r = await h.http(url, 'POST', '/api/v1/rooms', h.userToken('ho-user'), { id });
    assert.equal(r.status, 201, r.text);
    assert.equal(r.body.id, id);
    assert.equal(r.body.name, id);
    assert.equal(r.body.private, false);
    assert.equal(r.body.owner_id, 'ho-user');
    assert.equal(r.body.last_seq, 0);
    assertHttpError(assert, await h.http(url, 'POST', '/api/v1/rooms', null, { id: h.roomId('ho') }), 401, 'auth_required');
    assertHttpError(assert, await h.http(url, 'POST', '/api/v1/rooms', h.userToken('ho-user'), { id }), 409);
  });

  it('ROOM-INFO last_seq follows the room in GET /api/v1/rooms', async () => {
    const id = h.roomId('ho');
    const t = h.userToken('ho-user2');
    await h.createRoom(url, t, id);
    for (let i = 0; i < 3; i++) {
      assert.equal((await h.http(url, 'POST', `/api/v1/rooms/${id}/messages`, t, { content: `x${i}` })).status, 201);
    }
    const r = await h.http(url, 'GET', '/api/v1/rooms?limit=500', t);
    const info = r.body.items.find((x) => x.id === id);
    assert.equal(info.last_seq, 3);
  });

  it('/healthz and /readyz → 200 without a token', async () => {
    assert.equal((await h.http(url, 'GET', '/healthz')).status, 200);
    assert.equal((await h.http(url, 'GET', '/readyz')).status, 200);
  });

  it('/metrics is Prometheus text with the documented metrics', async () => {
    // some activity first, so every series has a sample
    const id = h.roomId('hm');
    const t = h.userToken('met');
    await h.createRoom(url, t, id);
    const s = await h.connect(url, t);
    assert.equal((await h.ack(s, 'send', { room: id, content: 'x' })).ok, true);
    const r = await h.http(url, 'GET', '/metrics');
    assert.equal(r.status, 200);
    assert.match(r.headers.get('content-type'), /^text\/plain/);
    for (const name of ['tsunagi_sockets_connected', 'tsunagi_events_in_total', 'tsunagi_send_commit_seconds', 'tsunagi_db_pool_connections']) {
      assert.match(r.text, new RegExp(`^# TYPE ${name} `, 'm'), `${name} TYPE line`);
    }
    assert.ok(h.metricValue(r.text, 'tsunagi_sockets_connected') >= 1);
    assert.ok(h.metricValue(r.text, 'tsunagi_events_in_total') >= 1);
    assert.ok(h.metricValue(r.text, 'tsunagi_send_commit_seconds_count') >= 1);
    assert.match(r.text, /^# TYPE tsunagi_send_commit_seconds histogram$/m);
    assert.notEqual(h.metricValue(r.text, 'tsunagi_db_pool_connections'), null);
    // every sample line is well-formed
    for (const line of r.text.split('\n')) {
      if (line === '' || line.startsWith('#')) continue;
      assert.match(line, /^[a-zA-Z_:][a-zA-Z0-9_:]*(\{[^}]*\})? [-+0-9.eEinfaINF]+$/, line);
    }
    s.close();
  });

  it('unknown API path → 404', async () => {
    const r = await h.http(url, 'GET', '/api/v1/nothing-here', h.userToken('x'));
    assert.equal(r.status, 404);
  });
});

describe('an oversized body', () => {
  let srv;
  let url;
  const T = h.userToken('big-sender');
  before(async () => {
    srv = await h.startServer({ env: { TSUNAGI_SEND_RATE: '0' } });
    url = srv.url;
    await h.createRoom(url, T, 'big-bodies');
  });
  after(async () => { h.closeAll(); if (srv) await srv.destroy(); });

  it('is answered 413 too_large every time, never a reset connection (the server reads the rest first)', async () => {
    const huge = { content: 'x'.repeat(2 * 1024 * 1024) };
    for (let i = 0; i < 20; i++) {
      const r = await h.http(url, 'POST', '/api/v1/rooms/big-bodies/messages', T, huge);
      assertHttpError(assert, r, 413, 'too_large');
    }
    // and the server is fine afterwards
    const ok = await h.http(url, 'POST', '/api/v1/rooms/big-bodies/messages', T, { content: 'small' });
    assert.equal(ok.status, 201, ok.text);
  });
});
