'use strict';
// PROTOCOL.md §4/§5 and the README "Accounts" / "Caching" decisions: register, login, users,
// room member listings, RBAC of private rooms for registered accounts, the admin audit log and
// stats, and the users/rooms/members caches across two instances sharing one database and Redis.

const crypto = require('node:crypto');
const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const h = require('./harness');

const { ack, assertAckError, assertHttpError, jwtClaims } = h;

const REDIS = process.env.TSUNAGI_TEST_REDIS || 'redis://127.0.0.1:6379';
const redisPrefix = () => `tsunagi-test-${crypto.randomBytes(6).toString('hex')}`;

// ------------------------------------------------------------ no secrets, ever

// Every plaintext password this file sends: none may come back in any response.
const passwords = new Set();

/**
 * Fails if a response carries a password, its hash, or a key naming either, anywhere.
 * `sent` is the password of the request itself, if any.
 */
function assertNoSecrets(r, what, sent) {
  const where = `${what}: ${r.text.slice(0, 300)}`;
  assert.ok(!r.text.includes('$argon2'), `argon2 hash in ${where}`);
  assert.ok(!/password_hash/i.test(r.text), `password_hash in ${where}`);
  for (const p of passwords) assert.ok(!r.text.includes(p), `a plaintext password in ${where}`);
  if (sent) assert.ok(!r.text.includes(sent), `the request's password echoed in ${where}`);
  (function walk(v) {
    if (Array.isArray(v)) { v.forEach(walk); return; }
    if (v && typeof v === 'object') {
      for (const [k, x] of Object.entries(v)) {
        assert.ok(!/password/i.test(k), `key "${k}" in ${where}`);
        walk(x);
      }
    }
  })(r.body);
}

/** h.http, and every answer checked with assertNoSecrets. */
async function api(base, method, urlPath, token, body) {
  // (short or all-digit passwords could match an id or a timestamp by chance)
  const sent = body && typeof body === 'object' && typeof body.password === 'string'
    && body.password.length >= 10 && /[^0-9]/.test(body.password) ? body.password : null;
  const r = await h.http(base, method, urlPath, token, body);
  assertNoSecrets(r, `${method} ${urlPath}`, sent);
  if (sent && r.status === 201) passwords.add(sent);
  return r;
}

async function registerUser(base, fields = {}) {
  const u = await h.registerUser(base, fields);
  passwords.add(u.password);
  return u;
}
const login = (base, name, password) => api(base, 'POST', '/api/v1/auth/login', null, { login: name, password });
const register = (base, body) => api(base, 'POST', '/api/v1/auth/register', null, body);
const getUser = (base, token, id) => api(base, 'GET', `/api/v1/users/${encodeURIComponent(id)}`, token);
const patchUser = (base, token, id, body) => api(base, 'PATCH', `/api/v1/users/${encodeURIComponent(id)}`, token, body);

// USER as the README defines it; `email` only for the user themself and admins.
const USER_KEYS = ['bio', 'created_at', 'display_name', 'id', 'metadata', 'role', 'updated_at', 'username'];
const RFC3339 = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)$/;

function assertUser(u, { withEmail }) {
  assert.equal(typeof u, 'object');
  assert.ok(u !== null);
  const keys = withEmail ? [...USER_KEYS, 'email'].sort() : USER_KEYS;
  assert.deepEqual(Object.keys(u).sort(), keys, JSON.stringify(u));
  assert.equal(typeof u.id, 'string');
  assert.ok(u.id.length >= 1 && u.id.length <= 128);
  assert.equal(typeof u.username, 'string');
  assert.equal(typeof u.display_name, 'string');
  assert.equal(typeof u.bio, 'string');
  assert.ok(u.role === 'user' || u.role === 'admin', u.role);
  assert.equal(typeof u.metadata, 'object');
  assert.ok(u.metadata !== null && !Array.isArray(u.metadata));
  assert.match(u.created_at, RFC3339);
  assert.match(u.updated_at, RFC3339);
  if (withEmail) assert.equal(typeof u.email, 'string');
}

// ================================================================ register

