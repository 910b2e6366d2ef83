'use strict';
// How each operation of the authorization matrix (authz.test.js) is carried out, and the fixtures a
// cell needs. An operation's `run(cell)` answers what the server said, in the table's words:
// "200", "403 forbidden", "401 token_expired", "listed", "ok", "connect_error invalid_token"…

const crypto = require('node:crypto');
const h = require('./harness');

const { http } = h;

const AUTH_CODES = { 'no token': 'auth_required', 'bad token': 'invalid_token', expired: 'token_expired' };

/** An HTTP answer in the table's words: the status, with the error code when it is an error. */
function answer(r) {
  if (r.status < 400) return String(r.status);
  return `${r.status} ${r.body && r.body.error ? r.body.error.code : `(no error body: ${r.text.slice(0, 80)})`}`;
}

/** `listed` / `hidden` for a 200 listing (following `next_cursor`), else the answer. */
async function listed(url, path, token, id) {
  let cursor = '';
  for (let page = 0; page < 50; page++) {
    const r = await http(url, 'GET', `${path}?limit=500${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ''}`, token);
    if (r.status !== 200) return answer(r);
    if (r.body.items.some((item) => item.id === id)) return 'listed';
    if (!r.body.next_cursor) return 'hidden';
    cursor = r.body.next_cursor;
  }
  throw new Error(`${path}: more than 50 pages`);
}

/** `with-email` / `no-email`: whether a USER shows the account's email. */
function emailShown(user, fx) {
  if (user.email === undefined || user.email === null) return 'no-email';
  return user.email === fx.email ? 'with-email' : `another email (${user.email})`;
}

/** Emits `event` on a socket of the cell's principal: `ok`, the ack's error code, or the connect_error. */
async function emit(cell, event, payload) {
  const auth = cell.token === null ? {} : { token: cell.token };
  if (AUTH_CODES[cell.principal]) {
    // refused at the handshake alike on both transports, with the token in `auth` or (docs/protocol.md)
    // in an Authorization header
    const ways = [['websocket', auth, {}], ['polling', auth, {}]];
    if (cell.token !== null) {
      const headers = { extraHeaders: { authorization: `Bearer ${cell.token}` } };
      ways.push(['websocket, header', {}, headers], ['polling, header', {}, headers]);
    }
    const seen = [];
    for (const [way, wayAuth, opts] of ways) {
      const err = await h.connectError(cell.url, wayAuth, { transports: [way.split(',')[0]], ...opts });
      seen.push([way, `connect_error ${err.data ? err.data.code : err.message}`]);
    }
    if (seen.every(([, got]) => got === seen[0][1])) return seen[0][1];
    return seen.map(([way, got]) => `${way}: ${got}`).join('; ');
  }
  let socket;
  try {
    socket = await h.connect(cell.url, cell.token);
  } catch (err) {
    return `connect_error ${err.data ? err.data.code : err.message}`;
  }
  try {
    const res = await h.ack(socket, event, payload);
    return res && res.ok === true ? 'ok' : res.error.code;
  } finally {
    socket.close();
  }
}

const call = (method, path, body) => async (cell) =>
  answer(await http(cell.url, method, path(cell.fx), cell.token, body));

const WEBHOOK_URL = 'http://127.0.0.1:9/authz';

