'use strict';
// PROTOCOL §7 "TSUNAGI_TRUSTED_PROXIES" and the per-address limits, from outside: the client
// address behind a trusted proxy (X-Forwarded-For, simulated from 127.0.0.1), failed logins per
// address (never locking the account for other addresses), registrations per address,
// concurrent connections per address; and role changes reaching tokens issued before them.

const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const h = require('./harness');
const { ack, assertAckError, assertHttpError, registerUser } = h;

const api = h.http;
const xff = (ip) => ({ 'x-forwarded-for': ip });
const loginFrom = (url, ip, login, password) =>
  api(url, 'POST', '/api/v1/auth/login', null, { login, password }, xff(ip));

function assertRetryAfter(r, maxSeconds) {
  assertHttpError(assert, r, 429, 'rate_limited');
  const retry = r.headers.get('retry-after');
  assert.match(retry || '', /^\d+$/, `Retry-After ${retry}`);
  assert.ok(Number(retry) >= 1 && Number(retry) <= maxSeconds, `Retry-After ${retry}`);
  assert.equal(typeof r.body.error.retry_after_ms, 'number', r.text);
}

describe('failed logins per client address (behind a trusted proxy)', () => {
  let srv;
  let url;
  before(async () => {
    srv = await h.startServer({ env: { TSUNAGI_TRUSTED_PROXIES: '127.0.0.1/32' } });
    url = srv.url;
  });
  after(async () => { h.closeAll(); if (srv) await srv.destroy(); });

  it('10 failures from A → the 11th and a right password from A get 429; B logs into the same account', async () => {
    const victim = await registerUser(url, { username: 'victim_addr' });
    const A = '203.0.113.10';
    const B = '198.51.100.20';
    for (let i = 0; i < 10; i++) {
      // unknown logins and wrong passwords both count
      const name = i % 2 ? 'victim_addr' : `nobody_${i}`;
      assertHttpError(assert, await loginFrom(url, A, name, 'wrong password 123'), 401, 'auth_required');
    }
    assertRetryAfter(await loginFrom(url, A, 'victim_addr', 'wrong password 123'), 60);
    assertRetryAfter(await loginFrom(url, A, 'victim_addr', victim.password), 60);
    // another address: the account is not locked
    const b = await loginFrom(url, B, 'victim_addr', victim.password);
    assert.equal(b.status, 200, b.text);
    // the proxy itself (no header) is a third address
    assert.equal((await h.http(url, 'POST', '/api/v1/auth/login', null,
      { login: 'victim_addr', password: victim.password })).status, 200);
    // the rightmost untrusted entry is the client: a spoofed leftmost entry changes nothing
    assertRetryAfter(await loginFrom(url, `192.0.2.99, ${A}`, 'victim_addr', victim.password), 60);
    // successful logins from B do not consume its failure budget
    for (let i = 0; i < 5; i++) {
      assert.equal((await loginFrom(url, B, 'victim_addr', victim.password)).status, 200);
    }
  });

  it('the budget refills: after Retry-After, A may log in again', async () => {
    const u = await registerUser(url, { username: 'refill_addr' });
    const A = '203.0.113.77';
    for (let i = 0; i < 10; i++) await loginFrom(url, A, 'refill_addr', 'wrong password 123');
    const limited = await loginFrom(url, A, 'refill_addr', u.password);
    assertRetryAfter(limited, 60);
    await h.sleep(Number(limited.headers.get('retry-after')) * 1000 + 300);
    const again = await loginFrom(url, A, 'refill_addr', u.password);
    assert.equal(again.status, 200, again.text);
  });
});

describe('without trusted proxies X-Forwarded-For is ignored', () => {
  let srv;
  let url;
  before(async () => {
    srv = await h.startServer({ env: { TSUNAGI_LOGIN_FAILURES_PER_ADDRESS: '3' } });
    url = srv.url;
  });
  after(async () => { h.closeAll(); if (srv) await srv.destroy(); });

  it('every request is the peer, whatever the header says', async () => {
    const u = await registerUser(url, { username: 'no_proxy_user' });
    for (let i = 0; i < 3; i++) {
      assertHttpError(assert, await loginFrom(url, `203.0.113.${i + 1}`, 'no_proxy_user', 'wrong password 123'),
        401, 'auth_required');
    }
    assertRetryAfter(await loginFrom(url, '198.51.100.1', 'no_proxy_user', u.password), 60);
    assertRetryAfter(await h.http(url, 'POST', '/api/v1/auth/login', null,
      { login: 'no_proxy_user', password: u.password }), 60);
  });
});