describe('POST /api/v1/auth/register', () => {
  let srv;
  let url;
  before(async () => { srv = await h.startServer({ env: { TSUNAGI_SEND_RATE: '0' } }); url = srv.url; });
  after(async () => { h.closeAll(); if (srv) await srv.destroy(); });

  it('201 { user, token }: the own USER with email, a token for the new id', async () => {
    const password = 'a perfectly fine passphrase 1';
    const r = await register(url, { username: 'Reg.User-1', email: 'Reg.User@Example.COM', password });
    assert.equal(r.status, 201, r.text);
    assert.match(r.headers.get('content-type'), /application\/json/);
    assert.deepEqual(Object.keys(r.body).sort(), ['token', 'user']);
    const { user, token } = r.body;
    assertUser(user, { withEmail: true });
    assert.equal(user.username, 'Reg.User-1');
    assert.equal(user.email, 'reg.user@example.com', 'emails are stored lower case (README)');
    assert.equal(user.role, 'user');
    assert.equal(user.display_name, 'Reg.User-1', 'display_name defaults to the username');
    assert.equal(user.bio, '');
    assert.deepEqual(user.metadata, {});
    assert.ok(Math.abs(Date.parse(user.created_at) - Date.now()) < 60000, user.created_at);
    const claims = jwtClaims(token);
    assert.equal(claims.sub, user.id);
    assert.equal(claims.role, 'user');
    assert.ok(Number.isInteger(claims.exp) && claims.exp > Date.now() / 1000, `exp ${claims.exp}`);
    // TSUNAGI_TOKEN_TTL_S defaults to 86400 (README)
    assert.ok(Math.abs(claims.exp - (Date.now() / 1000 + 86400)) < 120, `exp ${claims.exp}`);
  });

  it('the token works for HTTP and for Socket.IO (the author is the new id)', async () => {
    const u = await registerUser(url);
    const me = await getUser(url, u.token, u.user.id);
    assert.equal(me.status, 200, me.text);
    assert.deepEqual(me.body, u.user);
    const room = h.roomId('reg');
    const info = await h.createRoom(url, u.token, room);
    assert.equal(info.owner_id, u.user.id);
    const s = await h.connect(url, u.token);
    const j = await ack(s, 'join', { room });
    assert.equal(j.ok, true, JSON.stringify(j));
    const sent = await ack(s, 'send', { room, content: 'hello from an account' });
    assert.equal(sent.ok, true, JSON.stringify(sent));
    assert.equal(sent.message.user_id, u.user.id);
    const posted = await api(url, 'POST', `/api/v1/rooms/${room}/messages`, u.token, { content: 'via http' });
    assert.equal(posted.status, 201, posted.text);
    assert.equal(posted.body.user_id, u.user.id);
  });

  it('a taken username, in any case → 409 conflict', async () => {
    const u = await registerUser(url, { username: 'CaseUser' });
    for (const name of ['CaseUser', 'caseuser', 'CASEUSER', 'cAsEuSeR']) {
      const r = await register(url, { username: name, email: `other-${name}@example.net`, password: 'unrelated phrase 42' });
      assertHttpError(assert, r, 409, 'conflict');
    }
    // the first account is untouched
    assert.equal((await login(url, 'CaseUser', u.password)).status, 200);
  });

  it('a taken email, in any case → 409 conflict', async () => {
    await registerUser(url, { username: 'mail_owner', email: 'Taken.Address@Example.org' });
    for (const email of ['taken.address@example.org', 'TAKEN.ADDRESS@EXAMPLE.ORG', 'Taken.Address@example.ORG']) {
      const r = await register(url, { username: `mail_${crypto.randomBytes(3).toString('hex')}`, email, password: 'unrelated phrase 42' });
      assertHttpError(assert, r, 409, 'conflict');
    }
  });

  it('a weak password → 400 bad_request, and nothing is created', async () => {
    const base = { username: 'weakling', email: 'weak.one@example.com' };
    const weak = [
      'short1!', // 7 characters
      '',
      'password123', // a common password
      'PASSWORD123', // in any case
      'password',
      '12345678',
      'aaaaaaaaaaaa', // one repeated character
      'my-weakling-pass', // contains the username
      'MY-WEAKLING-PASS', // in any case
      'xx-weak.one-yy', // contains the email's local part
      'x'.repeat(64) + 'y'.repeat(65), // 129 characters
    ];
    for (const password of weak) {
      assertHttpError(assert, await register(url, { ...base, password }), 400, 'bad_request');
    }
    // none of them took the name or the address
    const ok = await register(url, { ...base, password: 'a decent passphrase 9' });
    assert.equal(ok.status, 201, ok.text);
  });

  it('password length counts characters (code points), not bytes or UTF-16 units', async () => {
    const emoji = ['😀', '😁', '😂', '🤣', '😃', '😄', '😅', '😆', '😉'];
    const seven = emoji.slice(0, 7).join(''); // 14 UTF-16 units, 28 bytes
    assertHttpError(assert, await register(url, { username: 'emoji_pw', email: 'ep@example.com', password: seven }), 400, 'bad_request');
    const eight = emoji.slice(0, 8).join('');
    const r = await register(url, { username: 'emoji_pw', email: 'ep@example.com', password: eight });
    assert.equal(r.status, 201, r.text);
    assert.equal((await login(url, 'emoji_pw', eight)).status, 200);
    const long = Array.from({ length: 128 }, (_, i) => emoji[i % emoji.length]).join('');
    assert.equal((await register(url, { username: 'emoji_pw2', email: 'ep2@example.com', password: long })).status, 201);
    assertHttpError(assert, await register(url, { username: 'emoji_pw3', email: 'ep3@example.com', password: `${long}😀` }), 400, 'bad_request');
  });

  it('concurrent registrations of one username (any case) or one email: exactly one 201, the rest 409', async () => {
    const names = ['Racer', 'racer', 'RACER', 'rAcEr', 'Racer', 'racer'];
    const rs = await Promise.all(names.map((username, i) =>
      register(url, { username, email: `racer${i}@example.com`, password: 'a racing passphrase' })));
    assert.deepEqual(rs.map((r) => r.status).sort(), [201, 409, 409, 409, 409, 409], rs.map((r) => r.text).join('\n'));
    for (const r of rs.filter((x) => x.status === 409)) assertHttpError(assert, r, 409, 'conflict');
    const mails = await Promise.all([0, 1, 2, 3, 4].map((i) =>
      register(url, { username: `mailracer${i}`, email: i % 2 ? 'Race@Example.com' : 'race@example.com', password: 'a racing passphrase' })));
    assert.deepEqual(mails.map((r) => r.status).sort(), [201, 409, 409, 409, 409], mails.map((r) => r.text).join('\n'));
  });

  it('a malformed username or email → 400 bad_request', async () => {
    const password = 'another good passphrase';
    const badNames = ['ab', 'x'.repeat(33), 'has space', 'at@sign', 'slash/name', 'ünïcödé', '', 'tab\tname'];
    for (const username of badNames) {
      assertHttpError(assert, await register(url, { username, email: 'fine.addr@example.com', password }), 400, 'bad_request');
    }
    const badEmails = ['no-at-sign', 'a@b', '@example.com', 'local@', 'a b@example.com', 'a@b@example.com',
      'a@example..com', '', `${'l'.repeat(65)}@example.com`, 'a@exa mple.com'];
    for (const email of badEmails) {
      assertHttpError(assert, await register(url, { username: 'fine_name', email, password }), 400, 'bad_request');
    }
    // 3 and 32 characters are fine
    assert.equal((await register(url, { username: 'abc', email: 'abc3@example.com', password })).status, 201);
    assert.equal((await register(url, { username: 'y'.repeat(32), email: 'y32@example.com', password })).status, 201);
  });

  it('missing fields, wrong types, not an object, not JSON → 400 bad_request', async () => {
    const ok = { username: 'typed_user', email: 'tu@example.com', password: 'sturdy passphrase 1' };
    const bad = [
      {},
      { email: ok.email, password: ok.password },
      { username: ok.username, password: ok.password },
      { username: ok.username, email: ok.email },
      { ...ok, username: 12345 },
      { ...ok, email: true },
      { ...ok, password: 123456789 },
      { ...ok, password: ['typed passphrase 1'] },
      { ...ok, username: null },
      { ...ok, email: null },
      { ...ok, password: null },
      { ...ok, display_name: 5 },
      [],
      'nope',
      '{"username":',
    ];
    for (const body of bad) {
      assertHttpError(assert, await register(url, body), 400, 'bad_request');
    }
    // an optional display_name sent as null is absent; unknown fields are ignored
    const r = await register(url, { ...ok, display_name: null, role: 'admin', id: 'chosen-id' });
    assert.equal(r.status, 201, r.text);
    assert.equal(r.body.user.display_name, 'typed_user');
    assert.equal(r.body.user.role, 'user', 'a client cannot register itself as admin');
    assert.notEqual(r.body.user.id, 'chosen-id');
    // display_name given
    const d = await register(url, { username: 'named_user', email: 'nu@example.com', password: 'sturdy passphrase 2', display_name: 'Named Ünïcode' });
    assert.equal(d.status, 201, d.text);
    assert.equal(d.body.user.display_name, 'Named Ünïcode');
  });
});

// ================================================================ login

describe('POST /api/v1/auth/login', () => {
  let srv;
  let url;
  let u;
  before(async () => {
    // these cases fail more logins from one address than the default per-address budget (10)
    srv = await h.startServer({ env: { TSUNAGI_LOGIN_FAILURES_PER_ADDRESS: '100' } });
    url = srv.url;
    u = await registerUser(url, { username: 'Login.Me', email: 'Login.Me@Example.com' });
  });
  after(async () => { h.closeAll(); if (srv) await srv.destroy(); });

  it('by username in any case or by email in any case → 200 { user, token }', async () => {
    for (const name of ['Login.Me', 'login.me', 'LOGIN.ME', 'login.me@example.com', 'LOGIN.ME@EXAMPLE.COM']) {
      const r = await login(url, name, u.password);
      assert.equal(r.status, 200, `${name}: ${r.text}`);
      assert.deepEqual(Object.keys(r.body).sort(), ['token', 'user']);
      assertUser(r.body.user, { withEmail: true });
      assert.equal(r.body.user.id, u.user.id);
      assert.equal(r.body.user.email, 'login.me@example.com');
      const claims = jwtClaims(r.body.token);
      assert.equal(claims.sub, u.user.id);
      assert.equal(claims.role, 'user');
      assert.ok(claims.exp > Date.now() / 1000);
    }
  });

  it('the login token works for HTTP and Socket.IO', async () => {
    const r = await login(url, 'Login.Me', u.password);
    const g = await getUser(url, r.body.token, u.user.id);
    assert.equal(g.status, 200, g.text);
    assert.equal(g.body.email, 'login.me@example.com');
    const s = await h.connect(url, r.body.token);
    assert.equal(s.connected, true);
  });

  it('unknown login and wrong password → 401 with the same body (auth_required)', async () => {
    const wrong = await login(url, 'Login.Me', `${u.password}x`);
    assertHttpError(assert, wrong, 401, 'auth_required');
    const wrongCase = await login(url, 'Login.Me', u.password.toUpperCase());
    const unknown = await login(url, 'nobody_here', u.password);
    const unknownMail = await login(url, 'nobody@example.com', u.password);
    for (const r of [wrongCase, unknown, unknownMail]) {
      assert.equal(r.status, 401, r.text);
      assert.deepEqual(r.body, wrong.body, 'one answer for every failed login');
    }
  });

  it('an unknown login costs about what a wrong password costs (no shortcut for unknown names)', async () => {
    const t = await registerUser(url, { username: 'timing_user' });
    const median = (a) => [...a].sort((x, y) => x - y)[Math.floor(a.length / 2)];
    const time = async (name, pw) => {
      const t0 = process.hrtime.bigint();
      const r = await login(url, name, pw);
      assert.equal(r.status, 401, r.text);
      return Number(process.hrtime.bigint() - t0) / 1e6;
    };
    const wrong = [];
    const unknown = [];
    for (let i = 0; i < 5; i++) {
      wrong.push(await time('timing_user', `${t.password}-wrong`));
      unknown.push(await time(`timing_ghost_${i}`, `${t.password}-wrong`));
    }
    // loose on purpose: catches an unknown login that skips the hash (about 0 ms against tens of ms)
    assert.ok(median(unknown) > 0.4 * median(wrong), `unknown ${unknown} ms vs wrong ${wrong} ms`);
  });

  it('missing fields or wrong types → 400 bad_request', async () => {
    const bad = [{}, { login: 'Login.Me' }, { password: u.password }, { login: 5, password: u.password },
      { login: 'Login.Me', password: 5 }, { login: null, password: u.password }, { login: '', password: u.password },
      [], '{"login":'];
    for (const body of bad) {
      assertHttpError(assert, await api(url, 'POST', '/api/v1/auth/login', null, body), 400, 'bad_request');
    }
  });
});

