'use strict';
// PROTOCOL.md §6.4 "Jobs and webhooks", against a real HTTP receiver in this process:
// registration rules (who may hook which rooms, URLs, events, the SSRF guard), WEBHOOK without
// secrets, the delivery (body, headers, HMAC-SHA256 signature), retries with one delivery id
// spaced by the backoff, dead jobs retried by an admin, kill -9 with a thousand deliveries
// queued, and two instances sharing the queue without running a job twice at once.

const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const crypto = require('node:crypto');
const http = require('node:http');
const h = require('./harness');

const { assertHttpError } = h;

const BASE_ENV = { TSUNAGI_SEND_RATE: '0', TSUNAGI_WEBHOOK_ALLOW_PRIVATE: 'true', TSUNAGI_JOB_LEASE_S: '3' };
const WEBHOOK_FIELDS = ['created_at', 'created_by', 'events', 'id', 'rooms', 'url'];
const admin = h.adminToken('wh-ops');

/**
 * A receiver: records every request ({ path, headers, body, raw, at }); `behave(path, req)`
 * returns the status to answer (default 200), `delayMs` delays answers.
 */
async function receiver() {
  const r = { got: [], inFlight: new Map(), overlaps: 0, behave: () => 200, delayMs: 0 };
  r.server = http.createServer((req, res) => {
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', async () => {
      const raw = Buffer.concat(chunks).toString('utf8');
      let body = null;
      try { body = JSON.parse(raw); } catch { /* kept raw */ }
      const id = req.headers['x-tsunagi-delivery'];
      const running = r.inFlight.get(id) || 0;
      if (running > 0) r.overlaps++;
      r.inFlight.set(id, running + 1);
      const entry = { path: req.url, headers: req.headers, body, raw, at: Date.now() };
      r.got.push(entry);
      if (r.delayMs) await h.sleep(r.delayMs);
      r.inFlight.set(id, r.inFlight.get(id) - 1);
      res.writeHead(r.behave(req.url, entry));
      res.end('{}');
    });
  });
  await new Promise((resolve) => r.server.listen(0, '127.0.0.1', resolve));
  r.url = (p = '/hook') => `http://127.0.0.1:${r.server.address().port}${p}`;
  r.close = () => new Promise((resolve) => { r.server.closeAllConnections(); r.server.close(resolve); });
  return r;
}

/** The signature a receiver computes: v1=hex(HMAC-SHA256(secret, `${timestamp}.${body}`)). */
const sign = (secret, ts, raw) =>
  `v1=${crypto.createHmac('sha256', Buffer.from(secret, 'utf8')).update(`${ts}.${raw}`).digest('hex')}`;

function assertSigned(entry, secret, event) {
  const hd = entry.headers;
  assert.equal(hd['content-type'], 'application/json');
  assert.equal(hd['x-tsunagi-event'], event);
  assert.match(hd['x-tsunagi-timestamp'], /^\d+$/);
  assert.ok(Math.abs(Number(hd['x-tsunagi-timestamp']) - Date.now() / 1000) < 60);
  assert.equal(hd['x-tsunagi-signature'], sign(secret, hd['x-tsunagi-timestamp'], entry.raw));
  assert.deepEqual(Object.keys(entry.body).sort(), ['created_at', 'data', 'event', 'id']);
  assert.equal(entry.body.id, hd['x-tsunagi-delivery']);
  assert.equal(entry.body.event, event);
}

const hook = (base, token, body) => h.http(base, 'POST', '/api/v1/webhooks', token, body);
const send = (base, token, room, content, extra = {}) =>
  h.http(base, 'POST', `/api/v1/rooms/${room}/messages`, token, { content, ...extra });

