'use strict';
// Issue 15, the operator's kit (deploy/): every metric the Grafana dashboard's expressions name
// exists in /metrics of a running server (PostgreSQL primary + replica, Redis) after a bit of
// traffic, so the dashboard never names a metric that is gone; and nginx accepts deploy/nginx.conf.

const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { execFileSync } = require('node:child_process');
const crypto = require('node:crypto');
const fs = require('node:fs');
const http = require('node:http');
const os = require('node:os');
const path = require('node:path');
const h = require('../harness');

const ROOT = path.resolve(__dirname, '../../..');
const REDIS = process.env.TSUNAGI_TEST_REDIS || 'redis://127.0.0.1:6379';
const PG = process.env.TSUNAGI_TEST_PG;
const REPLICA = process.env.TSUNAGI_TEST_REPLICA;
if (!PG || !REPLICA) throw new Error('TSUNAGI_TEST_PG and TSUNAGI_TEST_REPLICA must name the primary and its streaming replica (scripts/pg-replica up)');

// Counters that only a fault moves (a lost invalidation, a pool timeout, a dropped bus message,
// a failing cache layer): the exporter prints a metric once it has a value, and these stay
// absent on a healthy server. They are checked against the METRICS table instead.
const ONLY_AFTER_A_FAULT = new Set([
  'tsunagi_cache_errors_total',
  'tsunagi_cache_invalidation_failures_total',
  'tsunagi_bus_dropped_total',
  'tsunagi_db_acquire_timeouts_total',
]);

function dashboardMetrics() {
  const dash = JSON.parse(fs.readFileSync(path.join(ROOT, 'deploy/grafana/tsunagi.json'), 'utf8'));
  const exprs = [];
  const walk = (ps) => { for (const p of ps) { for (const t of p.targets || []) exprs.push(t.expr); walk(p.panels || []); } };
  walk(dash.panels);
  assert.ok(exprs.length > 30, `the dashboard has its panels: ${exprs.length} expressions`);
  const names = new Set(exprs.flatMap((e) => e.match(/\btsunagi_[a-z0-9_]+/g) || []));
  return { names, exprs };
}