describe('login rate limit (TSUNAGI_LOGIN_RATE)', () => {
  let srv;
  let url;
  const RATE = 30; // per minute, burst the same: one attempt back every 2 s
  // the per-address failure budget (addresses.test.js) is off: this is the per-name limit alone
  before(async () => {
    srv = await h.startServer({ env: { TSUNAGI_LOGIN_RATE: String(RATE), TSUNAGI_LOGIN_FAILURES_PER_ADDRESS: '0' } });
    url = srv.url;
  });
  after(async () => { h.closeAll(); if (srv) await srv.destroy(); });

  it('per login name: past the burst → 429 rate_limited with Retry-After, even with the right password', async () => {
    const u = await registerUser(url, { username: 'limited_user' });
    const other = await registerUser(url, { username: 'other_user' });
    let allowed = 0;
    let limited = null;
    for (let i = 0; i < RATE + 10 && !limited; i++) {
      const r = await login(url, 'limited_user', 'not the password at all');
      if (r.status === 429) limited = r;
      else { assert.equal(r.status, 401, r.text); allowed++; }
    }
    assert.ok(limited, 'no 429 after the burst');
    assert.ok(allowed >= RATE && allowed <= RATE + 2, `${allowed} attempts before 429`);
    assertHttpError(assert, limited, 429, 'rate_limited');
    const retry = limited.headers.get('retry-after');
    assert.match(retry || '', /^\d+$/, `Retry-After ${retry}`);
    assert.ok(Number(retry) >= 1 && Number(retry) <= 60 / RATE + 1, `Retry-After ${retry}`);
    // the right password does not get through while limited, in any case of the name
    assertHttpError(assert, await login(url, 'limited_user', u.password), 429, 'rate_limited');
    assertHttpError(assert, await login(url, 'LIMITED_USER', u.password), 429, 'rate_limited');
    // bad input is still bad_request first (PROTOCOL §5 order)
    assertHttpError(assert, await api(url, 'POST', '/api/v1/auth/login', null, { login: 'limited_user' }), 400, 'bad_request');
    // other login names are not affected
    assert.equal((await login(url, 'other_user', other.password)).status, 200);
    // after Retry-After, the name may log in again
    const last = await login(url, 'limited_user', u.password);
    const wait = Number(last.headers.get('retry-after') || retry);
    await h.sleep(wait * 1000 + 200);
    const again = await login(url, 'limited_user', u.password);
    assert.equal(again.status, 200, again.text);
  });
});

// ================================================================ users

