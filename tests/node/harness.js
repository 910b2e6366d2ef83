'use strict';
// Test harness for the tsunagi contract suite (PROTOCOL.md): starts real servers, mints
// tokens, connects official socket.io-client sockets, and talks HTTP.

const { spawn, execFileSync } = require('node:child_process');
const crypto = require('node:crypto');
const fs = require('node:fs');
const net = require('node:net');
const os = require('node:os');
const path = require('node:path');
const strictAssert = require('node:assert/strict');
const { io } = require('socket.io-client');

const BIN = process.env.TSUNAGI_BIN || path.resolve(__dirname, '../../target/release/tsunagi');
const SECRET = 'contract-test-secret-0123456789-abcdefghijklmnop';

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** A TCP port nobody listens on right now. */
function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

// ---------------------------------------------------------------- tokens

const b64url = (buf) => Buffer.from(buf).toString('base64url');

/**
 * An HS256 JWT. `claims` is merged over { sub, exp: now + ttl, role, name }; a claim set to
 * `undefined` is left out. `opts.secret` / `opts.alg` / `opts.header` / `opts.signature`
 * allow bad tokens.
 */
function mintToken(sub, claims = {}, opts = {}) {
  const now = Math.floor(Date.now() / 1000);
  const body = { sub, exp: now + (opts.ttl ?? 3600), role: 'user', ...claims };
  for (const k of Object.keys(body)) if (body[k] === undefined) delete body[k];
  const header = opts.header || { alg: opts.alg || 'HS256', typ: 'JWT' };
  const signingInput = `${b64url(JSON.stringify(header))}.${b64url(JSON.stringify(body))}`;
  let sig;
  if (opts.signature !== undefined) sig = opts.signature;
  else sig = b64url(crypto.createHmac('sha256', opts.secret || SECRET).update(signingInput).digest());
  return `${signingInput}.${sig}`;
}

const userToken = (sub, extra = {}) => mintToken(sub, extra);
const adminToken = (sub) => mintToken(sub, { role: 'admin' });

// ---------------------------------------------------------------- server

// Every server process this test process started: killed if the process exits abnormally.
const liveProcs = new Set();
process.on('exit', () => {
  for (const p of liveProcs) { try { p.kill('SIGKILL'); } catch { /* gone */ } }
});

// With TSUNAGI_TEST_PG=postgres://user@host:port set, every server gets a fresh PostgreSQL
// database on that server instead of a SQLite file (the same suite runs on both stores).
const PG = process.env.TSUNAGI_TEST_PG || '';
let pgDatabases = 0;
function freshPgDatabase() {
  const name = `tsunagi_t_${process.pid}_${++pgDatabases}_${Date.now() % 100000}`;
  const u = new URL(PG);
  execFileSync('psql', ['-h', u.hostname, '-p', u.port || '5432', '-U', u.username || 'postgres',
    '-d', 'postgres', '-q', '-c', `CREATE DATABASE ${name}`], { stdio: 'pipe' });
  return `${PG.replace(/\/+$/, '')}/${name}`;
}

/**
 * Starts `tsunagi serve` on a free port with a fresh SQLite db in a temp dir.
 * Returns { url, port, dir, proc, stop(), kill9(), restart(), log() }.
 * With `ca` (PEM), the server is expected to serve HTTPS (env has TSUNAGI_TLS_CERT/KEY): `url`
 * is https:// and readiness is checked trusting that CA only.
 */
