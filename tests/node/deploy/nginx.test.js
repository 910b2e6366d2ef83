'use strict';
// Issue 15: three instances on one PostgreSQL database and one Redis behind the real nginx run
// from deploy/nginx.conf (no stickiness). Clients spread over the instances receive every
// message of their room in order; a kill -9 of one instance loses nothing that was acked.

const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const crypto = require('node:crypto');
const h = require('../harness');
const { closeClients, untilAllHold, reader, sender, assertHistoryComplete, socketsOn } = require('./fleet');

const REDIS = process.env.TSUNAGI_TEST_REDIS || 'redis://127.0.0.1:6379';
if (!process.env.TSUNAGI_TEST_PG) throw new Error('TSUNAGI_TEST_PG must name the PostgreSQL server (postgres://user@host:port)');

const env = () => ({
  TSUNAGI_REDIS_URL: REDIS,
  TSUNAGI_REDIS_PREFIX: `tsunagi-test-${crypto.randomBytes(8).toString('hex')}`,
  TSUNAGI_SEND_RATE: '0',
  TSUNAGI_TRUSTED_PROXIES: '127.0.0.1/32',
});

/** Readers and senders through nginx, spread by least_conn: every instance must hold some. */
async function spread(lb, room, { transports, readers = 9, senders = 3 }) {
  const rs = [];
  for (let i = 0; i < readers; i++) {
    const r = reader(lb.url, h.userToken(`ngx-r${i}`), room, { transports });
    await h.withTimeout(r.joined, 10000, `reader ${i} joins`);
    rs.push(r);
  }
  const ss = [];
  const batch = crypto.randomBytes(3).toString('hex'); // fresh client_ids for each batch of senders
  for (let i = 0; i < senders; i++) {
    const s = sender(lb.url, h.userToken(`ngx-s${i}`), room, { transports, name: `s${i}-${batch}` });
    await h.withTimeout(s.connected(), 10000, `sender ${i} connects`);
    ss.push(s);
  }
  // least_conn counts open upstream connections, not sessions: with polling, the held long polls of
  // other instances' sessions can keep an instance looking busiest at every handshake. Open more
  // readers (a bounded number) until every instance holds a session.
  let held = await Promise.all(lb.servers.map(socketsOn));
  for (let extra = 0; !held.every((n) => n > 0) && extra < 12; extra++) {
    const r = reader(lb.url, h.userToken(`ngx-r${readers + extra}`), room, { transports });
    await h.withTimeout(r.joined, 10000, `extra reader ${extra} joins`);
    rs.push(r);
    held = await Promise.all(lb.servers.map(socketsOn));
  }
  assert.ok(held.every((n) => n > 0), `every instance holds sockets: ${held}`);
  return { rs, ss, held };
}

async function sendAll(ss, perSender) {
  await Promise.all(ss.map(async (s, i) => {
    for (let n = 0; n < perSender; n++) await s.send(`${i} ${n}`);
  }));
}

for (const transports of (process.env.ONLY_WS ? [['websocket']] : [['websocket'], ['polling']])) {
  describe(`behind nginx, ${transports[0]}`, () => {
    let lb;
    const room = h.roomId('ngx');
    before(async () => {
      lb = await h.startBehindNginx(3, { env: env() });
      await h.createRoom(lb.url, h.userToken('ngx-owner'), room);
    });
    after(async () => { closeClients(); if (lb) await lb.destroy(); });

    it('clients on every instance receive every message of the room in order', async () => {
      const { rs, ss } = await spread(lb, room, { transports });
      await sendAll(ss, 30);
      const total = 90;
      await untilAllHold(rs, total, 15000);
      for (const r of rs) {
        assert.deepEqual(r.seqs(), Array.from({ length: total }, (_, i) => i + 1));
        assert.equal(r.liveOrderBroken(), 0, 'live messages in seq order');
        assert.equal(r.stats.disconnects.length, 0, `no reconnect needed: ${r.stats.reasons}`);
      }
      await assertHistoryComplete(lb.url, room, ss);
      for (const c of [...rs, ...ss]) c.close();
    });

    if (transports[0] === 'websocket') {
      it('kill -9 of one instance: its clients recover through nginx and nothing acked is lost', async () => {
        const { rs, ss, held } = await spread(lb, room, { transports });
        const before = (await h.fullHistory(lb.url, h.userToken('ngx-owner'), room)).length;
        const load = sendAll(ss, 60);
        await h.until(() => ss.every((s) => s.acked.length >= 10), 15000, 'load running');
        const victim = lb.servers[held.indexOf(Math.max(...held))];
        await victim.kill9();
        await load;
        const total = before + 180;
        await untilAllHold(rs, total, 20000);
        const dropped = [...rs, ...ss].filter((c) => c.stats.disconnects.length > 0);
        assert.ok(dropped.length > 0, 'the killed instance held clients');
        for (const r of rs) assert.deepEqual(r.seqs(), Array.from({ length: total }, (_, i) => i + 1));
        const { acked } = await assertHistoryComplete(lb.url, room, ss);
        assert.ok(acked >= 180);
        await victim.restart();
        for (const c of [...rs, ...ss]) c.close();
      });
    }
  });
}