describe('GET and PATCH /api/v1/users/{id}', () => {
  let srv;
  let url;
  let alice;
  let bob;
  const ADMIN = h.adminToken('users-admin');
  before(async () => {
    srv = await h.startServer();
    url = srv.url;
    alice = await registerUser(url, { username: 'alice_u', email: 'alice.u@example.com' });
    bob = await registerUser(url, { username: 'bob_u', email: 'bob.u@example.com' });
  });
  after(async () => { h.closeAll(); if (srv) await srv.destroy(); });

  const audit = async (q) => {
    const r = await api(url, 'GET', `/api/v1/admin/audit?limit=500&${q}`, ADMIN);
    assert.equal(r.status, 200, r.text);
    return r.body.items;
  };

  it('GET: email for the user themself and admins only; 404 unknown; 401 without a token', async () => {
    const self = await getUser(url, alice.token, alice.user.id);
    assert.equal(self.status, 200, self.text);
    assertUser(self.body, { withEmail: true });
    assert.equal(self.body.email, 'alice.u@example.com');
    assert.deepEqual(self.body, alice.user);
    const other = await getUser(url, bob.token, alice.user.id);
    assert.equal(other.status, 200, other.text);
    assertUser(other.body, { withEmail: false });
    const { email, ...rest } = alice.user;
    assert.deepEqual(other.body, rest);
    const minted = await getUser(url, h.userToken('app-minted-user'), alice.user.id);
    assert.equal(minted.status, 200);
    assert.equal('email' in minted.body, false);
    const admin = await getUser(url, ADMIN, alice.user.id);
    assert.equal(admin.status, 200);
    assert.equal(admin.body.email, 'alice.u@example.com');
    assertHttpError(assert, await getUser(url, alice.token, 'no-such-user'), 404, 'not_found');
    assertHttpError(assert, await getUser(url, alice.token, 'no-such-user'), 404, 'not_found');
    assertHttpError(assert, await getUser(url, alice.token, '01900000-0000-7000-8000-000000000000'), 404, 'not_found');
    assertHttpError(assert, await getUser(url, null, alice.user.id), 401, 'auth_required');
    assertHttpError(assert, await getUser(url, 'garbage', alice.user.id), 401, 'invalid_token');
  });

  it('PATCH by the user → 200 with the new values; GET at once returns them', async () => {
    const before = alice.user;
    const r = await patchUser(url, alice.token, alice.user.id, { display_name: 'Alice Ünïcode', bio: 'line one\nline two' });
    assert.equal(r.status, 200, r.text);
    assertUser(r.body, { withEmail: true });
    assert.equal(r.body.display_name, 'Alice Ünïcode');
    assert.equal(r.body.bio, 'line one\nline two');
    assert.equal(r.body.username, before.username);
    assert.equal(r.body.email, before.email);
    assert.equal(r.body.created_at, before.created_at);
    assert.ok(Date.parse(r.body.updated_at) >= Date.parse(before.updated_at));
    for (const t of [alice.token, bob.token, ADMIN]) {
      const g = await getUser(url, t, alice.user.id);
      assert.equal(g.body.display_name, 'Alice Ünïcode');
      assert.equal(g.body.bio, 'line one\nline two');
    }
    // again and again: the cache never serves the previous value
    for (let i = 0; i < 10; i++) {
      assert.equal((await getUser(url, bob.token, alice.user.id)).body.bio, i === 0 ? 'line one\nline two' : `bio ${i - 1}`);
      assert.equal((await patchUser(url, alice.token, alice.user.id, { bio: `bio ${i}` })).status, 200);
      assert.equal((await getUser(url, bob.token, alice.user.id)).body.bio, `bio ${i}`);
    }
    // fields left out stay; null is absent; {} changes nothing
    const n = await patchUser(url, alice.token, alice.user.id, { display_name: null, bio: null, email: null, metadata: null });
    assert.equal(n.status, 200, n.text);
    assert.equal(n.body.display_name, 'Alice Ünïcode');
    const e = await patchUser(url, alice.token, alice.user.id, {});
    assert.equal(e.status, 200, e.text);
    assert.equal(e.body.bio, 'bio 9');
  });

  it('PATCH by another non-admin → 403 and nothing changes; by an admin → 200', async () => {
    assertHttpError(assert, await patchUser(url, bob.token, alice.user.id, { display_name: 'hacked' }), 403, 'forbidden');
    assertHttpError(assert, await patchUser(url, h.userToken('someone-else'), alice.user.id, { bio: 'hacked' }), 403, 'forbidden');
    const g = await getUser(url, alice.token, alice.user.id);
    assert.notEqual(g.body.display_name, 'hacked');
    assert.notEqual(g.body.bio, 'hacked');
    const a = await patchUser(url, ADMIN, alice.user.id, { display_name: 'Set By Admin' });
    assert.equal(a.status, 200, a.text);
    assert.equal(a.body.display_name, 'Set By Admin');
    assert.equal(a.body.email, alice.user.email, 'an admin sees the email');
    assert.equal((await getUser(url, bob.token, alice.user.id)).body.display_name, 'Set By Admin');
    // the audit names the admin as the actor
    const rows = await audit(`target=user:${alice.user.id}`);
    assert.equal(rows[0].action, 'user.update');
    assert.equal(rows[0].actor, 'users-admin');
    assert.equal(rows[0].new.display_name, 'Set By Admin');
  });

  it('PATCH: bad input → 400 before 404/403; unknown user → 404; no token → 401', async () => {
    for (const body of [{ display_name: 5 }, { display_name: '' }, { display_name: 'a\u0000b' }, { bio: 7 },
      { email: 'not-an-email' }, { email: 5 }, { role: 'superuser' }, { role: 1 }, [], 'x', '{"bio":']) {
      assertHttpError(assert, await patchUser(url, alice.token, alice.user.id, body), 400, 'bad_request');
      // bad_request wins over forbidden (PROTOCOL §5 order)
      assertHttpError(assert, await patchUser(url, bob.token, alice.user.id, body), 400, 'bad_request');
    }
    // not_found wins over forbidden
    assertHttpError(assert, await patchUser(url, bob.token, 'no-such-user', { bio: 'x' }), 404, 'not_found');
    assertHttpError(assert, await patchUser(url, ADMIN, 'no-such-user', { bio: 'x' }), 404, 'not_found');
    assertHttpError(assert, await patchUser(url, null, alice.user.id, { bio: 'x' }), 401, 'auth_required');
  });

  it('PATCH email: 200 (lower case), login by the new one; a taken one → 409 and no audit row', async () => {
    const carol = await registerUser(url, { username: 'carol_u', email: 'carol.u@example.com' });
    const r = await patchUser(url, carol.token, carol.user.id, { email: 'Carol.New@Example.com' });
    assert.equal(r.status, 200, r.text);
    assert.equal(r.body.email, 'carol.new@example.com');
    assert.equal((await getUser(url, carol.token, carol.user.id)).body.email, 'carol.new@example.com');
    assert.equal((await login(url, 'carol.new@example.com', carol.password)).status, 200);
    assertHttpError(assert, await login(url, 'carol.u@example.com', carol.password), 401, 'auth_required');

    // the own address in another case is no conflict and no change
    const same = await patchUser(url, carol.token, carol.user.id, { email: 'CAROL.NEW@example.com' });
    assert.equal(same.status, 200, same.text);
    assert.equal(same.body.email, 'carol.new@example.com');

    const rowsBefore = await audit(`target=user:${carol.user.id}`);
    for (const taken of ['bob.u@example.com', 'BOB.U@example.com']) {
      assertHttpError(assert, await patchUser(url, carol.token, carol.user.id, { email: taken }), 409, 'conflict');
      assertHttpError(assert, await patchUser(url, ADMIN, carol.user.id, { email: taken, bio: 'with a bio' }), 409, 'conflict');
    }
    const rowsAfter = await audit(`target=user:${carol.user.id}`);
    assert.deepEqual(rowsAfter, rowsBefore, 'a refused PATCH leaves no audit row');
    assert.ok(!rowsAfter.some((e) => e.new && e.new.email === 'bob.u@example.com'));
    const g = await getUser(url, carol.token, carol.user.id);
    assert.equal(g.body.email, 'carol.new@example.com');
    assert.equal(g.body.bio, '', 'nothing of the refused PATCH was applied');
    // bob keeps his address
    assert.equal((await login(url, 'bob.u@example.com', bob.password)).status, 200);
  });

  it('PATCH role: non-admin → 403; admin makes a user admin → later logins carry role admin', async () => {
    const dave = await registerUser(url, { username: 'dave_u' });
    assertHttpError(assert, await patchUser(url, dave.token, dave.user.id, { role: 'admin' }), 403, 'forbidden');
    assertHttpError(assert, await patchUser(url, dave.token, dave.user.id, { role: 'user' }), 403, 'forbidden');
    assertHttpError(assert, await patchUser(url, dave.token, dave.user.id, { role: 'admin', bio: 'sneaky' }), 403, 'forbidden');
    assert.equal((await getUser(url, dave.token, dave.user.id)).body.role, 'user');
    assert.equal((await getUser(url, dave.token, dave.user.id)).body.bio, '');
    assertHttpError(assert, await api(url, 'GET', '/api/v1/admin/stats', dave.token), 403, 'forbidden');

    const r = await patchUser(url, ADMIN, dave.user.id, { role: 'admin' });
    assert.equal(r.status, 200, r.text);
    assert.equal(r.body.role, 'admin');
    assert.equal((await getUser(url, bob.token, dave.user.id)).body.role, 'admin');
    const l = await login(url, 'dave_u', dave.password);
    assert.equal(l.status, 200, l.text);
    assert.equal(l.body.user.role, 'admin');
    assert.equal(jwtClaims(l.body.token).role, 'admin');
    // the new token is an admin's: stats, audit, other users' emails, editing others
    assert.equal((await api(url, 'GET', '/api/v1/admin/stats', l.body.token)).status, 200);
    assert.equal((await api(url, 'GET', '/api/v1/admin/audit', l.body.token)).status, 200);
    assert.equal((await getUser(url, l.body.token, bob.user.id)).body.email, 'bob.u@example.com');
    assert.equal((await patchUser(url, l.body.token, bob.user.id, { bio: 'edited by dave' })).status, 200);
    // and back: a later login is a user again
    assert.equal((await patchUser(url, ADMIN, dave.user.id, { role: 'user' })).body.role, 'user');
    assert.equal(jwtClaims((await login(url, 'dave_u', dave.password)).body.token).role, 'user');
    const rows = await audit(`target=user:${dave.user.id}`);
    assert.deepEqual(rows.slice(0, 2).map((e) => [e.action, e.old.role, e.new.role]),
      [['user.update', 'admin', 'user'], ['user.update', 'user', 'admin']]);
  });

  it('PATCH metadata: an object → stored and returned; not an object → 400; over 4096 bytes of JSON → 413', async () => {
    const erin = await registerUser(url, { username: 'erin_u' });
    const id = erin.user.id;
    const meta = { theme: 'dark', n: 1.5, nested: { list: [1, 'two', null, true] }, ünï: 'cödé' };
    const r = await patchUser(url, erin.token, id, { metadata: meta });
    assert.equal(r.status, 200, r.text);
    assert.deepEqual(r.body.metadata, meta);
    assert.deepEqual((await getUser(url, bob.token, id)).body.metadata, meta);
    for (const bad of [[1, 2], 'text', 5, true]) {
      assertHttpError(assert, await patchUser(url, erin.token, id, { metadata: bad }), 400, 'bad_request');
    }
    // the limit is in bytes of JSON: {"k":"…"} is 8 bytes plus the string
    const exact = { k: 'x'.repeat(4096 - 8) };
    assert.equal(Buffer.byteLength(JSON.stringify(exact)), 4096);
    const ok = await patchUser(url, erin.token, id, { metadata: exact });
    assert.equal(ok.status, 200, ok.text.slice(0, 200));
    assertHttpError(assert, await patchUser(url, erin.token, id, { metadata: { k: 'x'.repeat(4096 - 7) } }), 413, 'too_large');
    const wide = { k: 'é'.repeat((4096 - 8) / 2) }; // 2 bytes each
    assert.equal(Buffer.byteLength(JSON.stringify(wide)), 4096);
    assert.equal((await patchUser(url, erin.token, id, { metadata: wide })).status, 200);
    assertHttpError(assert, await patchUser(url, erin.token, id, { metadata: { k: 'é'.repeat((4096 - 8) / 2 + 1) } }), 413, 'too_large');
    assertHttpError(assert, await patchUser(url, erin.token, id, { metadata: { k: 'x'.repeat(100000) } }), 413, 'too_large');
    // a body far over any limit is 413 too_large with the JSON error shape
    assertHttpError(assert, await patchUser(url, erin.token, id, { metadata: { k: 'x'.repeat(2 * 1024 * 1024) } }), 413, 'too_large');
    // the refused ones changed nothing
    assert.deepEqual((await getUser(url, erin.token, id)).body.metadata, wide);
    // an empty object clears it
    assert.deepEqual((await patchUser(url, erin.token, id, { metadata: {} })).body.metadata, {});
    assert.deepEqual((await getUser(url, erin.token, id)).body.metadata, {});
  });
});