async function startServer({ env = {}, dir, ca } = {}) {
  const port = await freePort();
  dir = dir || fs.mkdtempSync(path.join(os.tmpdir(), 'tsunagi-test-'));
  const url = `${ca ? 'https' : 'http'}://127.0.0.1:${port}`;
  const fullEnv = {
    PATH: process.env.PATH,
    HOME: process.env.HOME,
    TSUNAGI_LISTEN: `127.0.0.1:${port}`,
    TSUNAGI_DATABASE_URL: env.TSUNAGI_DATABASE_URL
      || (PG ? freshPgDatabase() : `sqlite://${path.join(dir, 't.db')}`),
    TSUNAGI_JWT_SECRET: SECRET,
    TSUNAGI_LOG: 'warn',
    // TSUNAGI_TEST_REDIS_ALL=redis://…: every server runs with Redis (bus, L2, limits, presence),
    // under a prefix of its own, so the whole contract is also checked in the scale-out mode.
    ...(process.env.TSUNAGI_TEST_REDIS_ALL ? {
      TSUNAGI_REDIS_URL: process.env.TSUNAGI_TEST_REDIS_ALL,
      TSUNAGI_REDIS_PREFIX: `tsunagi-test-${crypto.randomBytes(8).toString('hex')}`,
    } : {}),
    ...env,
  };
  const logPath = path.join(dir, 'server.log');
  const server = { url, port, dir, env: fullEnv, proc: null, exited: null, logPath };

  async function launch() {
    const logFd = fs.openSync(logPath, 'a');
    const proc = spawn(BIN, ['serve'], { cwd: dir, env: fullEnv, stdio: ['ignore', logFd, logFd] });
    fs.closeSync(logFd);
    server.proc = proc;
    liveProcs.add(proc);
    proc.on('exit', () => liveProcs.delete(proc));
    server.exited = new Promise((resolve) => {
      proc.on('exit', (code, signal) => resolve({ code, signal }));
    });
    let spawnError = null;
    proc.on('error', (e) => { spawnError = e; });
    const deadline = Date.now() + 20000;
    for (;;) {
      if (spawnError) throw spawnError;
      if (proc.exitCode !== null || proc.signalCode !== null) {
        throw new Error(`tsunagi exited at start (${proc.exitCode ?? proc.signalCode}):\n${server.log()}`);
      }
      try {
        if (ca) {
          if ((await httpsRequest(`${url}/healthz`, ca, { timeoutMs: 1000 })).status === 200) return;
        } else {
          const res = await fetch(`${url}/healthz`, { signal: AbortSignal.timeout(1000) });
          await res.arrayBuffer();
          if (res.status === 200) return;
        }
      } catch { /* not up yet */ }
      if (Date.now() > deadline) {
        proc.kill('SIGKILL');
        throw new Error(`tsunagi did not answer /healthz within 20 s:\n${server.log()}`);
      }
      await sleep(50);
    }
  }

  const running = () => server.proc && server.proc.exitCode === null && server.proc.signalCode === null;

  /** SIGTERM; resolves to { code, signal } once exited (SIGKILL after 15 s). */
  server.stop = async () => {
    if (!server.proc) return null;
    if (running()) {
      server.proc.kill('SIGTERM');
      const t = setTimeout(() => { if (running()) server.proc.kill('SIGKILL'); }, 15000);
      const r = await server.exited;
      clearTimeout(t);
      return r;
    }
    return server.exited;
  };
  server.kill9 = async () => {
    if (running()) server.proc.kill('SIGKILL');
    return server.exited;
  };
  /** Starts again on the same port and database (after stop or kill9). */
  server.restart = async () => {
    if (running()) throw new Error('restart of a running server');
    await launch();
  };
  /** Empties the stopped server's database, as a restore or a wiped disk would. */
  server.wipe = () => {
    if (running()) throw new Error('wipe of a running server');
    if (PG) {
      const u = new URL(fullEnv.TSUNAGI_DATABASE_URL);
      const name = u.pathname.slice(1);
      const psql = (sql) => execFileSync('psql', ['-h', u.hostname, '-p', u.port || '5432',
        '-U', u.username || 'postgres', '-d', 'postgres', '-q', '-c', sql], { stdio: 'pipe' });
      psql(`DROP DATABASE ${name} WITH (FORCE)`);
      psql(`CREATE DATABASE ${name}`);
    } else {
      for (const f of fs.readdirSync(dir)) if (f.startsWith('t.db')) fs.rmSync(path.join(dir, f));
    }
  };
  server.log = () => { try { return fs.readFileSync(logPath, 'utf8'); } catch { return ''; } };
  /** Stops the server (if running) and removes its directory. For `after` hooks. */
  server.destroy = async () => {
    await server.kill9();
    fs.rmSync(dir, { recursive: true, force: true });
  };

  await launch();
  return server;
}

/**
 * Starts `n` servers on ONE database (a fresh PostgreSQL database with TSUNAGI_TEST_PG, else one
 * SQLite file in a shared temp dir), one after the other (no concurrent migrations), each with
 * its own port and log dir, all with the same `env` (e.g. one Redis URL and prefix; the JWT
 * secret is the harness's for all). Returns the array of servers with `destroy()`.
 */