describe('registrations per client address', () => {
  let srv;
  let url;
  before(async () => {
    srv = await h.startServer({
      env: { TSUNAGI_TRUSTED_PROXIES: '127.0.0.1/32', TSUNAGI_REGISTER_RATE_PER_ADDRESS: '3' },
    });
    url = srv.url;
  });
  after(async () => { h.closeAll(); if (srv) await srv.destroy(); });

  const reg = (ip, name) => api(url, 'POST', '/api/v1/auth/register', null,
    { username: name, email: `${name}@example.com`, password: 'Staple-Battery-Horse-9137' }, xff(ip));

  it('past the budget → 429 with Retry-After; another address registers', async () => {
    const A = '203.0.113.5';
    // a refused body (400) comes first and costs nothing
    assertHttpError(assert, await api(url, 'POST', '/api/v1/auth/register', null, { username: 'x' }, xff(A)),
      400, 'bad_request');
    for (let i = 0; i < 3; i++) assert.equal((await reg(A, `reg_a_${i}`)).status, 201);
    assertRetryAfter(await reg(A, 'reg_a_3'), 60);
    assert.equal((await reg('198.51.100.5', 'reg_b_0')).status, 201);
  });
});

describe('concurrent connections per client address', () => {
  let srv;
  let url;
  before(async () => {
    srv = await h.startServer({
      env: { TSUNAGI_TRUSTED_PROXIES: '127.0.0.1/32', TSUNAGI_CONNECTIONS_PER_ADDRESS: '2' },
    });
    url = srv.url;
  });
  after(async () => { h.closeAll(); if (srv) await srv.destroy(); });

  const from = (ip, transports = ['websocket']) => ({ extraHeaders: xff(ip), transports });

  it('past the limit → connect_error rate_limited; other addresses connect; a disconnect frees a slot', async () => {
    const token = h.userToken('conn-user');
    const A = '203.0.113.40';
    const a1 = await h.connect(url, token, from(A));
    const a2 = await h.connect(url, token, from(A, ['polling']));
    const err = await h.connectError(url, { token }, from(A));
    assert.equal(err.data.code, 'rate_limited', JSON.stringify(err.data));
    assert.equal(typeof err.data.message, 'string');
    assert.equal(typeof err.data.retry_after_ms, 'number');
    const pollErr = await h.connectError(url, { token }, from(A, ['polling']));
    assert.equal(pollErr.data.code, 'rate_limited');
    // a bad token from a full address is refused too (no slot, whatever the token)
    assert.equal((await h.connectError(url, { token: 'garbage' }, from(A))).data.code, 'rate_limited');

    const b1 = await h.connect(url, token, from('198.51.100.40'));
    assert.equal(b1.connected, true);
    const b2 = await h.connect(url, token, from('198.51.100.40', ['polling']));
    assert.equal(b2.connected, true);
    // the connected ones work
    assert.equal((await ack(a2, 'presence', { room: 'nowhere' })).ok, false);

    a1.close();
    let a3 = null;
    await h.until(async () => {
      try { a3 = await h.connect(url, token, from(A)); return true; } catch { return false; }
    }, 10000, 'a slot to free after a disconnect');
    assert.equal(a3.connected, true);
    // a polling session that ends frees its slot too
    a2.close();
    await h.until(async () => {
      try { await h.connect(url, token, from(A, ['polling'])); return true; } catch { return false; }
    }, 10000, 'a slot to free after a polling disconnect');
    const m = await api(url, 'GET', '/metrics');
    assert.ok(h.metricValue(m.text, 'tsunagi_rate_limited_total', { limiter: 'connections_per_address' }) >= 3,
      'refusals are counted');
  });
});

/** The ack of an event, or 'gone' if the socket is disconnected first. */
function ackOrGone(socket, event, payload) {
  return new Promise((resolve) => {
    if (!socket.connected) { resolve('gone'); return; }
    const gone = () => resolve('gone');
    socket.once('disconnect', gone);
    socket.timeout(10000).emit(event, payload, (err, res) => {
      socket.off('disconnect', gone);
      resolve(err ? 'gone' : res);
    });
  });
}

function assertForbiddenOrGone(res) {
  if (res !== 'gone') assertAckError(assert, res, 'forbidden');
}