/** Names in /metrics (samples, not only HELP lines). */
function exported(text) {
  return new Set(text.split('\n').filter((l) => l && !l.startsWith('#')).map((l) => l.split(/[{ ]/)[0]));
}

function freshDatabase() {
  const name = `tsunagi_t_kit_${process.pid}_${Date.now() % 100000}`;
  const u = new URL(PG);
  execFileSync('psql', ['-h', u.hostname, '-p', u.port || '5432', '-U', u.username || 'postgres', '-d', 'postgres',
    '-q', '-c', `CREATE DATABASE ${name}`], { stdio: 'pipe' });
  const onReplica = new URL(REPLICA);
  onReplica.pathname = `/${name}`;
  return { primary: `${PG.replace(/\/+$/, '')}/${name}`, replica: onReplica.toString() };
}

describe('deploy kit', () => {
  let server;
  let hooks;
  before(async () => {
    hooks = http.createServer((req, res) => { req.resume(); req.on('end', () => { res.statusCode = req.url === '/fail' ? 500 : 200; res.end(); }); });
    await new Promise((r) => hooks.listen(0, '127.0.0.1', r));
    const db = freshDatabase();
    server = await h.startServer({
      env: {
        TSUNAGI_DATABASE_URL: db.primary,
        TSUNAGI_REPLICA_URLS: db.replica,
        TSUNAGI_REDIS_URL: REDIS,
        TSUNAGI_REDIS_PREFIX: `tsunagi-test-${crypto.randomBytes(8).toString('hex')}`,
        TSUNAGI_SEND_RATE: '5',
        TSUNAGI_SEND_BURST: '5',
        TSUNAGI_WEBHOOK_ALLOW_PRIVATE: 'true',
      },
    });
  });
  after(async () => {
    h.closeAll();
    if (server) await server.destroy();
    if (hooks) hooks.close();
  });

  it('every metric the Grafana dashboard names is exported', async () => {
    const base = server.url;
    const admin = h.adminToken('kit-admin');
    const room = h.roomId('kit');
    await h.createRoom(base, admin, room);
    const port = hooks.address().port;
    for (const p of ['/ok', '/fail']) {
      const r = await h.http(base, 'POST', '/api/v1/webhooks', admin, { url: `http://127.0.0.1:${port}${p}`, events: ['message'] });
      assert.equal(r.status, 201, r.text);
    }
    const user = await h.registerUser(base);
    assert.equal((await h.http(base, 'GET', `/api/v1/users/${user.user.id}`, user.token)).status, 200);
    assert.equal((await h.http(base, 'GET', `/api/v1/users/${user.user.id}`, user.token)).status, 200);
    const s = await h.connect(base, h.userToken('kit-sender'));
    assert.equal((await h.ack(s, 'join', { room })).ok, true);
    const codes = [];
    for (let n = 0; n < 8; n++) codes.push((await h.ack(s, 'send', { room, content: `m${n}` })).ok ? 'ok' : 'refused');
    assert.ok(codes.includes('refused'), `the send limit refused some: ${codes}`);
    assert.equal((await h.ack(s, 'sync', { room, since_seq: 0 })).ok, true);
    assert.equal((await h.http(base, 'GET', `/api/v1/rooms/${room}/messages?limit=10`, admin)).status, 200);
    assert.equal((await h.http(base, 'POST', '/api/v1/sensors', admin, { id: 'kit-sensor' })).status, 201);
    const readings = await h.http(base, 'POST', '/api/v1/sensors/kit-sensor/readings?durable=true', admin, { readings: [{ value: 1 }, { value: 2 }] });
    assert.equal(readings.status, 201, readings.text);

    const { names } = dashboardMetrics();
    const table = fs.readFileSync(path.join(ROOT, 'src/telemetry.rs'), 'utf8');
    let lastText = '';
    const missing = () => {
      const have = exported(lastText);
      return [...names].filter((n) => !ONLY_AFTER_A_FAULT.has(n) && !have.has(n));
    };
    // jobs, webhook attempts and the replica's gauges come from background work: await them
    await h.until(async () => {
      lastText = (await h.http(base, 'GET', '/metrics')).text;
      return missing().length === 0;
    }, 20000, 'every dashboard metric in /metrics').catch((e) => {
      throw new Error(`${e.message}; missing: ${missing().join(', ')}`);
    });
    for (const n of ONLY_AFTER_A_FAULT) assert.ok(table.includes(`"${n}"`), `${n} is in the METRICS table of src/telemetry.rs`);
    // histograms are named by their series, and each has all three
    const have = exported(lastText);
    for (const n of names) {
      const stem = n.replace(/_(bucket|sum|count)$/, '');
      if (stem !== n) for (const part of ['_bucket', '_sum', '_count']) assert.ok(have.has(stem + part), `${stem}${part}`);
    }
  });

  it('nginx accepts deploy/nginx.conf (nginx -t)', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tsunagi-nginx-t-'));
    try {
      // as shipped, but with pid and error log where this process may write (nginx -t opens them)
      const conf = fs.readFileSync(path.join(ROOT, 'deploy/nginx.conf'), 'utf8')
        .replace(/^pid .*# test: pid$/m, `pid ${dir}/nginx.pid;`)
        .replace(/^error_log .*# test: error_log$/m, `error_log ${dir}/error.log warn;`);
      fs.writeFileSync(path.join(dir, 'nginx.conf'), conf);
      const out = execFileSync(process.env.NGINX || '/usr/sbin/nginx', ['-t', '-p', dir, '-c', path.join(dir, 'nginx.conf')],
        { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
      assert.equal(typeof out, 'string');
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