async function startCluster(n, { env = {} } = {}) {
  const shared = fs.mkdtempSync(path.join(os.tmpdir(), 'tsunagi-shared-'));
  const databaseUrl = PG ? freshPgDatabase() : `sqlite://${path.join(shared, 't.db')}`;
  const servers = [];
  servers.destroy = async () => {
    for (const s of servers) await s.destroy();
    fs.rmSync(shared, { recursive: true, force: true });
  };
  try {
    for (let i = 0; i < n; i++) {
      servers.push(await startServer({ env: { ...env, TSUNAGI_DATABASE_URL: databaseUrl } }));
    }
  } catch (e) {
    await servers.destroy();
    throw e;
  }
  return servers;
}

/**
 * `n` instances (startCluster: one database, the same `env`) behind a real nginx run from
 * deploy/nginx.conf, as an operator would deploy it: only the lines marked `# test:` are rewritten
 * (listen port, upstream servers, pid and log paths) and temp files go to a temp dir.
 * Returns { url (nginx), servers, nginx: { proc, log() }, destroy() }.
 */
async function startBehindNginx(n, { env = {} } = {}) {
  const NGINX = process.env.NGINX || '/usr/sbin/nginx';
  const servers = await startCluster(n, { env });
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tsunagi-nginx-'));
  const port = await freePort();
  const upstreams = servers.map((s) => `        server 127.0.0.1:${s.port} max_fails=1 fail_timeout=5s;`);
  let conf = fs.readFileSync(path.resolve(__dirname, '../../deploy/nginx.conf'), 'utf8');
  let upstreamDone = false;
  conf = conf.split('\n').flatMap((line) => {
    if (!/# test: \w/.test(line)) return [line];
    if (line.includes('# test: listen')) return [`        listen 127.0.0.1:${port};`];
    if (line.includes('# test: pid')) return [`pid ${dir}/nginx.pid;`];
    if (line.includes('# test: error_log')) return [`error_log ${dir}/error.log warn;`];
    if (line.includes('# test: upstream')) {
      if (upstreamDone) return [];
      upstreamDone = true;
      return upstreams;
    }
    throw new Error(`deploy/nginx.conf: unknown test marker in ${line}`);
  }).join('\n');
  // temp files where this process can write them (the package's default is /var/lib/nginx)
  const temps = ['client_body', 'proxy', 'fastcgi', 'uwsgi', 'scgi']
    .map((t) => `    ${t}_temp_path ${dir}/${t};`).join('\n');
  conf = conf.replace(/^http \{$/m, `http {\n${temps}`);
  // workers as the user running the test (as root, nginx would switch to `nobody`)
  if (process.getuid && process.getuid() === 0) conf = `user root;\n${conf}`;
  const confPath = path.join(dir, 'nginx.conf');
  fs.writeFileSync(confPath, conf);
  const logFd = fs.openSync(path.join(dir, 'stderr.log'), 'a');
  const proc = spawn(NGINX, ['-p', dir, '-c', confPath, '-g', 'daemon off;'], { stdio: ['ignore', logFd, logFd] });
  fs.closeSync(logFd);
  liveProcs.add(proc);
  proc.on('exit', () => liveProcs.delete(proc));
  const exited = new Promise((resolve) => proc.on('exit', resolve));
  const log = () => ['stderr.log', 'error.log']
    .map((f) => { try { return fs.readFileSync(path.join(dir, f), 'utf8'); } catch { return ''; } }).join('');
  const url = `http://127.0.0.1:${port}`;
  const destroy = async () => {
    if (proc.exitCode === null && proc.signalCode === null) { proc.kill('SIGQUIT'); await exited; }
    await servers.destroy();
    fs.rmSync(dir, { recursive: true, force: true });
  };
  try {
    await until(async () => {
      if (proc.exitCode !== null) throw new Error(`nginx exited at start:\n${log()}`);
      try { return (await fetch(`${url}/nginx-health`, { signal: AbortSignal.timeout(1000) })).status === 200; } catch { return false; }
    }, 10000, 'nginx answers');
  } catch (e) {
    await destroy();
    throw e;
  }
  return { url, servers, nginx: { proc, log }, destroy };
}

// ---------------------------------------------------------------- http

/** HTTP JSON helper → { status, body, headers, text }. `body` is parsed JSON when possible. */
async function http(base, method, urlPath, token, body, extraHeaders = {}) {
  const headers = { ...extraHeaders };
  if (token) headers.authorization = `Bearer ${token}`;
  let payload;
  if (body !== undefined) {
    headers['content-type'] = 'application/json';
    payload = typeof body === 'string' ? body : JSON.stringify(body);
  }
  const res = await fetch(base + urlPath, { method, headers, body: payload, signal: AbortSignal.timeout(20000) });
  const text = await res.text();
  let parsed = null;
  try { parsed = text ? JSON.parse(text) : null; } catch { parsed = undefined; }
  return { status: res.status, body: parsed, headers: res.headers, text };
}

/**
 * One HTTPS request trusting only the CA `ca` (PEM; fetch cannot be given one)
 * → { status, body, text }, `body` parsed JSON when possible.
 */
function httpsRequest(url, ca, { method = 'GET', token, body, timeoutMs = 20000 } = {}) {
  const https = require('node:https');
  const headers = {};
  if (token) headers.authorization = `Bearer ${token}`;
  const payload = body === undefined ? undefined : JSON.stringify(body);
  if (payload !== undefined) headers['content-type'] = 'application/json';
  return new Promise((resolve, reject) => {
    const req = https.request(url, { method, headers, ca, agent: false, timeout: timeoutMs }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (chunk) => { text += chunk; });
      res.on('end', () => {
        let parsed = null;
        try { parsed = text ? JSON.parse(text) : null; } catch { parsed = undefined; }
        resolve({ status: res.statusCode, body: parsed, text });
      });
    });
    req.on('timeout', () => req.destroy(new Error(`no answer within ${timeoutMs} ms`)));
    req.on('error', reject);
    req.end(payload);
  });
}

