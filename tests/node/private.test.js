'use strict';
// PROTOCOL.md §3/§5: private rooms, membership, admins; §4/§5: rooms and members endpoints.

const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const h = require('./harness');

const { ack, assertAckError, assertHttpError } = h;

describe('private rooms', () => {
  let srv;
  let url;
  before(async () => {
    srv = await h.startServer({ env: { TSUNAGI_SEND_RATE: '0', TSUNAGI_TYPING_RATE: '1000' } });
    url = srv.url;
  });
  after(async () => { h.closeAll(); if (srv) await srv.destroy(); });

  async function privateRoom(owner) {
    const id = h.roomId('priv');
    const info = await h.createRoom(url, h.userToken(owner), id, { private: true });
    return [id, info];
  }

  it('ROOM-INFO of a created private room', async () => {
    const id = h.roomId('priv');
    const before = Date.now();
    const r = await h.http(url, 'POST', '/api/v1/rooms', h.userToken('pv-owner'), { id, name: 'Secret', private: true });
    assert.equal(r.status, 201, r.text);
    assert.deepEqual(Object.keys(r.body).sort(), ['created_at', 'epoch', 'id', 'last_seq', 'name', 'owner_id', 'private']);
    assert.equal(r.body.id, id);
    assert.equal(r.body.name, 'Secret');
    assert.equal(r.body.private, true);
    assert.equal(r.body.owner_id, 'pv-owner');
    assert.equal(r.body.last_seq, 0);
    assert.equal(typeof r.body.epoch, 'string');
    assert.ok(r.body.epoch.length > 0);
    const created = Date.parse(r.body.created_at);
    assert.ok(!Number.isNaN(created), r.body.created_at);
    assert.ok(Math.abs(created - before) < 60000, `created_at ${r.body.created_at}`);
  });

  it('non-member: forbidden on join, send, sync, presence, typing; leave → ok:true', async () => {
    const [id] = await privateRoom('pv-o1');
    const s = await h.connect(url, h.userToken('pv-outsider'));
    assertAckError(assert, await ack(s, 'join', { room: id }), 'forbidden');
    assertAckError(assert, await ack(s, 'send', { room: id, content: 'x' }), 'forbidden');
    assertAckError(assert, await ack(s, 'send', { room: id, content: 'x', client_id: 'c1' }), 'forbidden');
    assertAckError(assert, await ack(s, 'sync', { room: id, since_seq: 0 }), 'forbidden');
    assertAckError(assert, await ack(s, 'presence', { room: id }), 'forbidden');
    assertAckError(assert, await ack(s, 'typing', { room: id }), 'forbidden');
    assert.deepEqual(await ack(s, 'leave', { room: id }), { ok: true });
  });

  it('non-member: 403 forbidden on GET and POST messages', async () => {
    const [id] = await privateRoom('pv-o2');
    const t = h.userToken('pv-outsider2');
    assertHttpError(assert, await h.http(url, 'GET', `/api/v1/rooms/${id}/messages`, t), 403, 'forbidden');
    assertHttpError(assert, await h.http(url, 'POST', `/api/v1/rooms/${id}/messages`, t, { content: 'x' }), 403, 'forbidden');
    // nothing was stored
    const own = await h.http(url, 'GET', `/api/v1/rooms/${id}/messages`, h.userToken('pv-o2'));
    assert.deepEqual(own.body, { items: [], more: false });
  });

  it('a non-member receives nothing of the room', async () => {
    const [id] = await privateRoom('pv-o3');
    const owner = await h.connect(url, h.userToken('pv-o3'));
    const outsider = await h.connect(url, h.userToken('pv-outsider3'));
    assert.equal((await ack(owner, 'join', { room: id })).ok, true);
    assertAckError(assert, await ack(outsider, 'join', { room: id }), 'forbidden');
    const got = h.collect(outsider, 'message');
    const mark = h.waitFor(owner, 'message', (m) => m.content === 'secret');
    assert.equal((await ack(owner, 'send', { room: id, content: 'secret' })).ok, true);
    await mark;
    await h.sleep(300);
    assert.deepEqual(got, []);
  });

  it('the owner can use the room; the owner adds a member → the member can join, send, sync', async () => {
    const [id] = await privateRoom('pv-o4');
    const owner = await h.connect(url, h.userToken('pv-o4'));
    assert.equal((await ack(owner, 'join', { room: id })).ok, true);
    assert.equal((await ack(owner, 'send', { room: id, content: 'hello' })).ok, true);
    const member = await h.connect(url, h.userToken('pv-member'));
    assertAckError(assert, await ack(member, 'join', { room: id }), 'forbidden');
    const add = await h.http(url, 'POST', `/api/v1/rooms/${id}/members`, h.userToken('pv-o4'), { user_id: 'pv-member' });
    assert.equal(add.status, 204, add.text);
    assert.equal(add.text, '');
    const j = await ack(member, 'join', { room: id });
    assert.equal(j.ok, true, JSON.stringify(j));
    assert.deepEqual(j.history.map((m) => m.content), ['hello']);
    assert.equal((await ack(member, 'send', { room: id, content: 'hi' })).ok, true);
    assert.equal((await ack(member, 'sync', { room: id, since_seq: 0 })).messages.length, 2);
    assert.equal((await ack(member, 'presence', { room: id })).ok, true);
    assert.deepEqual(await ack(member, 'typing', { room: id }), { ok: true });
    const g = await h.http(url, 'GET', `/api/v1/rooms/${id}/messages`, h.userToken('pv-member'));
    assert.equal(g.status, 200);
    assert.equal(g.body.items.length, 2);
    // adding twice is fine
    const again = await h.http(url, 'POST', `/api/v1/rooms/${id}/members`, h.userToken('pv-o4'), { user_id: 'pv-member' });
    assert.equal(again.status, 204, again.text);
  });

  it('an admin token can join, send and read without membership', async () => {
    const [id] = await privateRoom('pv-o5');
    const admin = await h.connect(url, h.adminToken('pv-admin'));
    const j = await ack(admin, 'join', { room: id });
    assert.equal(j.ok, true, JSON.stringify(j));
    const r = await ack(admin, 'send', { room: id, content: 'admin here' });
    assert.equal(r.ok, true);
    assert.equal(r.message.user_id, 'pv-admin');
    assert.equal((await ack(admin, 'sync', { room: id, since_seq: 0 })).ok, true);
    assert.equal((await ack(admin, 'presence', { room: id })).ok, true);
    const g = await h.http(url, 'GET', `/api/v1/rooms/${id}/messages`, h.adminToken('pv-admin'));
    assert.equal(g.status, 200);
  });

  it('an admin can add members to a room it does not own', async () => {
    const [id] = await privateRoom('pv-o6');
    const add = await h.http(url, 'POST', `/api/v1/rooms/${id}/members`, h.adminToken('pv-admin2'), { user_id: 'pv-m6' });
    assert.equal(add.status, 204, add.text);
    const m = await h.connect(url, h.userToken('pv-m6'));
    assert.equal((await ack(m, 'join', { room: id })).ok, true);
  });

  it('members endpoint: non-owner → 403; member (non-owner) → 403; missing room → 404', async () => {
    const [id] = await privateRoom('pv-o7');
    assertHttpError(assert, await h.http(url, 'POST', `/api/v1/rooms/${id}/members`, h.userToken('pv-other'), { user_id: 'x' }), 403, 'forbidden');
    await h.addMember(url, h.userToken('pv-o7'), id, 'pv-m7');
    assertHttpError(assert, await h.http(url, 'POST', `/api/v1/rooms/${id}/members`, h.userToken('pv-m7'), { user_id: 'y' }), 403, 'forbidden');
    // on a public room too, only the owner or an admin
    const pub = h.roomId('pub');
    await h.createRoom(url, h.userToken('pv-o7'), pub);
    assertHttpError(assert, await h.http(url, 'POST', `/api/v1/rooms/${pub}/members`, h.userToken('pv-other'), { user_id: 'x' }), 403, 'forbidden');
    assertHttpError(assert, await h.http(url, 'POST', '/api/v1/rooms/no-such-room-m/members', h.userToken('pv-o7'), { user_id: 'x' }), 404, 'not_found');
  });

  it('members endpoint: user_id of 1 and 128 characters ok, 129 / empty / missing / wrong type → 400', async () => {
    const [id] = await privateRoom('pv-o8');
    const t = h.userToken('pv-o8');
    const post = (body) => h.http(url, 'POST', `/api/v1/rooms/${id}/members`, t, body);
    assert.equal((await post({ user_id: 'a' })).status, 204);
    const u128 = '😀'.repeat(128);
    assert.equal((await post({ user_id: u128 })).status, 204);
    assert.equal((await post({ user_id: 'u'.repeat(128) })).status, 204);
    assertHttpError(assert, await post({ user_id: 'u'.repeat(129) }), 400, 'bad_request');
    assertHttpError(assert, await post({ user_id: '😀'.repeat(129) }), 400, 'bad_request');
    assertHttpError(assert, await post({ user_id: '' }), 400, 'bad_request');
    assertHttpError(assert, await post({}), 400, 'bad_request');
    assertHttpError(assert, await post({ user_id: 5 }), 400, 'bad_request');
    assertHttpError(assert, await post('not json'), 400, 'bad_request');
    // the emoji user can join with a token for that sub
    const s = await h.connect(url, h.userToken(u128));
    assert.equal((await ack(s, 'join', { room: id })).ok, true);
  });

  it('members endpoint: 401 without a token', async () => {
    const [id] = await privateRoom('pv-o9');
    assertHttpError(assert, await h.http(url, 'POST', `/api/v1/rooms/${id}/members`, null, { user_id: 'x' }), 401, 'auth_required');
  });

  it('POST rooms with a taken id → 409 (public or private, any caller)', async () => {
    const [id] = await privateRoom('pv-o10');
    assertHttpError(assert, await h.http(url, 'POST', '/api/v1/rooms', h.userToken('pv-o10'), { id }), 409);
    assertHttpError(assert, await h.http(url, 'POST', '/api/v1/rooms', h.userToken('pv-someone'), { id, private: true }), 409);
    assertHttpError(assert, await h.http(url, 'POST', '/api/v1/rooms', h.adminToken('pv-adm'), { id }), 409);
  });

  it('POST rooms: bad input → 400', async () => {
    const t = h.userToken('pv-o11');
    const post = (body) => h.http(url, 'POST', '/api/v1/rooms', t, body);
    for (const bad of ['Bad', '', 'x'.repeat(65), 'a b', 5, null]) {
      assertHttpError(assert, await post({ id: bad }), 400, 'bad_request');
    }
    assertHttpError(assert, await post({}), 400, 'bad_request');
    assertHttpError(assert, await post({ id: h.roomId('ok'), private: 'yes' }), 400, 'bad_request');
    assertHttpError(assert, await post({ id: h.roomId('ok'), name: 5 }), 400, 'bad_request');
    assertHttpError(assert, await post('{"id":'), 400, 'bad_request');
    assertHttpError(assert, await post([]), 400, 'bad_request');
  });

  it('POST rooms: name null and private null behave as absent; no name → name is the id', async () => {
    const t = h.userToken('pv-o12');
    const id = h.roomId('nn');
    const r = await h.http(url, 'POST', '/api/v1/rooms', t, { id, name: null, private: null });
    assert.equal(r.status, 201, r.text);
    assert.equal(r.body.name, id);
    assert.equal(r.body.private, false);
    const id2 = h.roomId('nn');
    const r2 = await h.http(url, 'POST', '/api/v1/rooms', t, { id: id2, extra_field: 1 });
    assert.equal(r2.status, 201, r2.text);
    assert.equal(r2.body.name, id2);
  });
});