// ================================================================ list users

describe('GET /api/v1/users', () => {
  let srv;
  let url;
  const users = []; // in registration order
  before(async () => {
    srv = await h.startServer();
    url = srv.url;
    for (let i = 0; i < 12; i++) users.push(await registerUser(url, { username: `lister_${String(i).padStart(2, '0')}` }));
  });
  after(async () => { h.closeAll(); if (srv) await srv.destroy(); });

  async function listAll(token, limit) {
    return h.keysetPages((p) => api(url, 'GET', p, token), '/api/v1/users', limit, 100);
  }

  it('newest first; keyset pages cover every user exactly once', async () => {
    const newestFirst = users.map((u) => u.user.id).reverse();
    for (const limit of [undefined, 1, 2, 5, 12, 13, 500]) {
      const { items, pages } = await listAll(users[0].token, limit);
      assert.deepEqual(items.map((u) => u.id), newestFirst, `limit ${limit}`);
      if (limit) assert.equal(pages, Math.max(1, Math.ceil(users.length / limit)), `pages for limit ${limit}`);
    }
  });

  it('items are USERs; the email only on the caller\'s own item, or for admins', async () => {
    const me = users[3];
    const { items } = await listAll(me.token, 5);
    for (const u of items) {
      assertUser(u, { withEmail: u.id === me.user.id });
      if (u.id === me.user.id) assert.equal(u.email, me.user.email);
    }
    const admin = await listAll(h.adminToken('list-admin'), 4);
    for (const u of admin.items) assertUser(u, { withEmail: true });
    assert.deepEqual(admin.items.map((u) => u.username), users.map((u) => u.username).reverse());
  });

  it('a user registered after the first page appears at the front, not in later pages', async () => {
    const t = users[0].token;
    const p1 = await api(url, 'GET', '/api/v1/users?limit=4', t);
    const late = await registerUser(url, { username: 'lister_late' });
    const rest = [];
    let cursor = p1.body.next_cursor;
    while (cursor) {
      const r = await api(url, 'GET', `/api/v1/users?limit=4&cursor=${encodeURIComponent(cursor)}`, t);
      assert.equal(r.status, 200, r.text);
      rest.push(...r.body.items.map((u) => u.id));
      cursor = r.body.next_cursor;
    }
    assert.deepEqual([...p1.body.items.map((u) => u.id), ...rest], users.map((u) => u.user.id).reverse());
    const first = await api(url, 'GET', '/api/v1/users?limit=1', t);
    assert.equal(first.body.items[0].id, late.user.id);
  });

  it('limit 0, 501, -1, x, 1.5 → 400; 401 without a token', async () => {
    for (const bad of ['0', '501', '-1', 'x', '1.5']) {
      assertHttpError(assert, await api(url, 'GET', `/api/v1/users?limit=${bad}`, users[0].token), 400, 'bad_request');
    }
    assertHttpError(assert, await api(url, 'GET', '/api/v1/users'), 401, 'auth_required');
  });
});

// ================================================================ members

describe('GET /api/v1/rooms/{id}/members', () => {
  let srv;
  let url;
  let owner;
  let member;
  let outsider;
  let room;
  const ADMIN = h.adminToken('members-admin');
  before(async () => {
    srv = await h.startServer();
    url = srv.url;
    owner = await registerUser(url, { username: 'room_owner' });
    member = await registerUser(url, { username: 'room_member' });
    outsider = await registerUser(url, { username: 'room_outsider' });
    room = h.roomId('mem');
    await h.createRoom(url, owner.token, room, { private: true });
    await h.addMember(url, owner.token, room, member.user.id);
    await h.addMember(url, owner.token, room, 'ext-never-registered');
  });
  after(async () => { h.closeAll(); if (srv) await srv.destroy(); });

  const members = (token, q = '', r = room) => api(url, 'GET', `/api/v1/rooms/${r}/members${q}`, token);

  it('{ items: [{ user_id, added_by, added_at, user }], next_cursor }: USER embedded, null if never registered', async () => {
    const before = Date.now();
    const r = await members(owner.token);
    assert.equal(r.status, 200, r.text);
    assert.deepEqual(Object.keys(r.body).sort(), ['items', 'next_cursor']);
    assert.equal(r.body.next_cursor, null);
    const ids = [member.user.id, 'ext-never-registered'].sort();
    assert.deepEqual(r.body.items.map((m) => m.user_id), ids, 'ordered by user id; the owner is not a row');
    for (const m of r.body.items) {
      assert.deepEqual(Object.keys(m).sort(), ['added_at', 'added_by', 'user', 'user_id']);
      assert.equal(m.added_by, owner.user.id);
      assert.match(m.added_at, RFC3339);
      assert.ok(Math.abs(Date.parse(m.added_at) - before) < 60000, m.added_at);
    }
    const byId = Object.fromEntries(r.body.items.map((m) => [m.user_id, m]));
    assert.equal(byId['ext-never-registered'].user, null);
    const u = byId[member.user.id].user;
    assertUser(u, { withEmail: false }); // the owner is not the member
    assert.equal(u.id, member.user.id);
    assert.equal(u.username, 'room_member');
  });

  it('the member sees its own email; an admin sees every email', async () => {
    const r = await members(member.token);
    assert.equal(r.status, 200, r.text);
    const mine = r.body.items.find((m) => m.user_id === member.user.id);
    assertUser(mine.user, { withEmail: true });
    assert.equal(mine.user.email, member.user.email);
    const a = await members(ADMIN);
    assert.equal(a.status, 200, a.text);
    assertUser(a.body.items.find((m) => m.user_id === member.user.id).user, { withEmail: true });
  });

  it('the embedded USER follows a PATCH at once', async () => {
    assert.equal((await patchUser(url, member.token, member.user.id, { display_name: 'Renamed Member' })).status, 200);
    const r = await members(owner.token);
    assert.equal(r.body.items.find((m) => m.user_id === member.user.id).user.display_name, 'Renamed Member');
  });

  it('a private room: 403 for a non-member non-admin; 404 missing; 401 without a token; 400 bad input', async () => {
    assertHttpError(assert, await members(outsider.token), 403, 'forbidden');
    assertHttpError(assert, await members(h.userToken('minted-outsider')), 403, 'forbidden');
    assertHttpError(assert, await members(owner.token, '', 'no-such-room-mem'), 404, 'not_found');
    assertHttpError(assert, await members(null), 401, 'auth_required');
    assertHttpError(assert, await members(owner.token, '', 'Bad'), 400, 'bad_request');
    for (const bad of ['0', '501', 'x', '-1']) {
      assertHttpError(assert, await members(owner.token, `?limit=${bad}`), 400, 'bad_request');
    }
  });

  it('a public room: anyone may list; an admin-added member has added_by the admin', async () => {
    const pub = h.roomId('mempub');
    await h.createRoom(url, owner.token, pub);
    await h.addMember(url, ADMIN, pub, outsider.user.id);
    const r = await members(h.userToken('anyone-at-all'), '', pub);
    assert.equal(r.status, 200, r.text);
    assert.deepEqual(r.body.items.map((m) => [m.user_id, m.added_by]), [[outsider.user.id, 'members-admin']]);
    assert.equal(r.body.items[0].user.username, 'room_outsider');
  });

  it('keyset pages by user id cover every member exactly once', async () => {
    const big = h.roomId('membig');
    await h.createRoom(url, owner.token, big, { private: true });
    const all = [member.user.id, outsider.user.id];
    for (let i = 0; i < 9; i++) all.push(`ext-${i}-${crypto.randomBytes(2).toString('hex')}`);
    for (const id of all) await h.addMember(url, owner.token, big, id);
    all.sort();
    for (const limit of [1, 2, 4, 11, 50]) {
      const seen = [];
      let cursor = null;
      let pages = 0;
      do {
        const q = `?limit=${limit}${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ''}`;
        const r = await members(owner.token, q, big);
        assert.equal(r.status, 200, r.text);
        assert.ok(r.body.items.length <= limit);
        seen.push(...r.body.items.map((m) => m.user_id));
        cursor = r.body.next_cursor;
        assert.ok(++pages <= 20);
      } while (cursor);
      assert.deepEqual(seen, all, `limit ${limit}`);
      assert.equal(pages, Math.max(1, Math.ceil(all.length / limit)), `pages for limit ${limit}`);
    }
  });
});