/** Creates a room (asserting 201) and returns its ROOM-INFO. */
async function createRoom(base, token, id, extra = {}) {
  const r = await http(base, 'POST', '/api/v1/rooms', token, { id, ...extra });
  if (r.status !== 201) throw new Error(`create room ${id}: ${r.status} ${r.text}`);
  return r.body;
}

async function addMember(base, token, room, userId) {
  const r = await http(base, 'POST', `/api/v1/rooms/${room}/members`, token, { user_id: userId });
  if (r.status !== 204) throw new Error(`add member ${userId} to ${room}: ${r.status} ${r.text}`);
}

/** Whole history of a room through GET …/messages, paging with after_seq. */
async function fullHistory(base, token, room) {
  const all = [];
  let after = 0;
  for (;;) {
    const r = await http(base, 'GET', `/api/v1/rooms/${room}/messages?after_seq=${after}&limit=500`, token);
    if (r.status !== 200) throw new Error(`history ${room}: ${r.status} ${r.text}`);
    all.push(...r.body.items);
    if (!r.body.more) break;
    if (r.body.items.length === 0) throw new Error('more:true with no items');
    after = r.body.items[r.body.items.length - 1].seq;
  }
  return all;
}

// ---------------------------------------------------------------- accounts

/** POST /api/v1/auth/register → the raw { status, body, ... } (no assertion). */
const register = (base, body) => http(base, 'POST', '/api/v1/auth/register', null, body);

/** POST /api/v1/auth/login { login, password } → the raw { status, body, ... }. */
const login = (base, loginName, password) =>
  http(base, 'POST', '/api/v1/auth/login', null, { login: loginName, password });

let accounts = 0;
/**
 * Registers a fresh account (asserting 201) and returns { user, token, password, username, email }.
 * `fields` overrides the generated username / email / password.
 */
async function registerUser(base, fields = {}) {
  const n = ++accounts;
  const username = fields.username || `user_${process.pid % 100000}_${n}`;
  const body = {
    username,
    email: `${username.toLowerCase()}.mail@example.com`,
    password: `Correct-Horse-Battery-${n}-${crypto.randomBytes(3).toString('hex')}`,
    ...fields,
  };
  const r = await register(base, body);
  if (r.status !== 201) throw new Error(`register ${username}: ${r.status} ${r.text}`);
  return { ...r.body, password: body.password, username: body.username, email: body.email };
}