describe('role changes reach tokens issued before them', () => {
  let srv;
  let url;
  const ADMIN = h.adminToken('roles-admin'); // minted by "the backend": not registered here
  before(async () => {
    srv = await h.startServer({ env: { TSUNAGI_SEND_RATE: '0' } });
    url = srv.url;
  });
  after(async () => { h.closeAll(); if (srv) await srv.destroy(); });

  const setRole = async (id, role) => {
    const r = await api(url, 'PATCH', `/api/v1/users/${id}`, ADMIN, { role });
    assert.equal(r.status, 200, r.text);
  };
  const stats = (token) => api(url, 'GET', '/api/v1/admin/stats', token);

  it('promoted then demoted: an old token loses admin rights at once, over HTTP and on a connected socket', async () => {
    const owner = await registerUser(url, { username: 'roles_owner' });
    const room = h.roomId('roles');
    await h.createRoom(url, owner.token, room, { private: true });
    const boss = await registerUser(url, { username: 'roles_boss' });
    const registerToken = boss.token; // role user, issued before any change
    assertHttpError(assert, await stats(registerToken), 403, 'forbidden');
    const userSocket = await h.connect(url, registerToken);
    assertAckError(assert, await ack(userSocket, 'join', { room }), 'forbidden');

    // promotion reaches the token issued before it, and its connected socket
    await setRole(boss.user.id, 'admin');
    assert.equal((await stats(registerToken)).status, 200);
    const promotedJoin = await ack(userSocket, 'join', { room });
    assert.equal(promotedJoin.ok, true, JSON.stringify(promotedJoin));

    const adminLogin = (await h.http(url, 'POST', '/api/v1/auth/login', null,
      { login: 'roles_boss', password: boss.password })).body.token;
    assert.equal(h.jwtClaims(adminLogin).role, 'admin');
    assert.equal(typeof h.jwtClaims(adminLogin).iat, 'number', 'tokens say when they were issued');
    const adminSocket = await h.connect(url, adminLogin);
    assert.equal((await ack(adminSocket, 'join', { room })).ok, true);
    assert.equal((await stats(adminLogin)).status, 200);

    // demotion: every token issued before it is a user's again at once over HTTP; an open
    // socket's next event runs as a user, and sockets that acted as admins are disconnected
    // within the sweep (2 s), so rooms joined as an admin stop delivering
    const t0 = Date.now();
    await setRole(boss.user.id, 'user');
    assertHttpError(assert, await stats(adminLogin), 403, 'forbidden');
    assertHttpError(assert, await stats(registerToken), 403, 'forbidden');
    assertHttpError(assert, await api(url, 'GET', `/api/v1/rooms/${room}/messages`, adminLogin), 403, 'forbidden');
    assertForbiddenOrGone(await ackOrGone(adminSocket, 'join', { room }));
    assertForbiddenOrGone(await ackOrGone(adminSocket, 'send', { room, content: 'x' }));
    assertForbiddenOrGone(await ackOrGone(userSocket, 'sync', { room, since_seq: 0 }));
    await h.until(() => !adminSocket.connected && !userSocket.connected, 5000, 'demoted sockets to be closed');
    const took = Date.now() - t0;
    assert.ok(took < 3500, `demoted sockets closed after ${took} ms`);
    const fresh = await h.connect(url, adminLogin);
    assertForbiddenOrGone(await ackOrGone(fresh, 'join', { room }));

    // a backend token without iat cannot be placed after the change: the stored role wins;
    // one issued after the change keeps its claim (the application's backend decided)
    assertHttpError(assert, await stats(h.adminToken(boss.user.id)), 403, 'forbidden');
    const later = h.mintToken(boss.user.id, { role: 'admin', iat: Math.floor(Date.now() / 1000) + 2 });
    assert.equal((await stats(later)).status, 200);
  });

  it('tokens of users not registered here keep their claim; a registered user whose role never changed too', async () => {
    assert.equal((await stats(h.adminToken('backend-only-admin'))).status, 200);
    const plain = await registerUser(url, { username: 'roles_plain' });
    // the application's backend may mint an admin token for an account whose role never changed here
    assert.equal((await stats(h.mintToken(plain.user.id, { role: 'admin' }))).status, 200);
  });
});

describe('tsunagi make-admin reaches tokens issued before it', () => {
  let srv;
  let url;
  before(async () => {
    // without Redis the running server learns of the change when its L1 entry expires
    srv = await h.startServer({ env: { TSUNAGI_CACHE_L1_TTL_S: '1' } });
    url = srv.url;
  });
  after(async () => { h.closeAll(); if (srv) await srv.destroy(); });

  it('an existing token is an admin within the cache TTL (at once with Redis)', async () => {
    const { execFileSync } = require('node:child_process');
    const u = await registerUser(url, { username: 'cli_promoted' });
    const stats = () => api(url, 'GET', '/api/v1/admin/stats', u.token);
    assertHttpError(assert, await stats(), 403, 'forbidden');
    execFileSync(h.BIN, ['make-admin', 'cli_promoted'], { env: srv.env, cwd: srv.dir, stdio: 'pipe' });
    const t0 = Date.now();
    await h.until(async () => (await stats()).status === 200, 5000, 'the promotion to reach the old token');
    const took = Date.now() - t0;
    if (process.env.TSUNAGI_TEST_REDIS_ALL) assert.ok(took < 500, `${took} ms with Redis`);
  });
});