// ================================================================ RBAC of private rooms

describe('private rooms with registered accounts: every path', () => {
  let srv;
  let url;
  before(async () => {
    srv = await h.startServer({ env: { TSUNAGI_SEND_RATE: '0' } });
    url = srv.url;
  });
  after(async () => { h.closeAll(); if (srv) await srv.destroy(); });

  it('a non-member non-admin account: 403 / forbidden on every path; after the owner adds it: allowed', async () => {
    const owner = await registerUser(url, { username: 'rbac_owner' });
    const x = await registerUser(url, { username: 'rbac_x' });
    const room = h.roomId('rbac');
    await h.createRoom(url, owner.token, room, { private: true });
    assert.equal((await api(url, 'POST', `/api/v1/rooms/${room}/messages`, owner.token, { content: 'owner says hi' })).status, 201);

    // both the register token and a login token
    const xLogin = (await login(url, 'rbac_x', x.password)).body.token;
    for (const t of [x.token, xLogin]) {
      assertHttpError(assert, await api(url, 'GET', `/api/v1/rooms/${room}/messages`, t), 403, 'forbidden');
      assertHttpError(assert, await api(url, 'POST', `/api/v1/rooms/${room}/messages`, t, { content: 'x' }), 403, 'forbidden');
      assertHttpError(assert, await api(url, 'GET', `/api/v1/rooms/${room}/members`, t), 403, 'forbidden');
      assertHttpError(assert, await api(url, 'POST', `/api/v1/rooms/${room}/members`, t, { user_id: x.user.id }), 403, 'forbidden');
      const s = await h.connect(url, t);
      assertAckError(assert, await ack(s, 'join', { room }), 'forbidden');
      assertAckError(assert, await ack(s, 'send', { room, content: 'x' }), 'forbidden');
      assertAckError(assert, await ack(s, 'sync', { room, since_seq: 0 }), 'forbidden');
      assertAckError(assert, await ack(s, 'presence', { room }), 'forbidden');
      assertAckError(assert, await ack(s, 'typing', { room }), 'forbidden');
      assert.deepEqual(await ack(s, 'leave', { room }), { ok: true });
      s.close();
    }
    const listed = await api(url, 'GET', '/api/v1/rooms?limit=500', x.token);
    assert.ok(!listed.body.items.some((r) => r.id === room), 'the private room is not listed for x');

    await h.addMember(url, owner.token, room, x.user.id);

    for (const t of [x.token, xLogin]) {
      const g = await api(url, 'GET', `/api/v1/rooms/${room}/messages`, t);
      assert.equal(g.status, 200, g.text);
      assert.ok(g.body.items.some((m) => m.content === 'owner says hi'));
      const p = await api(url, 'POST', `/api/v1/rooms/${room}/messages`, t, { content: 'x via http' });
      assert.equal(p.status, 201, p.text);
      assert.equal(p.body.user_id, x.user.id);
      assert.equal((await api(url, 'GET', `/api/v1/rooms/${room}/members`, t)).status, 200);
      const s = await h.connect(url, t);
      const j = await ack(s, 'join', { room });
      assert.equal(j.ok, true, JSON.stringify(j));
      assert.ok(j.history.some((m) => m.content === 'owner says hi'));
      const sent = await ack(s, 'send', { room, content: 'x via socket' });
      assert.equal(sent.ok, true, JSON.stringify(sent));
      assert.equal(sent.message.user_id, x.user.id);
      const sy = await ack(s, 'sync', { room, since_seq: 0 });
      assert.equal(sy.ok, true, JSON.stringify(sy));
      const pr = await ack(s, 'presence', { room });
      assert.equal(pr.ok, true, JSON.stringify(pr));
      assert.ok(pr.users.some((u) => u.user_id === x.user.id));
      s.close();
    }
    // still only the owner (or an admin) adds members
    assertHttpError(assert, await api(url, 'POST', `/api/v1/rooms/${room}/members`, x.token, { user_id: 'y' }), 403, 'forbidden');
    const listed2 = await api(url, 'GET', '/api/v1/rooms?limit=500', x.token);
    assert.ok(listed2.body.items.some((r) => r.id === room), 'the private room is listed for its member');
  });

  it('an account made admin by PATCH reads every private room with its next login token', async () => {
    const owner = await registerUser(url, { username: 'rbac_owner2' });
    const y = await registerUser(url, { username: 'rbac_y' });
    const room = h.roomId('rbac');
    await h.createRoom(url, owner.token, room, { private: true });
    assertHttpError(assert, await api(url, 'GET', `/api/v1/rooms/${room}/messages`, y.token), 403, 'forbidden');
    assert.equal((await patchUser(url, h.adminToken('rbac-admin'), y.user.id, { role: 'admin' })).status, 200);
    const t = (await login(url, 'rbac_y', y.password)).body.token;
    assert.equal((await api(url, 'GET', `/api/v1/rooms/${room}/messages`, t)).status, 200);
    const s = await h.connect(url, t);
    assert.equal((await ack(s, 'join', { room })).ok, true);
  });
});

// ================================================================ admin