/** The claims of a JWT (no verification). */
function jwtClaims(token) {
  return JSON.parse(Buffer.from(token.split('.')[1], 'base64url').toString('utf8'));
}

// ---------------------------------------------------------------- sockets

const openSockets = new Set();

/**
 * A connected socket.io-client socket. Rejects with the connect_error (err.data.code).
 * Default: websocket transport, forceNew, no reconnection.
 */
function connect(base, token, opts = {}) {
  const { timeoutMs = 10000, ...rest } = opts;
  const auth = token === undefined ? {} : { token };
  const socket = io(base, {
    auth,
    transports: ['websocket'],
    forceNew: true,
    reconnection: false,
    timeout: timeoutMs,
    ...rest,
  });
  openSockets.add(socket);
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      cleanup();
      socket.close();
      reject(new Error('connect timed out'));
    }, timeoutMs + 1000);
    const onConnect = () => { cleanup(); resolve(socket); };
    const onError = (err) => {
      // with reconnection on, connect_error for a transport error is retried by the client
      if (rest.reconnection && !err.data) return;
      cleanup();
      socket.close();
      reject(err);
    };
    function cleanup() {
      clearTimeout(timer);
      socket.off('connect', onConnect);
      socket.off('connect_error', onError);
    }
    socket.on('connect', onConnect);
    socket.on('connect_error', onError);
  });
}

/** The connect_error of a connection attempt that must fail (throws if it connects). */
async function connectError(base, auth, opts = {}) {
  const socket = io(base, {
    auth,
    transports: ['websocket'],
    forceNew: true,
    reconnection: false,
    timeout: 10000,
    ...opts,
  });
  openSockets.add(socket);
  try {
    return await new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error('neither connect nor connect_error')), 15000);
      socket.on('connect', () => { clearTimeout(timer); reject(new Error('connected, expected connect_error')); });
      socket.on('connect_error', (err) => { clearTimeout(timer); resolve(err); });
    });
  } finally {
    socket.close();
  }
}

function closeAll() {
  for (const s of openSockets) s.close();
  openSockets.clear();
}

/** Emits with an acknowledgement; rejects if no ack arrives within timeoutMs. */
function ack(socket, event, ...args) {
  let timeoutMs = 10000;
  return new Promise((resolve, reject) => {
    socket.timeout(timeoutMs).emit(event, ...args, (err, res) => {
      if (err) {
        reject(new Error(socket.connected
          ? `no ack for ${event} within ${timeoutMs} ms`
          : `no ack for ${event}: the socket was disconnected before the ack`));
      }
      else resolve(res);
    });
  });
}

/**
 * Resolves with the first `event` (args[0]) matching predicate, rejects after timeoutMs.
 * Only events arriving after the call count.
 */
function waitFor(socket, event, predicate = () => true, timeoutMs = 10000) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      socket.off(event, handler);
      reject(new Error(`timed out waiting for '${event}'`));
    }, timeoutMs);
    function handler(...args) {
      let ok;
      try { ok = predicate(...args); } catch (e) { ok = false; }
      if (ok) {
        clearTimeout(timer);
        socket.off(event, handler);
        resolve(args[0]);
      }
    }
    socket.on(event, handler);
  });
}

/** Collects every `event` payload into an array from now on; `stop()` detaches. */
function collect(socket, event, filter = () => true) {
  const items = [];
  const handler = (payload) => { if (filter(payload)) items.push(payload); };
  socket.on(event, handler);
  Object.defineProperty(items, 'stop', { value: () => socket.off(event, handler), enumerable: false });
  return items;
}

/** Waits until `fn()` is truthy (polling), or throws after timeoutMs with `what`. */
async function until(fn, timeoutMs = 10000, what = 'condition') {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await fn()) return;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(20);
  }
}

/** Resolves/rejects like `promise`, or rejects after timeoutMs (the timer is cleared). */
function withTimeout(promise, timeoutMs, what = 'operation') {
  let timer;
  return Promise.race([
    promise,
    new Promise((_, reject) => { timer = setTimeout(() => reject(new Error(`timed out: ${what}`)), timeoutMs); }),
  ]).finally(() => clearTimeout(timer));
}