// scope: which fixture a cell gets (room, sensor, account, webhook: a room and the owner's
// webhook on it, job: a dead job, missing: ids that name nothing); noun: what "public" / "private"
// qualify in a cell's name.
const OPERATIONS = {
  'POST /api/v1/auth/register': {
    run: async (cell) => answer(await http(cell.url, 'POST', '/api/v1/auth/register', cell.token, {
      username: `azreg_${process.pid}_${cell.n}`,
      email: `azreg_${process.pid}_${cell.n}@example.com`,
      password: `Correct-Horse-Battery-${cell.n}-authz`,
    })),
  },
  'POST /api/v1/auth/login': {
    run: async (cell) => answer(await http(cell.url, 'POST', '/api/v1/auth/login', cell.token, {
      login: cell.shared.login.username, password: cell.shared.login.password,
    })),
  },
  'GET /api/v1/users': { run: call('GET', () => '/api/v1/users') },
  'GET /api/v1/users/{id}': { scope: 'account', run: call('GET', (fx) => `/api/v1/users/${fx.account}`) },
  'GET /api/v1/users/{id} (email)': {
    scope: 'account',
    run: async (cell) => {
      const r = await http(cell.url, 'GET', `/api/v1/users/${cell.fx.account}`, cell.token);
      return r.status === 200 ? emailShown(r.body, cell.fx) : answer(r);
    },
  },
  'GET /api/v1/users (email)': {
    scope: 'account',
    run: async (cell) => {
      let cursor = '';
      for (let page = 0; page < 50; page++) {
        const r = await http(cell.url, 'GET', `/api/v1/users?limit=500${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ''}`, cell.token);
        if (r.status !== 200) return answer(r);
        const user = r.body.items.find((u) => u.id === cell.fx.account);
        if (user) return emailShown(user, cell.fx);
        if (!r.body.next_cursor) return 'the account is not listed';
        cursor = r.body.next_cursor;
      }
      throw new Error('GET /api/v1/users: more than 50 pages');
    },
  },
  'PATCH /api/v1/users/{id}': {
    scope: 'account', run: call('PATCH', (fx) => `/api/v1/users/${fx.account}`, { bio: 'set by the authz matrix' }),
  },
  'PATCH /api/v1/users/{id} (role)': {
    scope: 'account', run: call('PATCH', (fx) => `/api/v1/users/${fx.account}`, { role: 'user' }),
  },
  'POST /api/v1/rooms': {
    noun: 'room',
    run: async (cell) => answer(await http(cell.url, 'POST', '/api/v1/rooms', cell.token,
      { id: `az-new-${process.pid}-${cell.n}`, private: cell.visibility === 'private' })),
  },
  'GET /api/v1/rooms': { scope: 'room', run: (cell) => listed(cell.url, '/api/v1/rooms', cell.token, cell.fx.room) },
  'POST /api/v1/rooms/{id}/members': {
    scope: 'room', run: call('POST', (fx) => `/api/v1/rooms/${fx.room}/members`, { user_id: 'az-added' }),
  },
  'GET /api/v1/rooms/{id}/members': { scope: 'room', run: call('GET', (fx) => `/api/v1/rooms/${fx.room}/members`) },
  'GET /api/v1/rooms/{id}/messages': { scope: 'room', run: call('GET', (fx) => `/api/v1/rooms/${fx.room}/messages`) },
  'POST /api/v1/rooms/{id}/messages': {
    scope: 'room', run: call('POST', (fx) => `/api/v1/rooms/${fx.room}/messages`, { content: 'authz' }),
  },
  'GET /api/v1/rooms/{id}/state': { scope: 'room', run: call('GET', (fx) => `/api/v1/rooms/${fx.room}/state`) },
  'GET /api/v1/rooms/{id}/state/{key}': {
    scope: 'room', withState: true, run: call('GET', (fx) => `/api/v1/rooms/${fx.room}/state/k`),
  },
  'PUT /api/v1/rooms/{id}/state/{key}': {
    scope: 'room', run: call('PUT', (fx) => `/api/v1/rooms/${fx.room}/state/k`, { value: 2 }),
  },
  'DELETE /api/v1/rooms/{id}/state/{key}': {
    scope: 'room', withState: true, run: call('DELETE', (fx) => `/api/v1/rooms/${fx.room}/state/k`),
  },
  'POST /api/v1/sensors': {
    noun: 'sensor',
    run: async (cell) => answer(await http(cell.url, 'POST', '/api/v1/sensors', cell.token,
      { id: `az.new.${process.pid}.${cell.n}`, private: cell.visibility === 'private' })),
  },
  'GET /api/v1/sensors': {
    scope: 'sensor', run: (cell) => listed(cell.url, '/api/v1/sensors', cell.token, cell.fx.sensor),
  },
  'GET /api/v1/sensors/{id}': { scope: 'sensor', run: call('GET', (fx) => `/api/v1/sensors/${fx.sensor}`) },
  'POST /api/v1/sensors/{id}/readings': {
    scope: 'sensor', run: call('POST', (fx) => `/api/v1/sensors/${fx.sensor}/readings`, { readings: [{ value: 1 }] }),
  },
  'GET /api/v1/sensors/{id}/readings': {
    scope: 'sensor', run: call('GET', (fx) => `/api/v1/sensors/${fx.sensor}/readings`),
  },
  'GET /api/v1/sensors/{id}/series': {
    scope: 'sensor', run: call('GET', (fx) => `/api/v1/sensors/${fx.sensor}/series?bucket=1m`),
  },
  'POST /api/v1/webhooks (rooms: [room])': {
    scope: 'room',
    run: async (cell) => answer(await http(cell.url, 'POST', '/api/v1/webhooks', cell.token,
      { url: WEBHOOK_URL, events: ['message'], rooms: [cell.fx.room] })),
  },
  'POST /api/v1/webhooks (every room)': {
    run: async (cell) => {
      const r = await http(cell.url, 'POST', '/api/v1/webhooks', cell.token, { url: WEBHOOK_URL, events: ['room.created'] });
      // a hook on every room would deliver (and fail) for every room the other cells create
      if (r.status === 201) await http(cell.url, 'DELETE', `/api/v1/webhooks/${r.body.id}`, cell.adminToken);
      return answer(r);
    },
  },
  'GET /api/v1/webhooks': {
    scope: 'webhook',
    run: async (cell) => {
      const r = await http(cell.url, 'GET', '/api/v1/webhooks', cell.token);
      if (r.status !== 200) return answer(r);
      return r.body.items.some((w) => w.id === cell.fx.webhook) ? 'listed' : 'hidden';
    },
  },
  'DELETE /api/v1/webhooks/{id}': { scope: 'webhook', run: call('DELETE', (fx) => `/api/v1/webhooks/${fx.webhook}`) },
  'GET /api/v1/admin/audit': { run: call('GET', () => '/api/v1/admin/audit') },
  'GET /api/v1/admin/stats': { run: call('GET', () => '/api/v1/admin/stats') },
  'GET /api/v1/admin/dashboard': { run: call('GET', () => '/api/v1/admin/dashboard') },
  'POST /api/v1/admin/archive': { run: call('POST', () => '/api/v1/admin/archive', { older_than: '30d' }) },
  'GET /api/v1/admin/jobs': { run: call('GET', () => '/api/v1/admin/jobs') },
  'POST /api/v1/admin/jobs/{id}/retry': { scope: 'job', run: call('POST', (fx) => `/api/v1/admin/jobs/${fx.job}/retry`) },
  'GET /api/v1/openapi.json': { run: call('GET', () => '/api/v1/openapi.json') },
  'GET /': { run: call('GET', () => '/') },
  'GET /admin': { run: call('GET', () => '/admin') },
  'GET /assets/{name}': { run: call('GET', () => '/assets/chat.js') },
  'GET /healthz': { run: call('GET', () => '/healthz') },
  'GET /readyz': { run: call('GET', () => '/readyz') },
  'GET /metrics': { run: call('GET', () => '/metrics') },
};

