'use strict';
// Issue 15: Redis goes away for 10 s under load (a private redis-server: the shared one is never
// stopped). Sends still commit and ack, sockets on the sender's instance still get them, /readyz
// is 503 naming Redis; when Redis is back, fan-out resumes and every client holds every message
// (live, by the instances' gap filling, or by its own `sync` after a reconnect).

const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { spawn } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const h = require('../harness');
const { closeClients, untilAllHold, reader, sender, assertHistoryComplete } = require('./fleet');

if (!process.env.TSUNAGI_TEST_PG) throw new Error('TSUNAGI_TEST_PG must name the PostgreSQL server (postgres://user@host:port)');
const OUTAGE_MS = 10000;

/** A redis-server of this test's own on `port`; `stop()` kills it, `start()` runs it again. */
function privateRedis(port) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tsunagi-redis-'));
  let proc = null;
  const ping = () => new Promise((resolve) => {
    const c = require('node:net').connect(port, '127.0.0.1');
    c.on('connect', () => c.write('PING\r\n'));
    c.on('data', (d) => { c.destroy(); resolve(d.toString().startsWith('+PONG')); });
    c.on('error', () => resolve(false));
  });
  return {
    url: `redis://127.0.0.1:${port}`,
    async start() {
      proc = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '',
        '--appendonly', 'no', '--dir', dir], { stdio: 'ignore' });
      await h.until(ping, 10000, 'private redis answers');
    },
    async stop() {
      const exited = new Promise((resolve) => proc.on('exit', resolve));
      proc.kill('SIGKILL');
      await exited;
      proc = null;
    },
    async destroy() {
      if (proc) await this.stop();
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}

describe('Redis outage', () => {
  let redis;
  let servers;
  const room = h.roomId('redis-out');
  before(async () => {
    redis = privateRedis(await h.freePort());
    await redis.start();
    servers = await h.startCluster(2, {
      env: { TSUNAGI_REDIS_URL: redis.url, TSUNAGI_REDIS_PREFIX: 'outage', TSUNAGI_SEND_RATE: '0' },
    });
    await h.createRoom(servers[0].url, h.userToken('out-owner'), room);
  });
  after(async () => {
    closeClients();
    if (servers) await servers.destroy();
    if (redis) await redis.destroy();
  });

  it('sends commit and ack and deliver locally while Redis is down; afterwards nothing is missing', async () => {
    const [a, b] = servers;
    const readers = [a, a, b, b].map((s, i) => reader(s.url, h.userToken(`out-r${i}`), room));
    for (const r of readers) await h.withTimeout(r.joined, 10000, 'reader joins');
    const senders = [a, b].map((s, i) => sender(s.url, h.userToken(`out-s${i}`), room, { name: `out-s${i}` }));
    for (const s of senders) await h.withTimeout(s.connected(), 10000, 'sender connects');
    for (const s of senders) for (let n = 0; n < 10; n++) await s.send(`before ${n}`);
    await untilAllHold(readers, 20, 10000);

    await redis.stop();
    const down = Date.now();
    // /readyz names Redis (the health check, not a cached verdict)
    for (const s of servers) {
      await h.until(async () => (await h.http(s.url, 'GET', '/readyz')).status === 503, 5000, 'readyz 503');
      const r = await h.http(s.url, 'GET', '/readyz');
      assert.match(r.body.error.message, /redis|bus/i, r.text);
      assert.equal(r.body.checks.redis, 'failed', r.text);
    }
    // sends still commit and ack on both instances, and reach the sender's own instance's sockets
    const during = [];
    for (let n = 0; n < 10; n++) for (const s of senders) during.push(await s.send(`during ${n}`));
    const onA = during.filter((m) => senders[0].acked.includes(m)).map((m) => m.seq);
    await h.until(() => onA.every((seq) => readers[0].seqs().includes(seq) && readers[1].seqs().includes(seq)),
      5000, 'local delivery on A while Redis is down');
    const lastDuring = Math.max(...during.map((m) => m.seq));
    assert.equal(lastDuring, 40, 'seqs stay gapless without Redis');
    // keep Redis away for the whole outage while the load goes on
    let n = 0;
    while (Date.now() - down < OUTAGE_MS) await senders[n++ % 2].send(`still down ${n}`);

    await redis.start();
    const up = Date.now();
    for (const s of servers) {
      await h.until(async () => (await h.http(s.url, 'GET', '/readyz')).status === 200, 15000, 'readyz 200 again');
    }
    const readyMs = Date.now() - up;
    for (const s of senders) for (let k = 0; k < 5; k++) await s.send(`after ${k}`);
    const { acked } = await assertHistoryComplete(a.url, room, senders);
    await untilAllHold(readers, acked, 20000);
    const recoveredMs = Date.now() - up;
    // fan-out again: a message sent on B reaches the readers on A live
    const marks = readers.slice(0, 2).map((r) => h.waitFor(r.socket, 'message', (m) => m.content === 'fan-out again'));
    await senders[1].send('fan-out again');
    await Promise.all(marks);
    console.log(`# Redis outage: ${acked} messages acked (${acked - 40} during the ${OUTAGE_MS} ms outage), ready again `
      + `${readyMs} ms after Redis, every reader whole ${recoveredMs} ms after; reconnects `
      + `${readers.map((r) => r.stats.disconnects.length)}, syncs ${readers.map((r) => r.syncs())}`);
  });
});