/** Reads one counter/gauge value from /metrics text (sum over label sets matching `labels`). */
function metricValue(text, name, labels = {}) {
  let sum = 0;
  let found = false;
  for (const line of text.split('\n')) {
    if (line.startsWith('#')) continue;
    const m = line.match(/^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)/);
    if (!m || m[1] !== name) continue;
    const lab = m[2] || '';
    if (!Object.entries(labels).every(([k, v]) => lab.includes(`${k}="${v}"`))) continue;
    sum += Number(m[3]);
    found = true;
  }
  return found ? sum : null;
}

/** Checks the MESSAGE shape of PROTOCOL.md §3. */
function assertMessageShape(assert, m) {
  assert.equal(typeof m, 'object');
  assert.deepEqual(Object.keys(m).sort(), ['client_id', 'content', 'created_at', 'id', 'room', 'seq', 'user_id']);
  assert.equal(typeof m.id, 'string');
  assert.ok(m.id.length > 0);
  assert.match(m.room, /^[a-z0-9_-]{1,64}$/);
  assert.ok(Number.isInteger(m.seq) && m.seq >= 1, `seq ${m.seq}`);
  assert.equal(typeof m.user_id, 'string');
  assert.equal(typeof m.content, 'string');
  assert.ok(m.client_id === null || typeof m.client_id === 'string');
  assert.match(m.created_at, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)$/);
  assert.ok(!Number.isNaN(Date.parse(m.created_at)));
}

/** Checks an error ack {ok:false, error:{code, message}} with the given code. */
function assertAckError(assert, res, code) {
  assert.equal(typeof res, 'object', `ack ${JSON.stringify(res)}`);
  assert.equal(res.ok, false, `expected ${code}, got ${JSON.stringify(res)}`);
  assert.equal(typeof res.error, 'object');
  assert.equal(res.error.code, code, `expected ${code}, got ${JSON.stringify(res)}`);
  assert.equal(typeof res.error.message, 'string');
}

/** Checks an HTTP error: status and body {error:{code,message}}. */
function assertHttpError(assert, r, status, code) {
  assert.equal(r.status, status, `expected ${status}, got ${r.status} ${r.text}`);
  assert.equal(typeof r.body, 'object', r.text);
  assert.ok(r.body && typeof r.body.error === 'object', r.text);
  if (code) assert.equal(r.body.error.code, code, r.text);
  assert.equal(typeof r.body.error.code, 'string', r.text);
  assert.equal(typeof r.body.error.message, 'string', r.text);
}

let counter = 0;
/** A fresh, valid room id. */
const roomId = (prefix = 'r') => `${prefix}-${process.pid}-${++counter}`;

/**
 * Follows `next_cursor` through a keyset listing (`GET path?limit=&cursor=`), checking each page's
 * shape; `get(pathWithQuery)` makes the request. Returns every item, and how many pages it took.
 */
async function keysetPages(get, path, limit, maxPages) {
  const assert = strictAssert;
  const items = [];
  let cursor = null;
  let pages = 0;
  for (;;) {
    const q = new URLSearchParams();
    if (limit) q.set('limit', String(limit));
    if (cursor) q.set('cursor', cursor);
    const r = await get(`${path}?${q}`);
    assert.equal(r.status, 200, r.text);
    assert.deepEqual(Object.keys(r.body).sort(), ['items', 'next_cursor']);
    if (limit) assert.ok(r.body.items.length <= limit);
    items.push(...r.body.items);
    pages++;
    assert.ok(pages <= maxPages, 'too many pages');
    if (r.body.next_cursor === null) break;
    assert.equal(typeof r.body.next_cursor, 'string');
    cursor = r.body.next_cursor;
  }
  return { items, pages };
}

module.exports = {
  BIN, SECRET, sleep, freePort, freshPgDatabase, mintToken, userToken, adminToken,
  startServer, startCluster, startBehindNginx, http, httpsRequest, createRoom, addMember, fullHistory,
  register, login, registerUser, jwtClaims, keysetPages,
  connect, connectError, closeAll, ack, waitFor, collect, until, withTimeout, metricValue,
  assertMessageShape, assertAckError, assertHttpError, roomId,
};