const ROOM_EVENTS = {
  join: () => ({}),
  leave: () => ({}),
  send: () => ({ content: 'authz' }),
  typing: () => ({}),
  sync: () => ({ since_seq: 0 }),
  presence: () => ({}),
  state_set: () => ({ key: 'k', value: 3 }),
  state_get: () => ({}),
};
for (const [event, extra] of Object.entries(ROOM_EVENTS)) {
  OPERATIONS[`socket ${event}`] = { scope: 'room', run: (cell) => emit(cell, event, { room: cell.fx.room, ...extra() }) };
}
const SENSOR_EVENTS = { reading: { value: 1 }, subscribe: {}, unsubscribe: {} };
for (const [event, extra] of Object.entries(SENSOR_EVENTS)) {
  OPERATIONS[`socket ${event}`] = { scope: 'sensor', run: (cell) => emit(cell, event, { sensor: cell.fx.sensor, ...extra }) };
}

// The same operations on ids that name nothing.
for (const [name, original] of [
  ['GET /api/v1/rooms/{id}/messages (no such room)', 'GET /api/v1/rooms/{id}/messages'],
  ['POST /api/v1/rooms/{id}/members (no such room)', 'POST /api/v1/rooms/{id}/members'],
  ['PATCH /api/v1/users/{id} (no such account)', 'PATCH /api/v1/users/{id}'],
  ['GET /api/v1/sensors/{id} (no such sensor)', 'GET /api/v1/sensors/{id}'],
  ['POST /api/v1/sensors/{id}/readings (no such sensor)', 'POST /api/v1/sensors/{id}/readings'],
  ['DELETE /api/v1/webhooks/{id} (no such webhook)', 'DELETE /api/v1/webhooks/{id}'],
  ['POST /api/v1/admin/jobs/{id}/retry (no such job)', 'POST /api/v1/admin/jobs/{id}/retry'],
  ['socket join (no such room)', 'socket join'],
  ['socket leave (no such room)', 'socket leave'],
  ['socket subscribe (no such sensor)', 'socket subscribe'],
  ['socket reading (no such sensor)', 'socket reading'],
]) {
  OPERATIONS[name] = { ...OPERATIONS[original], scope: 'missing', withState: false };
}

