'use strict';
// PROTOCOL.md §3 "Guarantees": order and no gaps, idempotent retries, per-socket order,
// recovery with sync, rate limits, no silent drops (slow consumers).

const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const h = require('./harness');

const { ack, assertAckError } = h;
const range = (a, b) => Array.from({ length: b - a + 1 }, (_, i) => a + i);

/** Asserts `msgs` carry seq 1..n exactly once each, in order. */
function assertContiguous(msgs, n, who) {
  const seqs = msgs.map((m) => m.seq);
  assert.equal(seqs.length, n, `${who}: got ${seqs.length} messages, expected ${n}`);
  assert.deepEqual(seqs, range(1, n), `${who}: seqs out of order, duplicated or with a gap`);
}

describe('guarantees', () => {
  let srv;
  before(async () => { srv = await h.startServer({ env: { TSUNAGI_SEND_RATE: '0' } }); });
  after(async () => { h.closeAll(); if (srv) await srv.destroy(); });

  it('10 pipelined concurrent senders: every receiver sees seq 1..N once, in order, no gap', async () => {
    const room = h.roomId('g');
    await h.createRoom(srv.url, h.userToken('g-owner'), room);
    const SENDERS = 10;
    const PER = 30;
    const N = SENDERS * PER;
    const senders = await Promise.all(range(1, SENDERS).map((i) => h.connect(srv.url, h.userToken(`g-user-${i}`))));
    const passive = await Promise.all(range(1, 3).map((i) => h.connect(srv.url, h.userToken(`g-passive-${i}`))));
    const all = [...senders, ...passive];
    for (const s of all) assert.equal((await ack(s, 'join', { room })).ok, true);
    const received = all.map((s) => h.collect(s, 'message'));

    const sendAcks = senders.map((s, i) => Promise.all(
      range(1, PER).map((k) => ack(s, 'send', { room, content: `u${i + 1}-${k}`, client_id: `c-${i + 1}-${k}` })),
    ));
    const results = await Promise.all(sendAcks);
    const acked = [];
    results.forEach((list, i) => {
      for (const r of list) assert.equal(r.ok, true, JSON.stringify(r));
      const seqs = list.map((r) => r.message.seq);
      // per-socket order: seq increases in emit order
      for (let k = 1; k < seqs.length; k++) assert.ok(seqs[k] > seqs[k - 1], `sender ${i + 1}: seqs ${seqs}`);
      for (const r of list) assert.equal(r.message.user_id, `g-user-${i + 1}`);
      acked.push(...list.map((r) => r.message));
    });
    assert.deepEqual(acked.map((m) => m.seq).sort((a, b) => a - b), range(1, N));

    await h.until(() => received.every((r) => r.length >= N), 30000, 'all receivers to get N messages');
    await h.sleep(500); // anything extra (a duplicate) would show up now
    const bySeq = new Map(acked.map((m) => [m.seq, m]));
    received.forEach((msgs, i) => {
      assertContiguous(msgs, N, `receiver ${i}`);
      for (const m of msgs) assert.deepEqual(m, bySeq.get(m.seq));
    });
    // the stored history agrees
    const hist = await h.fullHistory(srv.url, h.userToken('g-owner'), room);
    assertContiguous(hist, N, 'history');
    for (const m of hist) assert.deepEqual(m, bySeq.get(m.seq));
  });

  it('sockets joining while others send: history + live messages have no gap and no repeat', async () => {
    const room = h.roomId('midjoin');
    await h.createRoom(srv.url, h.userToken('mj-owner'), room);
    const senders = await Promise.all(range(1, 3).map((i) => h.connect(srv.url, h.userToken(`mj-s${i}`))));
    let stop = false;
    const loops = senders.map(async (s) => {
      while (!stop) {
        const r = await ack(s, 'send', { room, content: 'tick' });
        assert.equal(r.ok, true, JSON.stringify(r));
      }
    });
    const joiners = [];
    for (let k = 0; k < 15; k++) {
      await h.sleep(20);
      const j = await h.connect(srv.url, h.userToken(`mj-j${k}`));
      const live = h.collect(j, 'message');
      const a = await ack(j, 'join', { room });
      assert.equal(a.ok, true);
      joiners.push({ a, live });
    }
    stop = true;
    await Promise.all(loops);
    const n = (await h.fullHistory(srv.url, h.userToken('mj-owner'), room)).length;
    await h.until(() => joiners.every(({ a, live }) => live.length >= n - a.last_seq), 15000, 'joiners to catch up');
    await h.sleep(300);
    for (const { a, live } of joiners) {
      const hs = a.history.map((m) => m.seq);
      assert.deepEqual(hs, range(Math.max(1, a.last_seq - 49), a.last_seq));
      assert.deepEqual(live.map((m) => m.seq), range(a.last_seq + 1, n), `joined at ${a.last_seq}`);
    }
  });

  it('the same client_id sent at once from 6 sockets and HTTP of one user → one message', async () => {
    const room = h.roomId('race');
    await h.createRoom(srv.url, h.userToken('rc-owner'), room);
    const t = h.userToken('rc-user');
    const socks = await Promise.all(range(1, 6).map(() => h.connect(srv.url, t)));
    for (let round = 1; round <= 3; round++) {
      const cid = `race-${round}`;
      const [acks, posts] = await Promise.all([
        Promise.all(socks.map((s, i) => ack(s, 'send', { room, content: `s${i}`, client_id: cid }))),
        Promise.all(range(1, 3).map((i) => h.http(srv.url, 'POST', `/api/v1/rooms/${room}/messages`, t, { content: `h${i}`, client_id: cid }))),
      ]);
      for (const a of acks) assert.equal(a.ok, true, JSON.stringify(a));
      const msgs = [...acks.map((a) => a.message), ...posts.map((p) => p.body)];
      for (const m of msgs) assert.deepEqual(m, msgs[0]);
      assert.equal(msgs[0].seq, round);
      const created = posts.filter((p) => p.status === 201).length;
      for (const p of posts) assert.ok(p.status === 200 || p.status === 201, p.text);
      assert.ok(created <= 1, `${created} HTTP posts answered 201 for one client_id`);
    }
    const hist = await h.fullHistory(srv.url, t, room);
    assertContiguous(hist, 3, 'history');
  });

  it('a long-polling receiver gets seq 1..N in order', async () => {
    const room = h.roomId('pollrecv');
    await h.createRoom(srv.url, h.userToken('pr-owner'), room);
    const p = await h.connect(srv.url, h.userToken('pr-poll'), { transports: ['polling'] });
    assert.equal((await ack(p, 'join', { room })).ok, true);
    const got = h.collect(p, 'message');
    const s = await h.connect(srv.url, h.userToken('pr-send'));
    const res = await Promise.all(range(1, 200).map((k) => ack(s, 'send', { room, content: `p${k}` })));
    for (const r of res) assert.equal(r.ok, true);
    await h.until(() => got.length >= 200, 20000, 'polling socket to get 200');
    await h.sleep(300);
    assertContiguous(got, 200, 'polling receiver');
    assert.equal(p.io.engine.transport.name, 'polling');
  });

  it('a retried client_id returns the same message and broadcasts nothing new', async () => {
    const room = h.roomId('idem');
    await h.createRoom(srv.url, h.userToken('i-owner'), room);
    const a1 = await h.connect(srv.url, h.userToken('i-user'));
    const a2 = await h.connect(srv.url, h.userToken('i-user'));
    const rcv = await h.connect(srv.url, h.userToken('i-recv'));
    for (const s of [a1, rcv]) assert.equal((await ack(s, 'join', { room })).ok, true);
    const got = h.collect(rcv, 'message');
    const gotSender = h.collect(a1, 'message');

    const first = await ack(a1, 'send', { room, content: 'original', client_id: 'retry-1' });
    assert.equal(first.ok, true);
    // same socket, different content: the first message unchanged
    const again = await ack(a1, 'send', { room, content: 'changed', client_id: 'retry-1' });
    assert.deepEqual(again, first);
    // another socket of the same user
    const other = await ack(a2, 'send', { room, content: 'third', client_id: 'retry-1' });
    assert.deepEqual(other, first);
    // over HTTP: 200 with the same message
    const httpRetry = await h.http(srv.url, 'POST', `/api/v1/rooms/${room}/messages`, h.userToken('i-user'),
      { content: 'fourth', client_id: 'retry-1' });
    assert.equal(httpRetry.status, 200, httpRetry.text);
    assert.deepEqual(httpRetry.body, first.message);

    // a marker sent after the retries; then listen a while
    const mark = await ack(a1, 'send', { room, content: 'marker', client_id: 'retry-2' });
    assert.equal(mark.message.seq, first.message.seq + 1, 'retries must not consume seqs');
    await h.until(() => got.length >= 2 && gotSender.length >= 2, 10000, 'marker');
    await h.sleep(500);
    assert.deepEqual(got, [first.message, mark.message]);
    assert.deepEqual(gotSender, [first.message, mark.message]);

    // the key is (user_id, room, client_id): another user or another room gets a new message
    const otherUser = await h.connect(srv.url, h.userToken('i-user-2'));
    const ou = await ack(otherUser, 'send', { room, content: 'other user', client_id: 'retry-1' });
    assert.equal(ou.ok, true);
    assert.notEqual(ou.message.id, first.message.id);
    assert.equal(ou.message.content, 'other user');
    const room2 = h.roomId('idem');
    await h.createRoom(srv.url, h.userToken('i-owner'), room2);
    const or = await ack(a1, 'send', { room: room2, content: 'other room', client_id: 'retry-1' });
    assert.equal(or.ok, true);
    assert.notEqual(or.message.id, first.message.id);
    assert.equal(or.message.room, room2);
    assert.equal(or.message.seq, 1);
  });

  it('pipelined retries of one client_id in one burst produce one message', async () => {
    const room = h.roomId('idem2');
    await h.createRoom(srv.url, h.userToken('i2-owner'), room);
    const s = await h.connect(srv.url, h.userToken('i2-user'));
    assert.equal((await ack(s, 'join', { room })).ok, true);
    const got = h.collect(s, 'message');
    const res = await Promise.all(range(1, 5).map((k) => ack(s, 'send', { room, content: `try ${k}`, client_id: 'same' })));
    for (const r of res) assert.deepEqual(r, res[0]);
    assert.equal(res[0].message.content, 'try 1');
    const mark = await ack(s, 'send', { room, content: 'mark' });
    await h.until(() => got.length >= 2, 10000, 'marker');
    await h.sleep(300);
    assert.deepEqual(got.map((m) => m.seq), [1, 2]);
    assert.equal(mark.message.seq, 2);
  });

  it('per-socket order: 50 back-to-back sends are committed in emit order', async () => {
    const room = h.roomId('order');
    await h.createRoom(srv.url, h.userToken('o-owner'), room);
    const s = await h.connect(srv.url, h.userToken('o-user'));
    // concurrent noise from other users in the same room
    const noise = await Promise.all(range(1, 3).map((i) => h.connect(srv.url, h.userToken(`o-noise-${i}`))));
    const noiseAcks = noise.map((n, i) => Promise.all(range(1, 20).map((k) => ack(n, 'send', { room, content: `n${i}-${k}` }))));
    const res = await Promise.all(range(1, 50).map((k) => ack(s, 'send', { room, content: `k${k}` })));
    for (const r of res) assert.equal(r.ok, true);
    const seqs = res.map((r) => r.message.seq);
    for (let k = 1; k < seqs.length; k++) assert.ok(seqs[k] > seqs[k - 1], `seqs not increasing: ${seqs}`);
    for (const [k, r] of res.entries()) assert.equal(r.message.content, `k${k + 1}`);
    await Promise.all(noiseAcks);
    const hist = await h.fullHistory(srv.url, h.userToken('o-owner'), room);
    assertContiguous(hist, 110, 'history');
    const mine = hist.filter((m) => m.user_id === 'o-user').map((m) => m.content);
    assert.deepEqual(mine, range(1, 50).map((k) => `k${k}`));
  });

  it('recovery: a socket that was away syncs from its last seq and gets exactly what it missed', async () => {
    const room = h.roomId('rec');
    const info = await h.createRoom(srv.url, h.userToken('r-owner'), room);
    const a = await h.connect(srv.url, h.userToken('r-a'));
    const b = await h.connect(srv.url, h.userToken('r-b'));
    const j = await ack(a, 'join', { room });
    const seen = h.collect(a, 'message');
    for (let i = 1; i <= 5; i++) assert.equal((await ack(b, 'send', { room, content: `before ${i}` })).ok, true);
    await h.until(() => seen.length === 5, 10000, 'first 5');
    const lastSeen = seen[seen.length - 1].seq;
    assert.equal(lastSeen, j.last_seq + 5);
    a.disconnect();
    const sent = [];
    for (let i = 1; i <= 20; i++) {
      const r = await ack(b, 'send', { room, content: `missed ${i}` });
      assert.equal(r.ok, true);
      sent.push(r.message);
    }
    const a2 = await h.connect(srv.url, h.userToken('r-a'));
    const r = await ack(a2, 'sync', { room, since_seq: lastSeen, epoch: info.epoch });
    assert.equal(r.ok, true);
    assert.equal(r.epoch, info.epoch);
    assert.equal(r.more, false);
    assert.deepEqual(r.messages, sent);

    // with a limit smaller than the gap: pages with more:true, the last one more:false
    const pages = [];
    let since = lastSeen;
    for (;;) {
      const p = await ack(a2, 'sync', { room, since_seq: since, epoch: info.epoch, limit: 8 });
      assert.equal(p.ok, true);
      pages.push([p.messages.length, p.more]);
      if (p.messages.length) since = p.messages[p.messages.length - 1].seq;
      if (!p.more) break;
      assert.ok(pages.length < 10, 'too many pages');
    }
    assert.deepEqual(pages, [[8, true], [8, true], [4, false]]);
    const p1 = await ack(a2, 'sync', { room, since_seq: lastSeen, limit: 10 });
    const p2 = await ack(a2, 'sync', { room, since_seq: p1.messages[9].seq, limit: 10 });
    assert.deepEqual([p1.messages.length, p1.more, p2.messages.length, p2.more], [10, true, 10, false]);
    assert.deepEqual([...p1.messages, ...p2.messages], sent);
  });

  it('recovery with the client\'s own reconnection (same Manager)', async () => {
    const room = h.roomId('rec2');
    const info = await h.createRoom(srv.url, h.userToken('r2-owner'), room);
    const a = await h.connect(srv.url, h.userToken('r2-a'), { reconnection: true, reconnectionDelay: 100, reconnectionDelayMax: 200 });
    const b = await h.connect(srv.url, h.userToken('r2-b'));
    assert.equal((await ack(a, 'join', { room })).ok, true);
    const seen = h.collect(a, 'message');
    assert.equal((await ack(b, 'send', { room, content: 'one' })).ok, true);
    await h.until(() => seen.length === 1, 10000, 'first message');
    const reconnected = new Promise((resolve) => a.io.once('reconnect', resolve));
    a.io.engine.close(); // transport closed: the client reconnects by itself
    const sent = [];
    for (let i = 1; i <= 20; i++) sent.push((await ack(b, 'send', { room, content: `gap ${i}` })).message);
    await h.withTimeout(reconnected, 15000, 'reconnect');
    const r = await ack(a, 'sync', { room, since_seq: seen[seen.length - 1].seq, epoch: info.epoch });
    assert.equal(r.ok, true);
    assert.equal(seen.length, 1, 'no live messages while away or before re-joining');
    assert.deepEqual(r.messages, sent);
    assert.equal(r.more, false);
    a.close();
  });
});