describe('webhooks on one server', () => {
  let server;
  let base;
  let rx;
  const owner = h.userToken('wh-owner');
  const other = h.userToken('wh-other');
  let room;
  let otherRoom;
  before(async () => {
    rx = await receiver();
    server = await h.startServer({ env: BASE_ENV });
    base = server.url;
    room = h.roomId('wh');
    otherRoom = h.roomId('who');
    await h.createRoom(base, owner, room);
    await h.createRoom(base, other, otherRoom);
  });
  after(async () => { h.closeAll(); if (server) await server.destroy(); if (rx) await rx.close(); });

  it('registration: the rules, in the contract order of errors', async () => {
    assertHttpError(assert, await hook(base, null, { url: rx.url(), events: ['message'] }), 401, 'auth_required');
    for (const body of [
      { events: ['message'], rooms: [room] },
      { url: 'ftp://example.com/x', events: ['message'], rooms: [room] },
      { url: 'not a url', events: ['message'], rooms: [room] },
      { url: rx.url(), events: [], rooms: [room] },
      { url: rx.url(), events: ['message', 'typing'], rooms: [room] },
      { url: rx.url(), events: 'message', rooms: [room] },
      { url: rx.url(), events: ['message'], rooms: ['Not A Room'] },
      { url: rx.url(), events: ['message'], rooms: [] },
      { url: rx.url(), events: ['message'], rooms: [room], secret: 7 },
      { url: rx.url(), events: ['message'], rooms: [room], secret: '' },
    ]) {
      assertHttpError(assert, await hook(base, owner, body), 400, 'bad_request');
    }
    assertHttpError(assert, await hook(base, owner, { url: rx.url(), events: ['message'], rooms: ['no-such-room-wh'] }), 404, 'not_found');
    // a room's owner: only their own rooms, named
    assertHttpError(assert, await hook(base, owner, { url: rx.url(), events: ['message'] }), 403, 'forbidden');
    assertHttpError(assert, await hook(base, owner, { url: rx.url(), events: ['message'], rooms: [room, otherRoom] }), 403, 'forbidden');
    const mine = await hook(base, owner, { url: rx.url('/mine'), events: ['message', 'state'], rooms: [room] });
    assert.equal(mine.status, 201, mine.text);
    assert.deepEqual(Object.keys(mine.body).sort(), [...WEBHOOK_FIELDS, 'secret'].sort());
    assert.match(mine.body.secret, /^.{16,}$/);
    assert.deepEqual(mine.body.rooms, [room]);
    assert.equal(mine.body.created_by, 'wh-owner');
    const given = await hook(base, admin, { url: rx.url('/all'), events: ['room.created'], secret: 'my secret' });
    assert.equal(given.status, 201, given.text);
    assert.equal(given.body.secret, 'my secret');
    assert.equal(given.body.rooms, null);
    // listed without secrets: each user their own, admins all
    const listed = await h.http(base, 'GET', '/api/v1/webhooks', owner);
    assert.equal(listed.status, 200);
    assert.deepEqual(listed.body.items.map((w) => w.id), [mine.body.id]);
    for (const w of listed.body.items) assert.deepEqual(Object.keys(w).sort(), WEBHOOK_FIELDS);
    const all = await h.http(base, 'GET', '/api/v1/webhooks', admin);
    assert.ok(all.body.items.some((w) => w.id === given.body.id));
    assert.ok(all.body.items.every((w) => !('secret' in w)));
    // deleted by its creator or an admin only
    assertHttpError(assert, await h.http(base, 'DELETE', `/api/v1/webhooks/${mine.body.id}`, other), 403, 'forbidden');
    assert.equal((await h.http(base, 'DELETE', `/api/v1/webhooks/${mine.body.id}`, owner)).status, 204);
    assertHttpError(assert, await h.http(base, 'DELETE', `/api/v1/webhooks/${mine.body.id}`, owner), 404, 'not_found');
    assert.equal((await h.http(base, 'DELETE', `/api/v1/webhooks/${given.body.id}`, admin)).status, 204);
  });

  it('message, state and room.created deliveries: body, headers, signature; other rooms not', async () => {
    const created = await hook(base, owner, { url: rx.url('/events'), events: ['message', 'state'], rooms: [room] });
    const rooms = await hook(base, admin, { url: rx.url('/rooms'), events: ['room.created'] });
    assert.equal(created.status, 201);
    rx.got.length = 0;
    const sent = await send(base, owner, room, 'hello hooks', { client_id: 'wh-1' });
    assert.equal(sent.status, 201);
    await send(base, other, otherRoom, 'not hooked');
    const put = await h.http(base, 'PUT', `/api/v1/rooms/${room}/state/board`, owner, { value: { x: 1 } });
    assert.equal(put.status, 200);
    const newRoom = await h.createRoom(base, other, h.roomId('whn'));
    await h.until(() => rx.got.length >= 3, 10000, 'three deliveries');
    await h.sleep(300);
    const byPath = (p) => rx.got.filter((e) => e.path === p);
    const events = byPath('/events');
    assert.equal(events.length, 2, JSON.stringify(events.map((e) => e.body)));
    const msg = events.find((e) => e.body.event === 'message');
    assertSigned(msg, created.body.secret, 'message');
    assert.deepEqual(msg.body.data, sent.body);
    const state = events.find((e) => e.body.event === 'state');
    assertSigned(state, created.body.secret, 'state');
    assert.deepEqual(state.body.data, put.body);
    const roomCreated = byPath('/rooms');
    assert.equal(roomCreated.length, 1);
    assertSigned(roomCreated[0], rooms.body.secret, 'room.created');
    assert.deepEqual(roomCreated[0].body.data, newRoom);
    // a retried send broadcasts nothing new and delivers nothing new
    await send(base, owner, room, 'again', { client_id: 'wh-1' });
    await h.sleep(1500);
    assert.equal(byPath('/events').length, 2);
    for (const id of [created.body.id, rooms.body.id]) await h.http(base, 'DELETE', `/api/v1/webhooks/${id}`, admin);
  });

  it('a receiver failing twice gets three attempts, one delivery id, spaced by the backoff', async () => {
    const failures = new Map();
    rx.behave = (p, e) => {
      if (p !== '/flaky') return 200;
      const n = failures.get(e.body.id) || 0;
      failures.set(e.body.id, n + 1);
      return n < 2 ? 503 : 200;
    };
    const created = await hook(base, owner, { url: rx.url('/flaky'), events: ['message'], rooms: [room] });
    rx.got.length = 0;
    await send(base, owner, room, 'flaky');
    await h.until(() => rx.got.filter((e) => e.path === '/flaky').length >= 3, 15000, 'three attempts');
    await h.sleep(2500);
    const tries = rx.got.filter((e) => e.path === '/flaky');
    assert.equal(tries.length, 3);
    assert.equal(new Set(tries.map((e) => e.headers['x-tsunagi-delivery'])).size, 1);
    for (const t of tries) assertSigned(t, created.body.secret, 'message');
    const gaps = [tries[1].at - tries[0].at, tries[2].at - tries[1].at];
    assert.ok(gaps[0] >= 750 && gaps[0] < 3000, `first retry after ${gaps[0]} ms`);
    assert.ok(gaps[1] >= 1550 && gaps[1] < 4500, `second retry after ${gaps[1]} ms`);
    rx.behave = () => 200;
    await h.http(base, 'DELETE', `/api/v1/webhooks/${created.body.id}`, owner);
  });

  it('jobs: listed for admins; a dead delivery is retried by an admin', async () => {
    const s = await h.startServer({ env: { ...BASE_ENV, TSUNAGI_WEBHOOK_MAX_ATTEMPTS: '1' } });
    try {
      const r = h.roomId('whd');
      await h.createRoom(s.url, owner, r);
      let answer = 500;
      rx.behave = (p) => (p === '/dead' ? answer : 200);
      const created = await hook(s.url, owner, { url: rx.url('/dead'), events: ['message'], rooms: [r] });
      assert.equal(created.status, 201);
      await send(s.url, owner, r, 'doomed');
      let dead;
      await h.until(async () => {
        const l = await h.http(s.url, 'GET', '/api/v1/admin/jobs?kind=webhook&state=dead', admin);
        [dead] = l.body.items;
        return dead;
      }, 10000, 'a dead job');
      assert.deepEqual(Object.keys(dead).sort(),
        ['attempts', 'created_at', 'id', 'kind', 'last_error', 'run_at', 'state', 'updated_at']);
      assert.equal(dead.attempts, 1);
      assert.match(dead.last_error, /500/);
      assertHttpError(assert, await h.http(s.url, 'GET', '/api/v1/admin/jobs', owner), 403, 'forbidden');
      assertHttpError(assert, await h.http(s.url, 'POST', `/api/v1/admin/jobs/${dead.id}/retry`, owner), 403, 'forbidden');
      assertHttpError(assert, await h.http(s.url, 'POST', '/api/v1/admin/jobs/nope/retry', admin), 404, 'not_found');
      answer = 200;
      const retried = await h.http(s.url, 'POST', `/api/v1/admin/jobs/${dead.id}/retry`, admin);
      assert.equal(retried.status, 200, retried.text);
      assert.equal(retried.body.state, 'queued');
      await h.until(async () => {
        const j = await h.http(s.url, 'GET', '/api/v1/admin/jobs?kind=webhook&state=done', admin);
        return j.body.items.some((x) => x.id === dead.id);
      }, 10000, 'the retried job done');
      assertHttpError(assert, await h.http(s.url, 'POST', `/api/v1/admin/jobs/${dead.id}/retry`, admin), 409, 'conflict');
      const deliveries = rx.got.filter((e) => e.path === '/dead');
      assert.equal(deliveries.length, 2);
      assert.equal(deliveries[0].headers['x-tsunagi-delivery'], deliveries[1].headers['x-tsunagi-delivery']);
    } finally {
      rx.behave = () => 200;
      await s.destroy();
    }
  });

  it('kill -9 with a thousand deliveries queued: every one delivered after the restart', async () => {
    const r = h.roomId('whk');
    await h.createRoom(base, owner, r);
    const created = await hook(base, owner, { url: rx.url('/bulk'), events: ['message'], rooms: [r] });
    assert.equal(created.status, 201);
    rx.delayMs = 200; // a slow receiver: most deliveries are still queued at the kill
    const sends = [];
    for (let i = 0; i < 1000; i++) sends.push(send(base, owner, r, `bulk ${i}`));
    const acked = (await Promise.all(sends)).map((x) => { assert.equal(x.status, 201, x.text); return x.body.id; });
    await server.kill9();
    const before = new Set(rx.got.filter((e) => e.path === '/bulk').map((e) => e.body.data.id));
    assert.ok(before.size < 1000, `${before.size} delivered before the kill`);
    rx.delayMs = 0;
    await server.restart();
    await h.until(() => {
      const seen = new Set(rx.got.filter((e) => e.path === '/bulk').map((e) => e.body.data.id));
      return acked.every((id) => seen.has(id));
    }, 60000, 'every message delivered after the restart');
    await h.http(base, 'DELETE', `/api/v1/webhooks/${created.body.id}`, owner);
  });
});

