'use strict';
// PROTOCOL.md §7 "Secrets": every secret setting may come from a file (`…_FILE`), and no secret,
// token, password or query parameter is ever written to a log. One server at the most verbose
// level (TSUNAGI_LOG=trace, every statement reported as slow) walks every path a client and an
// operator can take — register, login (right and wrong), HTTP with the token, Socket.IO over
// WebSocket and polling (join, send, sync, typing, presence, state, sensors), bad and expired
// tokens, a token in a query string, webhooks with their secret, admin endpoints, the CLI —
// with known secrets, then greps everything the processes printed for each of them.

const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { spawn, execFileSync } = require('node:child_process');
const crypto = require('node:crypto');
const fs = require('node:fs');
const httpServer = require('node:http');
const os = require('node:os');
const path = require('node:path');
const h = require('./harness');

const PG = process.env.TSUNAGI_TEST_PG || '';
const mark = (what) => `${what}-${crypto.randomBytes(9).toString('hex')}`;

/** A private Redis that asks for a password (so the URL carries one), on a free port. */
async function redisWithPassword(password) {
  const port = await h.freePort();
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tsunagi-redis-'));
  const proc = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '',
    '--appendonly', 'no', '--dir', dir, '--requirepass', password], { stdio: 'ignore' });
  await h.until(() => {
    try {
      execFileSync('redis-cli', ['-p', String(port), '-a', password, '--no-auth-warning', 'ping'], { stdio: 'pipe' });
      return true;
    } catch { return false; }
  }, 10000, 'the private Redis to answer');
  return { url: `redis://:${password}@127.0.0.1:${port}`, stop: () => { proc.kill('SIGKILL'); fs.rmSync(dir, { recursive: true, force: true }); } };
}

/** Runs the CLI with the server's environment; its whole output (stdout + stderr). */
function cli(server, args) {
  try {
    return execFileSync(h.BIN, args, { cwd: server.dir, env: server.env, stdio: 'pipe' }).toString();
  } catch (e) {
    return `${e.stdout}${e.stderr}`;
  }
}