describe('rate limits (TSUNAGI_SEND_RATE=2, TSUNAGI_SEND_BURST=3)', () => {
  let srv;
  let room;
  before(async () => {
    srv = await h.startServer({ env: { TSUNAGI_SEND_RATE: '2', TSUNAGI_SEND_BURST: '3' } });
    room = h.roomId('rl');
    await h.createRoom(srv.url, h.userToken('rl-owner'), room);
  });
  after(async () => { h.closeAll(); if (srv) await srv.destroy(); });

  it('the 4th immediate send is rate_limited with retry_after_ms; after waiting it succeeds', async () => {
    const s = await h.connect(srv.url, h.userToken('rl-a'));
    const res = await Promise.all(range(1, 4).map((k) => ack(s, 'send', { room, content: `b${k}` })));
    assert.deepEqual(res.slice(0, 3).map((r) => r.ok), [true, true, true], JSON.stringify(res));
    const limited = res[3];
    assertAckError(assert, limited, 'rate_limited');
    const wait = limited.error.retry_after_ms;
    assert.equal(typeof wait, 'number');
    assert.ok(Number.isInteger(wait) && wait > 0, `retry_after_ms ${wait}`);
    assert.deepEqual(Object.keys(limited.error).sort(), ['code', 'message', 'retry_after_ms']);
    await h.sleep(wait + 50);
    const after = await ack(s, 'send', { room, content: 'after wait' });
    assert.equal(after.ok, true, JSON.stringify(after));
  });

  it('the limit is per user: the same user\'s other socket is limited, another user is not', async () => {
    const s1 = await h.connect(srv.url, h.userToken('rl-b'));
    const s2 = await h.connect(srv.url, h.userToken('rl-b'));
    const other = await h.connect(srv.url, h.userToken('rl-c'));
    const res = await Promise.all(range(1, 3).map((k) => ack(s1, 'send', { room, content: `b${k}` })));
    for (const r of res) assert.equal(r.ok, true);
    assertAckError(assert, await ack(s2, 'send', { room, content: 'x' }), 'rate_limited');
    assert.equal((await ack(other, 'send', { room, content: 'y' })).ok, true);
  });

  it('errors that come before rate_limited in §5 win over it', async () => {
    const s = await h.connect(srv.url, h.userToken('rl-d'));
    const res = await Promise.all(range(1, 3).map((k) => ack(s, 'send', { room, content: `b${k}` })));
    for (const r of res) assert.equal(r.ok, true);
    assertAckError(assert, await ack(s, 'send', { room: 'Bad', content: 'x' }), 'bad_request');
    assertAckError(assert, await ack(s, 'send', { room, content: '' }), 'bad_request');
    assertAckError(assert, await ack(s, 'send', { room: 'missing-room-rl', content: 'x' }), 'not_found');
    const priv = h.roomId('rlp');
    await h.createRoom(srv.url, h.userToken('rl-owner'), priv, { private: true });
    assertAckError(assert, await ack(s, 'send', { room: priv, content: 'x' }), 'forbidden');
    assertAckError(assert, await ack(s, 'send', { room, content: 'x' }), 'rate_limited');
  });

  it('HTTP and Socket.IO share one limit: 3 HTTP posts then a socket send → rate_limited', async () => {
    const t = h.userToken('rl-e');
    const s = await h.connect(srv.url, t);
    const posts = await Promise.all(range(1, 3).map((k) =>
      h.http(srv.url, 'POST', `/api/v1/rooms/${room}/messages`, t, { content: `h${k}` })));
    for (const p of posts) assert.equal(p.status, 201, p.text);
    const r = await ack(s, 'send', { room, content: 'socket' });
    assertAckError(assert, r, 'rate_limited');
    assert.ok(r.error.retry_after_ms > 0);
  });

  it('3 socket sends then an HTTP post → 429 rate_limited with Retry-After', async () => {
    const t = h.userToken('rl-f');
    const s = await h.connect(srv.url, t);
    const res = await Promise.all(range(1, 3).map((k) => ack(s, 'send', { room, content: `s${k}` })));
    for (const r of res) assert.equal(r.ok, true);
    const p = await h.http(srv.url, 'POST', `/api/v1/rooms/${room}/messages`, t, { content: 'http' });
    h.assertHttpError(assert, p, 429, 'rate_limited');
    const ra = p.headers.get('retry-after');
    assert.ok(ra !== null, 'Retry-After header missing');
    assert.match(ra, /^\d+$/, `Retry-After must be delay-seconds, got ${ra}`);
    assert.ok(Number(ra) >= 1, `Retry-After ${ra}`);
  });
});