describe('the SSRF guard', () => {
  let server;
  before(async () => { server = await h.startServer({ env: { TSUNAGI_SEND_RATE: '0' } }); });
  after(async () => { h.closeAll(); if (server) await server.destroy(); });

  it('a webhook to loopback, private or link-local addresses is refused unless allowed', async () => {
    for (const url of ['http://127.0.0.1:9/x', 'http://localhost/x', 'http://10.1.2.3/x', 'http://[::1]/x',
      'http://169.254.169.254/latest', 'http://192.168.0.10/x', 'http://0.0.0.0/x']) {
      assertHttpError(assert, await hook(server.url, admin, { url, events: ['message'] }), 400, 'bad_request');
    }
  });
});

describe('two instances share the queue', () => {
  let cluster;
  let rx;
  before(async () => {
    rx = await receiver();
    cluster = await h.startCluster(2, { env: BASE_ENV });
  });
  after(async () => { h.closeAll(); if (cluster) await cluster.destroy(); if (rx) await rx.close(); });

  it('every delivery once, none by both instances at once', async () => {
    const [A, B] = cluster.map((s) => s.url);
    const owner = h.userToken('whc-owner');
    const r = h.roomId('whc');
    await h.createRoom(A, owner, r);
    const created = await hook(A, owner, { url: rx.url('/shared'), events: ['message'], rooms: [r] });
    assert.equal(created.status, 201);
    rx.delayMs = 20;
    const sends = [];
    for (let i = 0; i < 300; i++) sends.push(send(i % 2 ? A : B, owner, r, `shared ${i}`));
    const acked = (await Promise.all(sends)).map((x) => x.body.id);
    await h.until(() => new Set(rx.got.map((e) => e.body.data.id)).size >= 300, 30000, 'all delivered');
    await h.sleep(500);
    assert.equal(rx.overlaps, 0, 'a delivery ran on both instances at once');
    assert.equal(rx.got.length, 300, 'each delivery once');
    assert.deepEqual(new Set(rx.got.map((e) => e.body.data.id)), new Set(acked));
  });
});
