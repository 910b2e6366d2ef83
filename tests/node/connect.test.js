'use strict';
// PROTOCOL.md §2 and §3: the handshake token, connect_error codes, both transports, SIGTERM.

const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const crypto = require('node:crypto');
const h = require('./harness');

describe('connect', () => {
  let srv;
  before(async () => { srv = await h.startServer({ env: { TSUNAGI_SEND_RATE: '0' } }); });
  after(async () => { h.closeAll(); if (srv) await srv.destroy(); });

  const now = () => Math.floor(Date.now() / 1000);

  async function expectCode(auth, code, opts) {
    const err = await h.connectError(srv.url, auth, opts);
    assert.ok(err.data, `connect_error without data: ${err.message}`);
    assert.equal(err.data.code, code, `connect_error data ${JSON.stringify(err.data)}`);
  }

  it('no auth object at all → auth_required', async () => {
    await expectCode(undefined, 'auth_required');
  });

  it('auth without token → auth_required', async () => {
    await expectCode({}, 'auth_required');
  });

  it('garbage token → invalid_token', async () => {
    await expectCode({ token: 'not-a-jwt' }, 'invalid_token');
    await expectCode({ token: 'a.b.c' }, 'invalid_token');
  });

  it('token signed with a wrong key → invalid_token', async () => {
    const t = h.mintToken('alice', {}, { secret: 'another-secret-of-sufficient-length-xyz' });
    await expectCode({ token: t }, 'invalid_token');
  });

  it('token with a tampered payload → invalid_token', async () => {
    const good = h.userToken('alice');
    const [hd, , sig] = good.split('.');
    const body = Buffer.from(JSON.stringify({ sub: 'mallory', exp: now() + 3600, role: 'admin' })).toString('base64url');
    await expectCode({ token: `${hd}.${body}.${sig}` }, 'invalid_token');
  });

  it('alg none → invalid_token', async () => {
    const t = h.mintToken('alice', {}, { header: { alg: 'none', typ: 'JWT' }, signature: '' });
    await expectCode({ token: t }, 'invalid_token');
    const t2 = h.mintToken('alice', { role: 'admin' }, { header: { alg: 'none' }, signature: '' });
    await expectCode({ token: t2 }, 'invalid_token');
  });

  it('a wrong algorithm (HS512 with the right secret) → invalid_token', async () => {
    const header = Buffer.from(JSON.stringify({ alg: 'HS512', typ: 'JWT' })).toString('base64url');
    const body = Buffer.from(JSON.stringify({ sub: 'alice', exp: now() + 3600 })).toString('base64url');
    const sig = crypto.createHmac('sha512', h.SECRET).update(`${header}.${body}`).digest('base64url');
    await expectCode({ token: `${header}.${body}.${sig}` }, 'invalid_token');
  });

  it('expired token → token_expired', async () => {
    const t = h.mintToken('alice', { exp: now() - 3600 });
    await expectCode({ token: t }, 'token_expired');
  });

  it('token without exp → invalid_token', async () => {
    const t = h.mintToken('alice', { exp: undefined });
    await expectCode({ token: t }, 'invalid_token');
  });

  it('token without sub → invalid_token', async () => {
    const t = h.mintToken(undefined, {});
    await expectCode({ token: t }, 'invalid_token');
  });

  it('bad tokens are refused over long-polling too', async () => {
    await expectCode({}, 'auth_required', { transports: ['polling'] });
    await expectCode({ token: 'garbage' }, 'invalid_token', { transports: ['polling'] });
    await expectCode({ token: h.mintToken('alice', { exp: now() - 3600 }) }, 'token_expired', { transports: ['polling'] });
  });

  it('valid token connects over websocket and can use events', async () => {
    const t = h.userToken('ws-user');
    const room = h.roomId('conn');
    await h.createRoom(srv.url, t, room);
    const s = await h.connect(srv.url, t, { transports: ['websocket'] });
    assert.equal(s.connected, true);
    assert.equal(s.io.engine.transport.name, 'websocket');
    const j = await h.ack(s, 'join', { room });
    assert.equal(j.ok, true);
    const r = await h.ack(s, 'send', { room, content: 'over ws' });
    assert.equal(r.ok, true);
    assert.equal(r.message.user_id, 'ws-user');
    s.close();
  });

  it('valid token connects over long-polling only and receives broadcasts', async () => {
    const t = h.userToken('poll-user');
    const room = h.roomId('conn');
    await h.createRoom(srv.url, t, room);
    const s = await h.connect(srv.url, t, { transports: ['polling'] });
    assert.equal(s.connected, true);
    assert.equal(s.io.engine.transport.name, 'polling');
    const j = await h.ack(s, 'join', { room });
    assert.equal(j.ok, true);
    assert.equal(j.room, room);
    const got = h.waitFor(s, 'message', (m) => m.content === 'over polling');
    const r = await h.ack(s, 'send', { room, content: 'over polling', client_id: 'p1' });
    assert.equal(r.ok, true);
    const m = await got;
    assert.deepEqual(m, r.message);
    // a message sent by someone else reaches the polling socket too
    const other = await h.connect(srv.url, h.userToken('poll-other'));
    const got2 = h.waitFor(s, 'message', (x) => x.content === 'from ws');
    assert.equal((await h.ack(other, 'send', { room, content: 'from ws' })).ok, true);
    assert.equal((await got2).user_id, 'poll-other');
    assert.equal(s.io.engine.transport.name, 'polling');
    s.close();
    other.close();
  });

  it('default client transports (polling then upgrade to websocket) work', async () => {
    const t = h.userToken('upgrade-user');
    const room = h.roomId('conn');
    await h.createRoom(srv.url, t, room);
    const s = await h.connect(srv.url, t, { transports: ['polling', 'websocket'] });
    await h.until(() => s.io.engine.transport.name === 'websocket', 10000, 'upgrade to websocket');
    const j = await h.ack(s, 'join', { room });
    assert.equal(j.ok, true);
    const r = await h.ack(s, 'send', { room, content: 'after upgrade' });
    assert.equal(r.ok, true);
    s.close();
  });

  it('the identity is the token sub, role and name do not change it', async () => {
    const t = h.mintToken('named-user', { name: 'Named User', role: 'user' });
    const room = h.roomId('conn');
    await h.createRoom(srv.url, t, room);
    const s = await h.connect(srv.url, t);
    const r = await h.ack(s, 'send', { room, content: 'x' });
    assert.equal(r.ok, true);
    assert.equal(r.message.user_id, 'named-user');
    s.close();
  });

  it('SIGTERM stops the server with exit code 0 and disconnects its sockets', async () => {
    const s = await h.connect(srv.url, h.userToken('term-user'));
    const disconnected = new Promise((resolve) => s.on('disconnect', resolve));
    const res = await srv.stop();
    assert.deepEqual(res, { code: 0, signal: null });
    await h.withTimeout(disconnected, 10000, 'socket disconnect after SIGTERM');
  });
});