describe('slow consumer (TSUNAGI_SOCKET_BUFFER=16)', () => {
  let srv;
  before(async () => { srv = await h.startServer({ env: { TSUNAGI_SEND_RATE: '0', TSUNAGI_SOCKET_BUFFER: '16' } }); });
  after(async () => { h.closeAll(); if (srv) await srv.destroy(); });

  it('a socket that stops reading is disconnected, recovers everything with sync; others are undisturbed', async () => {
    const room = h.roomId('slow');
    const info = await h.createRoom(srv.url, h.userToken('sl-owner'), room);
    const metricsBefore = h.metricValue((await h.http(srv.url, 'GET', '/metrics')).text,
      'tsunagi_slow_consumer_disconnects_total') ?? 0;

    const slow = await h.connect(srv.url, h.userToken('sl-slow'));
    const fast = await h.connect(srv.url, h.userToken('sl-fast'));
    const senders = await Promise.all(range(1, 3).map((i) => h.connect(srv.url, h.userToken(`sl-send-${i}`))));
    for (const s of [slow, fast]) assert.equal((await ack(s, 'join', { room })).ok, true);
    const slowGot = h.collect(slow, 'message');
    const fastGot = h.collect(fast, 'message');
    const disconnected = new Promise((resolve) => slow.on('disconnect', resolve));

    const tcp = slow.io.engine.transport.ws._socket;
    tcp.pause(); // stop reading: the server's buffers for this socket fill up

    // ~9.6 MB in all: more than twice what the kernel can hold for a socket that does not read
    // (send buffer up to tcp_wmem's 4 MiB plus the reader's receive buffer: 4.3 MB over loopback
    // on the CI machine). At 4.5 MB the kernel took nearly everything and the 16 packets the
    // server may queue were never full: the test failed whenever the send buffer grew to its max.
    const PER = 200;
    const N = PER * senders.length;
    const body = 'x'.repeat(16000);
    // each sender waits for its ack before the next send: a steady stream, not a burst larger
    // than the 16-packet buffer (which would overflow any socket, fast or not)
    await Promise.all(senders.map(async (s, i) => {
      for (let k = 1; k <= PER; k++) {
        const r = await ack(s, 'send', { room, content: `${i}-${k} ${body}` });
        assert.equal(r.ok, true, JSON.stringify(r));
      }
    }));

    await h.until(async () => {
      const v = h.metricValue((await h.http(srv.url, 'GET', '/metrics')).text, 'tsunagi_slow_consumer_disconnects_total');
      return v !== null && v > metricsBefore;
    }, 15000, 'slow_consumer_disconnects_total to increase');

    tcp.resume();
    await h.withTimeout(disconnected, 15000, 'disconnect of the slow socket');
    // what the slow socket got before it was cut: a prefix 1..k, no gap
    const k = slowGot.length;
    assert.ok(k < N, `slow socket received everything (${k}); it should have been cut`);
    assertContiguous(slowGot, k, 'slow socket before disconnect');

    // reconnect and recover
    const again = await h.connect(srv.url, h.userToken('sl-slow'));
    const recovered = [];
    let since = k;
    for (;;) {
      const r = await ack(again, 'sync', { room, since_seq: since, epoch: info.epoch, limit: 500 });
      assert.equal(r.ok, true, JSON.stringify(r));
      recovered.push(...r.messages);
      if (r.messages.length) since = r.messages[r.messages.length - 1].seq;
      if (!r.more) break;
    }
    assertContiguous([...slowGot, ...recovered], N, 'slow socket after sync');

    // the other socket was not disturbed
    await h.until(() => fastGot.length >= N || !fast.connected, 30000, 'fast socket to get everything');
    await h.sleep(300);
    assertContiguous(fastGot, N, 'fast socket');
    assert.equal(fast.connected, true);
  });
});