describe('GET /api/v1/admin/audit and /api/v1/admin/stats', () => {
  let srv;
  let url;
  const ADMIN = h.adminToken('audit-admin');
  let u1;
  let u2;
  let room;
  before(async () => {
    srv = await h.startServer();
    url = srv.url;
    u1 = await registerUser(url, { username: 'audit_one' });
    u2 = await registerUser(url, { username: 'audit_two' });
    assert.equal((await patchUser(url, u1.token, u1.user.id, { display_name: 'Audit One', bio: 'first bio' })).status, 200);
    room = h.roomId('aud');
    await h.createRoom(url, u1.token, room, { private: true, name: 'Audited' });
    await h.addMember(url, u1.token, room, u2.user.id);
    await h.addMember(url, u1.token, room, u2.user.id); // again: no change, no row
    assert.equal((await patchUser(url, ADMIN, u2.user.id, { bio: 'set by admin' })).status, 200);
    assert.equal((await patchUser(url, u2.token, u2.user.id, {})).status, 200); // no change, no row
  });
  after(async () => { h.closeAll(); if (srv) await srv.destroy(); });

  const audit = (token, q = '') => api(url, 'GET', `/api/v1/admin/audit${q}`, token);

  async function walk(q, limit) {
    const items = [];
    let cursor = null;
    let pages = 0;
    do {
      const r = await audit(ADMIN, `?${q}&limit=${limit}${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ''}`);
      assert.equal(r.status, 200, r.text);
      assert.ok(r.body.items.length <= limit);
      items.push(...r.body.items);
      cursor = r.body.next_cursor;
      if (cursor !== null) assert.ok(typeof cursor === 'string' || typeof cursor === 'number', `cursor ${cursor}`);
      assert.ok(++pages <= 100);
    } while (cursor !== null);
    return { items, pages };
  }

  it('403 for non-admins (registered or minted), 401 without a token', async () => {
    assertHttpError(assert, await audit(u1.token), 403, 'forbidden');
    assertHttpError(assert, await audit(h.userToken('audit-minted')), 403, 'forbidden');
    assertHttpError(assert, await audit(u1.token, `?actor=${u1.user.id}`), 403, 'forbidden');
    assertHttpError(assert, await audit(null), 401, 'auth_required');
  });

  it('admins: { items: [{ id, at, actor, action, target, old, new }], next_cursor }, newest first', async () => {
    const r = await audit(ADMIN, '?limit=500');
    assert.equal(r.status, 200, r.text);
    assert.deepEqual(Object.keys(r.body).sort(), ['items', 'next_cursor']);
    assert.equal(r.body.next_cursor, null);
    const items = r.body.items;
    for (const e of items) {
      assert.deepEqual(Object.keys(e).sort(), ['action', 'actor', 'at', 'id', 'new', 'old', 'target']);
      assert.match(e.at, RFC3339);
      assert.ok(Math.abs(Date.parse(e.at) - Date.now()) < 120000, e.at);
      assert.equal(typeof e.actor, 'string');
      assert.equal(typeof e.action, 'string');
      assert.equal(typeof e.target, 'string');
    }
    for (let i = 1; i < items.length; i++) {
      assert.ok(Number(items[i - 1].id) > Number(items[i].id), 'newest first');
      assert.ok(Date.parse(items[i - 1].at) >= Date.parse(items[i].at), 'newest first by time too');
    }
    // exactly these changes, newest first (repeated add and an empty PATCH wrote nothing)
    assert.deepEqual(items.map((e) => [e.action, e.actor, e.target]), [
      ['user.update', 'audit-admin', `user:${u2.user.id}`],
      ['room.member_add', u1.user.id, `room:${room}`],
      ['room.create', u1.user.id, `room:${room}`],
      ['user.update', u1.user.id, `user:${u1.user.id}`],
      ['user.register', u2.user.id, `user:${u2.user.id}`],
      ['user.register', u1.user.id, `user:${u1.user.id}`],
    ]);
    const [adminUpdate, memberAdd, roomCreate, selfUpdate, , register1] = items;
    assert.equal(register1.old, null);
    assert.equal(register1.new.username, 'audit_one');
    assert.equal(register1.new.id, u1.user.id);
    assert.equal(selfUpdate.old.display_name, 'audit_one');
    assert.equal(selfUpdate.new.display_name, 'Audit One');
    assert.equal(selfUpdate.old.bio, '');
    assert.equal(selfUpdate.new.bio, 'first bio');
    assert.equal(roomCreate.old, null);
    assert.equal(roomCreate.new.id, room);
    assert.equal(roomCreate.new.private, true);
    assert.equal(roomCreate.new.name, 'Audited');
    assert.equal(memberAdd.new.user_id, u2.user.id);
    assert.equal(adminUpdate.old.bio, '');
    assert.equal(adminUpdate.new.bio, 'set by admin');
  });

  it('filters by actor, by target, by both', async () => {
    const byActor = (await audit(ADMIN, `?actor=${encodeURIComponent(u1.user.id)}`)).body.items;
    assert.deepEqual(byActor.map((e) => e.action), ['room.member_add', 'room.create', 'user.update', 'user.register']);
    assert.ok(byActor.every((e) => e.actor === u1.user.id));
    const byTarget = (await audit(ADMIN, `?target=${encodeURIComponent(`user:${u2.user.id}`)}`)).body.items;
    assert.deepEqual(byTarget.map((e) => [e.action, e.actor]), [['user.update', 'audit-admin'], ['user.register', u2.user.id]]);
    const byRoom = (await audit(ADMIN, `?target=${encodeURIComponent(`room:${room}`)}`)).body.items;
    assert.deepEqual(byRoom.map((e) => e.action), ['room.member_add', 'room.create']);
    const both = (await audit(ADMIN, `?actor=${encodeURIComponent(u1.user.id)}&target=${encodeURIComponent(`user:${u1.user.id}`)}`)).body.items;
    assert.deepEqual(both.map((e) => e.action), ['user.update', 'user.register']);
    const none = await audit(ADMIN, '?actor=nobody-at-all');
    assert.deepEqual(none.body, { items: [], next_cursor: null });
  });

  it('cursor pagination walks the log exactly once, for any limit and with filters', async () => {
    const all = (await audit(ADMIN, '?limit=500')).body.items;
    for (const limit of [1, 2, 4, 6, 7]) {
      const { items, pages } = await walk('', limit);
      assert.deepEqual(items, all, `limit ${limit}`);
      assert.equal(pages, Math.max(1, Math.ceil(all.length / limit)), `pages for limit ${limit}`);
    }
    const { items } = await walk(`actor=${encodeURIComponent(u1.user.id)}`, 1);
    assert.deepEqual(items.map((e) => e.action), ['room.member_add', 'room.create', 'user.update', 'user.register']);
  });

  it('bad limit or cursor → 400', async () => {
    for (const bad of ['0', '501', 'x', '-1']) {
      assertHttpError(assert, await audit(ADMIN, `?limit=${bad}`), 400, 'bad_request');
    }
    for (const bad of ['x', '-1', '1.5']) {
      assertHttpError(assert, await audit(ADMIN, `?cursor=${bad}`), 400, 'bad_request');
    }
  });

  it('stats: 403 for non-admins; admins get pools, caches (users/rooms/members: l1, l2), sockets, bus', async () => {
    assertHttpError(assert, await api(url, 'GET', '/api/v1/admin/stats', u1.token), 403, 'forbidden');
    assertHttpError(assert, await api(url, 'GET', '/api/v1/admin/stats'), 401, 'auth_required');
    // some cache traffic first
    for (let i = 0; i < 3; i++) assert.equal((await getUser(url, u2.token, u1.user.id)).status, 200);
    assert.equal((await api(url, 'GET', `/api/v1/rooms/${room}/messages`, u2.token)).status, 200);
    const r = await api(url, 'GET', '/api/v1/admin/stats', ADMIN);
    assert.equal(r.status, 200, r.text);
    for (const k of ['pools', 'caches', 'sockets', 'bus']) assert.ok(k in r.body, `stats.${k}: ${r.text}`);
    for (const name of ['users', 'rooms', 'members']) {
      const c = r.body.caches[name];
      assert.equal(typeof c, 'object', `caches.${name}: ${r.text}`);
      for (const layer of ['l1', 'l2']) {
        const l = c[layer];
        assert.equal(typeof l, 'object', `caches.${name}.${layer}`);
        for (const f of ['hits', 'misses', 'hit_ratio']) assert.equal(typeof l[f], 'number', `caches.${name}.${layer}.${f}`);
        assert.ok(l.hit_ratio >= 0 && l.hit_ratio <= 1);
        const n = l.hits + l.misses;
        assert.ok(Math.abs(l.hit_ratio - (n === 0 ? 0 : l.hits / n)) < 1e-9, `${name}.${layer} ratio`);
      }
    }
    const users = r.body.caches.users.l1;
    assert.ok(users.hits >= 1, `users L1 was hit: ${JSON.stringify(users)}`);
    assert.ok(users.hits + users.misses >= 3);
  });
});

// ================================================================ two instances, one Redis
//
// What this guards: after a write on A has answered, B must not serve its previous L1 entry.
// Waiting only until Redis accepted the PUBLISH of the invalidation was not enough (B applies it
// on its own tasks, and its HTTP handler could run first: 5-20 % of reads right after a write
// were stale on a 2-core machine, for up to 100 ms). Since 46960dc every instance applies and
// acknowledges the invalidation before the writer answers.