// ------------------------------------------------------------------ fixtures

async function must(what, r, status) {
  if (r.status !== status) throw new Error(`fixture: ${what}: ${r.status} ${r.text}`);
  return r.body;
}

/**
 * The cell's principals (fresh ids, so per-user limits and memberships never cross cells) and the
 * fixture its operation needs, created by the owner.
 */
async function fixture(url, op, visibility, n, shared) {
  const ids = { user: `az-u-${n}`, member: `az-m-${n}`, owner: `az-o-${n}`, admin: `az-a-${n}` };
  const tokens = {
    user: h.userToken(ids.user), member: h.userToken(ids.member), owner: h.userToken(ids.owner), admin: h.adminToken(ids.admin),
  };
  const fx = {};
  const priv = visibility === 'private';
  if (op.scope === 'room' || op.scope === 'webhook') {
    fx.room = `az-${process.pid}-${n}`;
    await must('create room', await http(url, 'POST', '/api/v1/rooms', tokens.owner, { id: fx.room, private: priv }), 201);
    await must('add member', await http(url, 'POST', `/api/v1/rooms/${fx.room}/members`, tokens.owner, { user_id: ids.member }), 204);
    if (op.withState) {
      await must('set state', await http(url, 'PUT', `/api/v1/rooms/${fx.room}/state/k`, tokens.owner, { value: 1 }), 200);
    }
  }
  if (op.scope === 'webhook') {
    const hook = await must('create webhook', await http(url, 'POST', '/api/v1/webhooks', tokens.owner,
      { url: WEBHOOK_URL, events: ['message'], rooms: [fx.room] }), 201);
    fx.webhook = hook.id;
  }
  if (op.scope === 'sensor') {
    fx.sensor = `az.${process.pid}.${n}`;
    await must('create sensor', await http(url, 'POST', '/api/v1/sensors', tokens.owner, { id: fx.sensor, private: priv }), 201);
  }
  if (op.scope === 'account') {
    const account = await h.registerUser(url, { username: `az_acct_${process.pid}_${n}` });
    fx.account = account.user.id;
    fx.email = account.email;
    ids.owner = account.user.id;
    tokens.owner = account.token;
  }
  if (op.scope === 'missing') {
    Object.assign(fx, {
      room: `az-none-${process.pid}-${n}`,
      sensor: `az.none.${process.pid}.${n}`,
      account: `az-none-${n}`,
      webhook: crypto.randomUUID(),
      job: crypto.randomUUID(),
    });
  }
  if (op.scope === 'job') {
    fx.job = shared.deadJobs.pop();
    if (!fx.job) throw new Error('fixture: no dead job left');
  }
  tokens['no token'] = null;
  tokens['bad token'] = h.mintToken(ids.user, {}, { secret: 'not-the-servers-secret-0123456789-abcdef' });
  tokens.expired = h.mintToken(ids.user, {}, { ttl: -60 });
  return { fx, tokens };
}

/**
 * Shared fixtures made once: an account to log in with, and `count` dead webhook jobs (a hook on
 * a port where nothing listens; the server runs with one attempt per job) for the retry cells.
 */
async function sharedFixtures(url, count) {
  const login = await h.registerUser(url, { username: `az_login_${process.pid}` });
  const admin = h.adminToken('az-jobs-admin');
  const room = `az-jobs-${process.pid}`;
  await must('jobs room', await http(url, 'POST', '/api/v1/rooms', admin, { id: room }), 201);
  await must('jobs hook', await http(url, 'POST', '/api/v1/webhooks', admin,
    { url: `http://127.0.0.1:${await h.freePort()}/`, events: ['message'], rooms: [room] }), 201);
  for (let i = 0; i < count; i++) {
    await must('jobs message', await http(url, 'POST', `/api/v1/rooms/${room}/messages`, admin, { content: `job ${i}` }), 201);
  }
  let deadJobs = [];
  await h.until(async () => {
    const r = await http(url, 'GET', '/api/v1/admin/jobs?state=dead&kind=webhook&limit=500', admin);
    deadJobs = r.status === 200 ? r.body.items.map((j) => j.id) : [];
    return deadJobs.length >= count;
  }, 20000, `${count} dead webhook jobs`);
  return { login, deadJobs };
}

module.exports = { OPERATIONS, AUTH_CODES, fixture, sharedFixtures };