describe('no secret reaches a log (§7)', () => {
  const secrets = {
    jwtSecret: mark('jwt-secret-from-a-file'),
    password: mark('Pw-correct'),
    wrongPassword: mark('Pw-wrong'),
    queryValue: mark('query-value'),
    redisPassword: mark('redispw'),
    dbPassword: mark('dbpw'),
    webhookSecret: mark('whsec'),
  };
  const tokens = [];
  let server;
  let redis;
  let rx;
  const printed = [];

  before(async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tsunagi-secrets-'));
    const secretFile = path.join(dir, 'jwt_secret');
    fs.writeFileSync(secretFile, `${secrets.jwtSecret}\n`, { mode: 0o600 });
    redis = await redisWithPassword(secrets.redisPassword);
    rx = httpServer.createServer((req, res) => { req.resume(); req.on('end', () => res.end('{}')); });
    await new Promise((r) => rx.listen(0, '127.0.0.1', r));
    const env = {
      TSUNAGI_JWT_SECRET: '',
      TSUNAGI_JWT_SECRET_FILE: secretFile,
      TSUNAGI_REDIS_URL: '',
      TSUNAGI_REDIS_URL_FILE: path.join(dir, 'redis_url'),
      TSUNAGI_LOG: 'trace',
      TSUNAGI_SLOW_QUERY_MS: '0',
      TSUNAGI_WEBHOOK_ALLOW_PRIVATE: 'true',
      TSUNAGI_SEND_RATE: '0',
    };
    fs.writeFileSync(env.TSUNAGI_REDIS_URL_FILE, redis.url);
    if (PG) {
      // trust authentication ignores the password, so it can be a known secret to look for
      const db = new URL(h.freshPgDatabase());
      db.password = secrets.dbPassword;
      env.TSUNAGI_DATABASE_URL = '';
      env.TSUNAGI_DATABASE_URL_FILE = path.join(dir, 'database_url');
      fs.writeFileSync(env.TSUNAGI_DATABASE_URL_FILE, `${db}\n`);
    }
    server = await h.startServer({ env, dir });
  });

  after(async () => {
    h.closeAll();
    if (server) await server.destroy();
    if (redis) redis.stop();
    if (rx) { rx.closeAllConnections(); rx.close(); }
  });

  it('secrets given as files are used: the file JWT secret signs and verifies tokens', async () => {
    const signed = h.mintToken('file-secret-user', {}, { secret: secrets.jwtSecret });
    tokens.push(signed);
    const r = await h.http(server.url, 'GET', '/api/v1/rooms', signed);
    assert.equal(r.status, 200, r.text);
    const other = await h.http(server.url, 'GET', '/api/v1/rooms', h.userToken('harness-secret'));
    assert.equal(other.status, 401, 'a token signed with another secret is refused');
  });

  it('every path runs with known secrets', async () => {
    const base = server.url;
    const username = `sec${crypto.randomBytes(4).toString('hex')}`;
    const reg = await h.http(base, 'POST', '/api/v1/auth/register', null,
      { username, email: `${username}@example.com`, password: secrets.password });
    assert.equal(reg.status, 201, reg.text);
    tokens.push(reg.body.token);
    const bad = await h.http(base, 'POST', '/api/v1/auth/login', null, { login: username, password: secrets.wrongPassword });
    assert.equal(bad.status, 401);
    const good = await h.http(base, 'POST', '/api/v1/auth/login', null, { login: username, password: secrets.password });
    assert.equal(good.status, 200, good.text);
    const token = good.body.token;
    tokens.push(token);
    const userId = good.body.user.id;
    const admin = h.mintToken('sec-admin', { role: 'admin' }, { secret: secrets.jwtSecret });
    const expired = h.mintToken(userId, {}, { secret: secrets.jwtSecret, ttl: -60 });
    const forged = h.mintToken(userId, { role: 'admin' }, { secret: 'not-the-secret-0123456789' });
    tokens.push(admin, expired, forged);

    const room = `sec-${crypto.randomBytes(4).toString('hex')}`;
    assert.equal((await h.http(base, 'POST', '/api/v1/rooms', token, { id: room, private: true })).status, 201);
    await h.http(base, 'GET', `/api/v1/users/${userId}`, token);
    await h.http(base, 'PATCH', `/api/v1/users/${userId}`, token, { display_name: 'Secret Keeper' });
    await h.http(base, 'GET', `/api/v1/users?limit=5&cursor=${secrets.queryValue}`, token);
    await h.http(base, 'GET', `/api/v1/rooms/${room}/messages?limit=5&token=${token}&x=${secrets.queryValue}`, token);
    await h.http(base, 'GET', `/api/v1/nowhere?token=${token}&q=${secrets.queryValue}`, null);
    await h.http(base, 'GET', '/api/v1/rooms', expired);
    await h.http(base, 'GET', '/api/v1/rooms', forged);
    await h.http(base, 'POST', `/api/v1/rooms/${room}/messages`, token, { content: 'over http' });
    await h.http(base, 'PUT', `/api/v1/rooms/${room}/state/k`, token, { value: { n: 1 } });
    await h.http(base, 'GET', `/api/v1/rooms/${room}/state`, token);
    assert.equal((await h.http(base, 'POST', '/api/v1/sensors', token, { id: `s-${room}` })).status, 201);
    await h.http(base, 'POST', `/api/v1/sensors/s-${room}/readings?durable=true`, token, { readings: [{ value: 1.5 }] });
    await h.http(base, 'GET', `/api/v1/sensors/s-${room}/series?bucket=1m&agg=avg`, token);
    const wh = await h.http(base, 'POST', '/api/v1/webhooks', token,
      { url: `http://127.0.0.1:${rx.address().port}/hook?key=${secrets.queryValue}`, events: ['message'], rooms: [room], secret: secrets.webhookSecret });
    assert.equal(wh.status, 201, wh.text);
    for (const p of ['/api/v1/admin/stats', '/api/v1/admin/audit', '/api/v1/admin/jobs', '/api/v1/admin/dashboard', '/metrics', '/readyz']) {
      await h.http(base, 'GET', p, admin);
    }

    for (const transports of [['websocket'], ['polling']]) {
      const s = await h.connect(base, token, { transports });
      assert.equal((await h.ack(s, 'join', { room })).ok, true);
      assert.equal((await h.ack(s, 'send', { room, content: `via ${transports[0]}`, client_id: mark('cid') })).ok, true);
      await h.ack(s, 'sync', { room, since_seq: 0 });
      await h.ack(s, 'typing', { room });
      await h.ack(s, 'presence', { room });
      await h.ack(s, 'state_set', { room, key: 'k2', value: 'v' });
      await h.ack(s, 'state_get', { room, key: 'k2' });
      await h.ack(s, 'subscribe', { sensor: `s-${room}` });
      await h.ack(s, 'no_such_event', { token });
      s.close();
    }
    for (const auth of [{ token: expired }, { token: forged }, { token: `${token}x` }, {}]) {
      await h.connectError(base, auth);
    }
    // the delivery with its secret's signature happens in the background
    await h.until(async () => {
      const jobs = await h.http(base, 'GET', '/api/v1/admin/jobs?state=done', admin);
      return jobs.status === 200 && jobs.body.items.length > 0;
    }, 15000, 'a webhook delivery');
    printed.push(cli(server, ['make-admin', username]));
    printed.push(cli(server, ['archive', '--older-than', '0s', '--dry-run']));
    await server.stop();
    printed.push(server.log());
  });

  it('no log line holds a secret, a token, a password or a query value', () => {
    const all = printed.join('\n');
    assert.ok(all.length > 10000, `trace logs were written (${all.length} bytes)`);
    console.log(`${all.length} bytes of logs searched for ${Object.keys(secrets).length + 2 * tokens.length} secrets`);
    const needles = Object.entries(secrets).map(([what, v]) => [what, v]);
    for (const t of tokens) {
      needles.push(['a token', t]);
      needles.push(["a token's signature", t.split('.')[2]]);
    }
    const found = needles.filter(([, v]) => all.includes(v));
    const where = found.map(([what, v]) => {
      const line = all.split('\n').find((l) => l.includes(v));
      return `${what}: ${line.slice(0, 300)}`;
    });
    assert.deepEqual(where, [], `secrets in the logs:\n${where.join('\n')}`);
    assert.ok(!/Bearer\s+ey/.test(all), 'no Authorization header is printed');
  });
});