describe('two instances on one database and one Redis: caches stay coherent', () => {
  let A;
  let B;
  let cluster;
  before(async () => {
    cluster = await h.startCluster(2, {
      env: { TSUNAGI_REDIS_URL: REDIS, TSUNAGI_REDIS_PREFIX: redisPrefix(), TSUNAGI_SEND_RATE: '0' },
    });
    [A, B] = cluster.map((s) => s.url);
  });
  after(async () => { h.closeAll(); if (cluster) await cluster.destroy(); });

  it('/readyz on both: 200 with redis ok', async () => {
    for (const u of [A, B]) {
      const r = await api(u, 'GET', '/readyz');
      assert.equal(r.status, 200, r.text);
      assert.equal(r.body.checks.redis, 'ok', r.text);
      assert.equal(r.body.checks.database, 'ok', r.text);
    }
  });

  it('GET via B (warm), PATCH via A, GET via B at once → the new value (20 times, both ways)', async () => {
    const u = await registerUser(A, { username: 'coherent_user' });
    const admin = h.adminToken('coherence-admin');
    const viewer = h.userToken('coherence-viewer');
    // registered on A, readable on B at once
    assert.equal((await getUser(B, viewer, u.user.id)).status, 200);
    let expected = u.user.display_name;
    for (let i = 0; i < 20; i++) {
      const [writer, reader] = i % 2 === 0 ? [A, B] : [B, A];
      for (let k = 0; k < 2; k++) {
        const warm = await getUser(reader, viewer, u.user.id);
        assert.equal(warm.status, 200, warm.text);
        assert.equal(warm.body.display_name, expected, `iteration ${i}: warm read`);
      }
      expected = `name ${i}`;
      const p = await patchUser(writer, i % 3 === 0 ? admin : u.token, u.user.id,
        { display_name: expected, bio: `bio ${i}`, metadata: { i } });
      assert.equal(p.status, 200, p.text);
      const g = await getUser(reader, viewer, u.user.id);
      assert.equal(g.status, 200, g.text);
      assert.equal(g.body.display_name, expected, `iteration ${i}: stale read on the other instance`);
      assert.equal(g.body.bio, `bio ${i}`);
      assert.deepEqual(g.body.metadata, { i });
      // the writer's own instance too
      assert.equal((await getUser(writer, viewer, u.user.id)).body.display_name, expected);
    }
  });

  it('role and email changed on A show on B at once (GET and login)', async () => {
    const u = await registerUser(A, { username: 'coherent_role' });
    const viewer = h.userToken('coherence-viewer');
    assert.equal((await getUser(B, viewer, u.user.id)).body.role, 'user');
    assert.equal((await patchUser(A, h.adminToken('coherence-admin'), u.user.id, { role: 'admin', email: 'moved@example.com' })).status, 200);
    assert.equal((await getUser(B, viewer, u.user.id)).body.role, 'admin');
    assert.equal((await getUser(B, u.token, u.user.id)).body.email, 'moved@example.com');
    const l = await login(B, 'moved@example.com', u.password);
    assert.equal(l.status, 200, l.text);
    assert.equal(jwtClaims(l.body.token).role, 'admin');
  });

  it('membership: refused on B (cached), added via A → B admits at once (20 times, HTTP and socket)', async () => {
    const owner = await registerUser(A, { username: 'coherent_owner' });
    const room = h.roomId('coh');
    await h.createRoom(A, owner.token, room, { private: true });
    const outsider = await registerUser(B, { username: 'coherent_outsider' });
    for (let i = 0; i < 20; i++) {
      const who = i === 0 ? outsider.user.id : `coh-user-${i}-${crypto.randomBytes(2).toString('hex')}`;
      const t = i === 0 ? outsider.token : h.userToken(who);
      // refused on B, twice, so the refusal is cached there; on A too
      assertHttpError(assert, await api(B, 'GET', `/api/v1/rooms/${room}/messages`, t), 403, 'forbidden');
      assertHttpError(assert, await api(B, 'GET', `/api/v1/rooms/${room}/messages`, t), 403, 'forbidden');
      assertHttpError(assert, await api(A, 'POST', `/api/v1/rooms/${room}/messages`, t, { content: 'no' }), 403, 'forbidden');
      const s = i % 4 === 0 ? await h.connect(B, t) : null;
      if (s) assertAckError(assert, await ack(s, 'join', { room }), 'forbidden');
      // added on A
      await h.addMember(A, owner.token, room, who);
      // admitted on B at once
      const g = await api(B, 'GET', `/api/v1/rooms/${room}/messages`, t);
      assert.equal(g.status, 200, `iteration ${i}: ${g.text}`);
      const p = await api(B, 'POST', `/api/v1/rooms/${room}/messages`, t, { content: `in ${i}` });
      assert.equal(p.status, 201, `iteration ${i}: ${p.text}`);
      if (s) {
        const j = await ack(s, 'join', { room });
        assert.equal(j.ok, true, `iteration ${i}: ${JSON.stringify(j)}`);
        s.close();
      }
    }
    const listed = await api(B, 'GET', `/api/v1/rooms/${room}/members?limit=500`, owner.token);
    assert.equal(listed.body.items.length, 20);
    assert.equal(listed.body.items.find((m) => m.user_id === outsider.user.id).user.username, 'coherent_outsider');
  });

  it('a room missing on B (cached "not found"), created on A → B serves it at once (10 times)', async () => {
    const t = h.userToken('coh-creator');
    for (let i = 0; i < 10; i++) {
      const room = h.roomId('cohnew');
      assertHttpError(assert, await api(B, 'GET', `/api/v1/rooms/${room}/messages`, t), 404, 'not_found');
      assertHttpError(assert, await api(B, 'GET', `/api/v1/rooms/${room}/messages`, t), 404, 'not_found');
      await h.createRoom(A, t, room);
      const g = await api(B, 'GET', `/api/v1/rooms/${room}/messages`, t);
      assert.equal(g.status, 200, `iteration ${i}: ${g.text}`);
      const s = await h.connect(B, t);
      assert.equal((await ack(s, 'join', { room })).ok, true, `iteration ${i}: join on B`);
      s.close();
    }
  });

  it('stats on B show L2 in use', async () => {
    const r = await api(B, 'GET', '/api/v1/admin/stats', h.adminToken('coherence-admin'));
    assert.equal(r.status, 200, r.text);
    const l2 = r.body.caches.users.l2;
    assert.ok(l2.hits + l2.misses > 0, `users L2 used on B: ${JSON.stringify(l2)}`);
  });
});

// ================================================================ Redis unreachable

describe('Redis configured but unreachable', () => {
  let srv;
  let url;
  before(async () => {
    srv = await h.startServer({ env: { TSUNAGI_REDIS_URL: 'redis://127.0.0.1:1', TSUNAGI_REDIS_PREFIX: redisPrefix() } });
    url = srv.url;
  });
  after(async () => { h.closeAll(); if (srv) await srv.destroy(); });

  it('the server starts; /healthz 200; /readyz 503 naming redis', async () => {
    assert.equal((await api(url, 'GET', '/healthz')).status, 200);
    const r = await api(url, 'GET', '/readyz');
    assert.equal(r.status, 503, r.text);
    assert.match(r.text, /redis/i);
    assert.equal(r.body.checks.redis, 'failed', r.text);
    assert.equal(r.body.checks.database, 'ok', r.text);
  });

  it('register, login, GET and PATCH work and return correct values, quickly', async () => {
    const t0 = Date.now();
    const u = await registerUser(url, { username: 'no_redis_user' });
    assertHttpError(assert, await register(url, { username: 'NO_REDIS_USER', email: 'x1@example.com', password: 'fine passphrase 77' }), 409, 'conflict');
    const l = await login(url, 'no_redis_user', u.password);
    assert.equal(l.status, 200, l.text);
    assert.equal(l.body.user.id, u.user.id);
    assertHttpError(assert, await login(url, 'no_redis_user', 'wrong passphrase 1'), 401, 'auth_required');
    const viewer = h.userToken('no-redis-viewer');
    for (let i = 0; i < 4; i++) {
      const g = await getUser(url, viewer, u.user.id);
      assert.equal(g.status, 200, g.text);
      assert.equal(g.body.bio, i === 0 ? '' : `bio ${i - 1}`);
      const p = await patchUser(url, u.token, u.user.id, { bio: `bio ${i}` });
      assert.equal(p.status, 200, p.text);
      assert.equal(p.body.bio, `bio ${i}`);
      assert.equal((await getUser(url, viewer, u.user.id)).body.bio, `bio ${i}`);
    }
    assertHttpError(assert, await getUser(url, viewer, 'no-such-user'), 404, 'not_found');
    // membership decisions are right too
    const room = h.roomId('nored');
    await h.createRoom(url, u.token, room, { private: true });
    assertHttpError(assert, await api(url, 'GET', `/api/v1/rooms/${room}/messages`, viewer), 403, 'forbidden');
    await h.addMember(url, u.token, room, 'no-redis-viewer');
    assert.equal((await api(url, 'GET', `/api/v1/rooms/${room}/messages`, viewer)).status, 200);
    const elapsed = Date.now() - t0;
    assert.ok(elapsed < 30000, `took ${elapsed} ms: requests must not hang on the dead Redis`);
  });
});