describe('GET /api/v1/rooms', () => {
  let srv;
  let url;
  const pub = [];
  const privA = [];
  const privB = [];
  before(async () => {
    srv = await h.startServer({ env: { TSUNAGI_SEND_RATE: '0' } });
    url = srv.url;
    // ids chosen so the id order interleaves kinds
    for (let i = 0; i < 7; i++) {
      const id = `room-${String(i * 3).padStart(2, '0')}`;
      await h.createRoom(url, h.userToken('lr-x'), id);
      pub.push(id);
    }
    for (let i = 0; i < 3; i++) {
      const id = `room-${String(i * 3 + 1).padStart(2, '0')}`;
      await h.createRoom(url, h.userToken('lr-a'), id, { private: true, name: `A${i}` });
      privA.push(id);
    }
    for (let i = 0; i < 3; i++) {
      const id = `room-${String(i * 3 + 2).padStart(2, '0')}`;
      await h.createRoom(url, h.userToken('lr-b'), id, { private: true });
      privB.push(id);
    }
    // lr-m is a member of privB[1]
    await h.addMember(url, h.userToken('lr-b'), privB[1], 'lr-m');
  });
  after(async () => { h.closeAll(); if (srv) await srv.destroy(); });

  async function listAll(token, limit) {
    const get = (p) => h.http(url, 'GET', p, token);
    const { items, pages } = await h.keysetPages(get, '/api/v1/rooms', limit, 49);
    return { ids: items.map((x) => x.id), pages };
  }
  const sorted = (a) => [...a].sort();

  it('a user sees public rooms and the private rooms it belongs to, ordered by id', async () => {
    const r = await h.http(url, 'GET', '/api/v1/rooms', h.userToken('lr-m'));
    assert.equal(r.status, 200, r.text);
    assert.deepEqual(r.body.items.map((x) => x.id), sorted([...pub, privB[1]]));
    assert.equal(r.body.next_cursor, null);
    for (const it of r.body.items) {
      assert.deepEqual(Object.keys(it).sort(), ['created_at', 'epoch', 'id', 'last_seq', 'name', 'owner_id', 'private']);
    }
  });

  it('an owner sees its own private rooms; a stranger only public ones', async () => {
    const a = await h.http(url, 'GET', '/api/v1/rooms', h.userToken('lr-a'));
    assert.deepEqual(a.body.items.map((x) => x.id), sorted([...pub, ...privA]));
    const byId = Object.fromEntries(a.body.items.map((x) => [x.id, x]));
    assert.equal(byId[privA[0]].name, 'A0');
    assert.equal(byId[privA[0]].private, true);
    assert.equal(byId[privA[0]].owner_id, 'lr-a');
    assert.equal(byId[pub[0]].name, pub[0], 'a room without name has its id as name');
    assert.equal(byId[pub[0]].private, false);
    const s = await h.http(url, 'GET', '/api/v1/rooms', h.userToken('lr-stranger'));
    assert.deepEqual(s.body.items.map((x) => x.id), sorted(pub));
  });

  it('an admin sees all rooms', async () => {
    const r = await h.http(url, 'GET', '/api/v1/rooms', h.adminToken('lr-admin'));
    assert.deepEqual(r.body.items.map((x) => x.id), sorted([...pub, ...privA, ...privB]));
  });

  it('keyset pagination: limit + cursor walk every visible room once, next_cursor null at the end', async () => {
    const all = sorted([...pub, ...privA]);
    for (const limit of [1, 2, 3, 4, 10, 500]) {
      const { ids, pages } = await listAll(h.userToken('lr-a'), limit);
      assert.deepEqual(ids, all, `limit ${limit}`);
      assert.equal(pages, Math.max(1, Math.ceil(all.length / limit)), `pages for limit ${limit}`);
    }
    const admin = await listAll(h.adminToken('lr-admin'), 4);
    assert.deepEqual(admin.ids, sorted([...pub, ...privA, ...privB]));
  });

  it('the first page with a limit has next_cursor; rooms created later after the cursor appear', async () => {
    const t = h.userToken('lr-stranger2');
    const p1 = await h.http(url, 'GET', '/api/v1/rooms?limit=2', t);
    assert.deepEqual(p1.body.items.map((x) => x.id), sorted(pub).slice(0, 2));
    assert.equal(typeof p1.body.next_cursor, 'string');
    await h.createRoom(url, t, 'room-zz-late');
    const rest = [];
    let cursor = p1.body.next_cursor;
    while (cursor) {
      const r = await h.http(url, 'GET', `/api/v1/rooms?limit=2&cursor=${encodeURIComponent(cursor)}`, t);
      assert.equal(r.status, 200, r.text);
      rest.push(...r.body.items.map((x) => x.id));
      cursor = r.body.next_cursor;
    }
    assert.deepEqual(rest, [...sorted(pub).slice(2), 'room-zz-late']);
  });

  it('limit default 50; limit 0, 501, -1, abc → 400', async () => {
    const t = h.adminToken('lr-admin');
    for (let i = 0; i < 45; i++) await h.createRoom(url, t, `zz-bulk-${String(i).padStart(2, '0')}`);
    const r = await h.http(url, 'GET', '/api/v1/rooms', t);
    assert.equal(r.status, 200);
    assert.equal(r.body.items.length, 50);
    assert.equal(typeof r.body.next_cursor, 'string');
    const total = 7 + 3 + 3 + 1 + 45;
    const r2 = await h.http(url, 'GET', '/api/v1/rooms?limit=500', t);
    assert.equal(r2.body.items.length, total);
    assert.equal(r2.body.next_cursor, null);
    for (const bad of ['0', '501', '-1', 'abc', '1.5']) {
      assertHttpError(assert, await h.http(url, 'GET', `/api/v1/rooms?limit=${bad}`, t), 400, 'bad_request');
    }
  });

  it('401 without a token', async () => {
    assertHttpError(assert, await h.http(url, 'GET', '/api/v1/rooms'), 401, 'auth_required');
  });
});
