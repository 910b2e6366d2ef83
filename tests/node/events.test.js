'use strict';
// PROTOCOL.md §3 (client events and their acks, server events) and §5 (precise rules).

const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const h = require('./harness');

const { ack, assertAckError, assertMessageShape } = h;

/** How long we listen to be sure an event does NOT arrive (after a positive marker arrived). */
const QUIET_MS = 400;

describe('events', () => {
  let srv;
  let url;
  before(async () => {
    srv = await h.startServer({ env: { TSUNAGI_SEND_RATE: '0', TSUNAGI_TYPING_RATE: '1000' } });
    url = srv.url;
  });
  after(async () => { h.closeAll(); if (srv) await srv.destroy(); });

  /** Creates a public room owned by `owner` and returns [roomId, roomInfo]. */
  async function room(owner = 'owner', extra = {}) {
    const id = h.roomId('ev');
    const info = await h.createRoom(url, h.userToken(owner), id, extra);
    return [id, info];
  }
  const sock = (user, opts) => h.connect(url, h.userToken(user), opts);

  // ------------------------------------------------------------------ join

  describe('join', () => {
    it('acks { ok, room, epoch, last_seq, history } with the 50 newest messages oldest first', async () => {
      const [id, info] = await room('jo');
      const sender = await sock('jo');
      const acks = await Promise.all(
        Array.from({ length: 60 }, (_, i) => ack(sender, 'send', { room: id, content: `m${i + 1}` })),
      );
      for (const a of acks) assert.equal(a.ok, true, JSON.stringify(a));
      const s = await sock('jo-reader');
      const j = await ack(s, 'join', { room: id });
      assert.equal(j.ok, true);
      assert.deepEqual(Object.keys(j).sort(), ['epoch', 'history', 'last_seq', 'ok', 'room', 'state']);
      assert.equal(j.room, id);
      assert.equal(typeof j.epoch, 'string');
      assert.equal(j.epoch, info.epoch);
      assert.equal(j.last_seq, 60);
      assert.equal(j.history.length, 50);
      assert.deepEqual(j.history.map((m) => m.seq), Array.from({ length: 50 }, (_, i) => i + 11));
      assert.deepEqual(j.history.map((m) => m.content), Array.from({ length: 50 }, (_, i) => `m${i + 11}`));
      for (const m of j.history) {
        assertMessageShape(assert, m);
        assert.equal(m.room, id);
        assert.equal(m.user_id, 'jo');
      }
      // the history holds exactly what the acks returned
      const bySeq = new Map(acks.map((a) => [a.message.seq, a.message]));
      for (const m of j.history) assert.deepEqual(m, bySeq.get(m.seq));
    });

    it('join of an empty room → history [] and last_seq 0', async () => {
      const [id, info] = await room();
      const s = await sock('j2');
      const j = await ack(s, 'join', { room: id });
      assert.deepEqual(j, { ok: true, room: id, epoch: info.epoch, last_seq: 0, history: [], state: [] });
    });

    it('join of fewer than 50 messages returns them all', async () => {
      const [id] = await room('j3');
      const s = await sock('j3');
      for (let i = 1; i <= 3; i++) assert.equal((await ack(s, 'send', { room: id, content: `c${i}` })).ok, true);
      const j = await ack(s, 'join', { room: id });
      assert.equal(j.last_seq, 3);
      assert.deepEqual(j.history.map((m) => [m.seq, m.content]), [[1, 'c1'], [2, 'c2'], [3, 'c3']]);
    });

    it('join of a missing room → not_found', async () => {
      const s = await sock('j4');
      assertAckError(assert, await ack(s, 'join', { room: 'no-such-room-here' }), 'not_found');
    });

    it('a 64-character room id is valid', async () => {
      const id = `x${process.pid}`.padEnd(64, 'z');
      assert.equal(id.length, 64);
      await h.createRoom(url, h.userToken('j5'), id);
      const s = await sock('j5');
      const j = await ack(s, 'join', { room: id });
      assert.equal(j.ok, true);
      assert.equal(j.room, id);
    });

    it('room ids with _ and - and digits are valid', async () => {
      const id = `a_b-9_${process.pid}`;
      await h.createRoom(url, h.userToken('j6'), id);
      const s = await sock('j6');
      assert.equal((await ack(s, 'join', { room: id })).ok, true);
    });
  });

  // ------------------------------------------------------------------ leave

  describe('leave', () => {
    it('leave of a joined room → { ok: true } and no more messages for that socket', async () => {
      const [id] = await room();
      const a = await sock('l1');
      const b = await sock('l2');
      assert.equal((await ack(a, 'join', { room: id })).ok, true);
      assert.equal((await ack(b, 'join', { room: id })).ok, true);
      assert.deepEqual(await ack(a, 'leave', { room: id }), { ok: true });
      const gotA = h.collect(a, 'message');
      const mark = h.waitFor(b, 'message', (m) => m.content === 'after-leave');
      assert.equal((await ack(b, 'send', { room: id, content: 'after-leave' })).ok, true);
      await mark;
      await h.sleep(QUIET_MS);
      assert.deepEqual(gotA, []);
    });

    it('leave of an existing room never joined → { ok: true }', async () => {
      const [id] = await room();
      const s = await sock('l3');
      assert.deepEqual(await ack(s, 'leave', { room: id }), { ok: true });
    });

    it('leave of a missing room → not_found', async () => {
      const s = await sock('l4');
      assertAckError(assert, await ack(s, 'leave', { room: 'missing-room-for-leave' }), 'not_found');
    });
  });

  // ------------------------------------------------------------------ send

  describe('send', () => {
    it('acks { ok, message } and broadcasts to every joined socket: sender, sender\'s other socket, other users', async () => {
      const [id] = await room('s1');
      const a1 = await sock('s1');
      const a2 = await sock('s1');
      const b = await sock('s2');
      const notJoined = await sock('s3');
      for (const s of [a1, a2, b]) assert.equal((await ack(s, 'join', { room: id })).ok, true);
      const gotNotJoined = h.collect(notJoined, 'message');
      const waits = [a1, a2, b].map((s) => h.waitFor(s, 'message', (m) => m.content === 'hello'));
      const r = await ack(a1, 'send', { room: id, content: 'hello' });
      assert.deepEqual(Object.keys(r).sort(), ['message', 'ok']);
      assert.equal(r.ok, true);
      assertMessageShape(assert, r.message);
      assert.equal(r.message.room, id);
      assert.equal(r.message.seq, 1);
      assert.equal(r.message.user_id, 's1');
      assert.equal(r.message.content, 'hello');
      assert.equal(r.message.client_id, null);
      for (const m of await Promise.all(waits)) assert.deepEqual(m, r.message);
      await h.sleep(QUIET_MS);
      assert.deepEqual(gotNotJoined, []);
    });

    it('client_id is echoed in the message', async () => {
      const [id] = await room('s4');
      const s = await sock('s4');
      const r = await ack(s, 'send', { room: id, content: 'with id', client_id: 'cid-1' });
      assert.equal(r.ok, true);
      assert.equal(r.message.client_id, 'cid-1');
    });

    it('send needs no prior join (public room)', async () => {
      const [id] = await room('s5');
      const reader = await sock('s6');
      assert.equal((await ack(reader, 'join', { room: id })).ok, true);
      const got = h.waitFor(reader, 'message', (m) => m.content === 'no join');
      const s = await sock('s7');
      const r = await ack(s, 'send', { room: id, content: 'no join' });
      assert.equal(r.ok, true);
      assert.equal(r.message.user_id, 's7');
      assert.deepEqual(await got, r.message);
    });

    it('send to a missing room → not_found', async () => {
      const s = await sock('s8');
      assertAckError(assert, await ack(s, 'send', { room: 'missing-room-send', content: 'x' }), 'not_found');
    });

    it('the author is the token sub, whatever the payload says; unknown fields are ignored', async () => {
      const [id] = await room('s9');
      const s = await sock('s9');
      const r = await ack(s, 'send', {
        room: id, content: 'spoof', user_id: 'mallory', author: 'mallory', seq: 999, id: 'x', extra: { a: 1 },
      });
      assert.equal(r.ok, true, JSON.stringify(r));
      assert.equal(r.message.user_id, 's9');
      assert.equal(r.message.seq, 1);
      assert.notEqual(r.message.id, 'x');
    });

    it('content: empty → bad_request; U+0000 → bad_request; missing/null → bad_request', async () => {
      const [id] = await room('s10');
      const s = await sock('s10');
      assertAckError(assert, await ack(s, 'send', { room: id, content: '' }), 'bad_request');
      assertAckError(assert, await ack(s, 'send', { room: id, content: 'a\u0000b' }), 'bad_request');
      assertAckError(assert, await ack(s, 'send', { room: id, content: '\u0000' }), 'bad_request');
      assertAckError(assert, await ack(s, 'send', { room: id }), 'bad_request');
      assertAckError(assert, await ack(s, 'send', { room: id, content: null }), 'bad_request');
      // nothing was stored
      const sy = await ack(s, 'sync', { room: id, since_seq: 0 });
      assert.deepEqual(sy.messages, []);
    });

    it('content with whitespace, newlines and other control characters is kept verbatim', async () => {
      const [id] = await room('s11');
      const s = await sock('s11');
      const content = ' \n\t line\r\n ünï😀 \u0001 ';
      const r = await ack(s, 'send', { room: id, content });
      assert.equal(r.ok, true);
      assert.equal(r.message.content, content);
    });

    it('client_id: 128 characters (emoji = one character each) ok; 129 → bad_request; empty → bad_request', async () => {
      const [id] = await room('s12');
      const s = await sock('s12');
      const emoji128 = '😀'.repeat(128); // 256 UTF-16 units, 512 bytes
      const r = await ack(s, 'send', { room: id, content: 'e', client_id: emoji128 });
      assert.equal(r.ok, true, JSON.stringify(r));
      assert.equal(r.message.client_id, emoji128);
      const ascii128 = 'c'.repeat(128);
      const r2 = await ack(s, 'send', { room: id, content: 'a', client_id: ascii128 });
      assert.equal(r2.ok, true, JSON.stringify(r2));
      assert.equal(r2.message.client_id, ascii128);
      assertAckError(assert, await ack(s, 'send', { room: id, content: 'x', client_id: 'c'.repeat(129) }), 'bad_request');
      assertAckError(assert, await ack(s, 'send', { room: id, content: 'x', client_id: '😀'.repeat(129) }), 'bad_request');
      assertAckError(assert, await ack(s, 'send', { room: id, content: 'x', client_id: '' }), 'bad_request');
    });

    it('client_id: null is the same as absent', async () => {
      const [id] = await room('s13');
      const s = await sock('s13');
      const r1 = await ack(s, 'send', { room: id, content: 'n1', client_id: null });
      const r2 = await ack(s, 'send', { room: id, content: 'n2', client_id: null });
      assert.equal(r1.ok, true, JSON.stringify(r1));
      assert.equal(r2.ok, true, JSON.stringify(r2));
      assert.equal(r1.message.client_id, null);
      assert.equal(r2.message.client_id, null);
      assert.notEqual(r1.message.id, r2.message.id);
      assert.deepEqual([r1.message.seq, r2.message.seq], [1, 2]);
    });

    it('wrong field types → bad_request', async () => {
      const [id] = await room('s14');
      const s = await sock('s14');
      assertAckError(assert, await ack(s, 'send', { room: id, content: 5 }), 'bad_request');
      assertAckError(assert, await ack(s, 'send', { room: id, content: ['a'] }), 'bad_request');
      assertAckError(assert, await ack(s, 'send', { room: id, content: { a: 1 } }), 'bad_request');
      assertAckError(assert, await ack(s, 'send', { room: id, content: 'x', client_id: 5 }), 'bad_request');
      assertAckError(assert, await ack(s, 'send', { room: id, content: 'x', client_id: true }), 'bad_request');
      assertAckError(assert, await ack(s, 'send', { room: 5, content: 'x' }), 'bad_request');
      assertAckError(assert, await ack(s, 'send', { room: [id], content: 'x' }), 'bad_request');
      assertAckError(assert, await ack(s, 'send', { content: 'x' }), 'bad_request');
      assertAckError(assert, await ack(s, 'send', { room: null, content: 'x' }), 'bad_request');
    });
    it('a lone surrogate (not a Unicode scalar value) in content → bad_request ack, connection kept', async () => {
      const [id] = await room('s15');
      const s = await sock('s15');
      // a UTF-16 string cut in the middle of an emoji, a common client bug
      const cut = '😀'.slice(0, 1);
      assertAckError(assert, await ack(s, 'send', { room: id, content: `ab${cut}` }), 'bad_request');
      assert.equal(s.connected, true);
      assert.equal((await ack(s, 'send', { room: id, content: 'after' })).ok, true);
    });

    it('joining twice does not deliver a message twice to the socket', async () => {
      const [id] = await room('s16');
      const s = await sock('s16');
      assert.equal((await ack(s, 'join', { room: id })).ok, true);
      assert.equal((await ack(s, 'join', { room: id })).ok, true);
      const got = h.collect(s, 'message');
      const r = await ack(s, 'send', { room: id, content: 'once' });
      await h.until(() => got.length >= 1, 10000, 'message');
      await h.sleep(QUIET_MS);
      assert.deepEqual(got, [r.message]);
    });
  });

  // ------------------------------------------------------------------ typing

  describe('typing', () => {
    it('acks { ok } and reaches the other users\' sockets only', async () => {
      const [id] = await room('t1');
      const a1 = await sock('t1');
      const a2 = await sock('t1');
      const b = await sock('t2');
      const c = await sock('t3');
      for (const s of [a1, a2, b, c]) assert.equal((await ack(s, 'join', { room: id })).ok, true);
      const gotA1 = h.collect(a1, 'typing');
      const gotA2 = h.collect(a2, 'typing');
      const wb = h.waitFor(b, 'typing');
      const wc = h.waitFor(c, 'typing');
      assert.deepEqual(await ack(a1, 'typing', { room: id }), { ok: true });
      assert.deepEqual(await wb, { room: id, user_id: 't1' });
      assert.deepEqual(await wc, { room: id, user_id: 't1' });
      await h.sleep(QUIET_MS);
      assert.deepEqual(gotA1, [], 'typing came back to the typing socket');
      assert.deepEqual(gotA2, [], 'typing reached the same user\'s other socket');
    });

    it('typing is never stored', async () => {
      const [id] = await room('t4');
      const s = await sock('t4');
      assert.deepEqual(await ack(s, 'typing', { room: id }), { ok: true });
      const sy = await ack(s, 'sync', { room: id, since_seq: 0 });
      assert.deepEqual(sy.messages, []);
      const j = await ack(s, 'join', { room: id });
      assert.equal(j.last_seq, 0);
    });

    it('typing to a missing room → not_found', async () => {
      const s = await sock('t5');
      assertAckError(assert, await ack(s, 'typing', { room: 'missing-room-typing' }), 'not_found');
    });
  });

  // ------------------------------------------------------------------ presence

  describe('presence', () => {
    it('acks { ok, users: [{ user_id, status }] } with the room\'s online users', async () => {
      const [id] = await room('p1');
      const a = await sock('p1');
      const b = await sock('p2');
      assert.equal((await ack(a, 'join', { room: id })).ok, true);
      assert.equal((await ack(b, 'join', { room: id })).ok, true);
      const outsider = await sock('p3'); // presence needs no join
      const p = await ack(outsider, 'presence', { room: id });
      assert.deepEqual(Object.keys(p).sort(), ['ok', 'users']);
      assert.equal(p.ok, true);
      assert.ok(Array.isArray(p.users));
      for (const u of p.users) assert.deepEqual(Object.keys(u).sort(), ['status', 'user_id']);
      const online = p.users.filter((u) => u.status === 'online').map((u) => u.user_id).sort();
      assert.deepEqual(online, ['p1', 'p2']);
      assert.equal(p.users.filter((u) => u.user_id === 'p1').length, 1, 'one entry per user');
      // after p2 leaves it is no longer online
      assert.deepEqual(await ack(b, 'leave', { room: id }), { ok: true });
      const p2 = await ack(outsider, 'presence', { room: id });
      const online2 = p2.users.filter((u) => u.status === 'online').map((u) => u.user_id).sort();
      assert.deepEqual(online2, ['p1']);
    });

    it('a user with two joined sockets is listed once', async () => {
      const [id] = await room('p4');
      const a1 = await sock('p4');
      const a2 = await sock('p4');
      assert.equal((await ack(a1, 'join', { room: id })).ok, true);
      assert.equal((await ack(a2, 'join', { room: id })).ok, true);
      const p = await ack(a1, 'presence', { room: id });
      assert.deepEqual(p, { ok: true, users: [{ user_id: 'p4', status: 'online' }] });
    });

    it('presence of a missing room → not_found', async () => {
      const s = await sock('p5');
      assertAckError(assert, await ack(s, 'presence', { room: 'missing-room-presence' }), 'not_found');
    });

    it('online when a user\'s first socket joins (not to that socket); none for its second socket', async () => {
      const [id] = await room('pe1');
      const a = await sock('pe1');
      assert.equal((await ack(a, 'join', { room: id })).ok, true);
      const gotA = h.collect(a, 'presence');
      const b1 = await sock('pe2');
      const gotB1 = h.collect(b1, 'presence');
      const online = h.waitFor(a, 'presence', (e) => e.user_id === 'pe2');
      assert.equal((await ack(b1, 'join', { room: id })).ok, true);
      assert.deepEqual(await online, { room: id, user_id: 'pe2', status: 'online' });
      // second socket of pe2 joins: no new presence event anywhere
      const b2 = await sock('pe2');
      const gotB2 = h.collect(b2, 'presence');
      assert.equal((await ack(b2, 'join', { room: id })).ok, true);
      // marker: a third user joins, its online event reaches a, b1 and b2
      const c = await sock('pe3');
      const marks = [a, b1, b2].map((s) => h.waitFor(s, 'presence', (e) => e.user_id === 'pe3'));
      assert.equal((await ack(c, 'join', { room: id })).ok, true);
      await Promise.all(marks);
      await h.sleep(QUIET_MS);
      assert.deepEqual(gotA.filter((e) => e.user_id === 'pe2'), [{ room: id, user_id: 'pe2', status: 'online' }]);
      assert.deepEqual(gotB1.filter((e) => e.user_id === 'pe2'), [], 'joining socket got its own presence');
      assert.deepEqual(gotB2.filter((e) => e.user_id === 'pe2'), []);
    });

    it('offline when the last socket leaves; not when a second socket of the same user leaves', async () => {
      const [id] = await room('pf1');
      const a = await sock('pf1');
      assert.equal((await ack(a, 'join', { room: id })).ok, true);
      const b1 = await sock('pf2');
      const b2 = await sock('pf2');
      const online = h.waitFor(a, 'presence', (e) => e.user_id === 'pf2');
      assert.equal((await ack(b1, 'join', { room: id })).ok, true);
      await online;
      assert.equal((await ack(b2, 'join', { room: id })).ok, true);
      const gotA = h.collect(a, 'presence', (e) => e.user_id === 'pf2');
      const gotB1 = h.collect(b1, 'presence', (e) => e.user_id === 'pf2');
      assert.deepEqual(await ack(b2, 'leave', { room: id }), { ok: true });
      // marker event: a message after b2's leave
      const mark = h.waitFor(a, 'message', (m) => m.content === 'mark');
      assert.equal((await ack(b1, 'send', { room: id, content: 'mark' })).ok, true);
      await mark;
      await h.sleep(QUIET_MS);
      assert.deepEqual(gotA, [], 'offline sent while pf2 still has a joined socket');
      assert.deepEqual(gotB1, []);
      // still online in the presence list
      const p = await ack(a, 'presence', { room: id });
      assert.deepEqual(p.users.filter((u) => u.user_id === 'pf2'), [{ user_id: 'pf2', status: 'online' }]);
      // last socket leaves → offline
      const offline = h.waitFor(a, 'presence', (e) => e.user_id === 'pf2');
      assert.deepEqual(await ack(b1, 'leave', { room: id }), { ok: true });
      assert.deepEqual(await offline, { room: id, user_id: 'pf2', status: 'offline' });
    });

    it('offline when the last socket disconnects', async () => {
      const [id] = await room('pg1');
      const a = await sock('pg1');
      assert.equal((await ack(a, 'join', { room: id })).ok, true);
      const b = await sock('pg2');
      const online = h.waitFor(a, 'presence', (e) => e.user_id === 'pg2' && e.status === 'online');
      assert.equal((await ack(b, 'join', { room: id })).ok, true);
      await online;
      const offline = h.waitFor(a, 'presence', (e) => e.user_id === 'pg2');
      b.disconnect();
      assert.deepEqual(await offline, { room: id, user_id: 'pg2', status: 'offline' });
      const p = await ack(a, 'presence', { room: id });
      assert.deepEqual(p.users.filter((u) => u.status === 'online').map((u) => u.user_id), ['pg1']);
    });

    it('offline in every room the user had joined when its last socket disconnects', async () => {
      const [r1] = await room('pm1');
      const [r2] = await room('pm1');
      const a = await sock('pm1');
      for (const r of [r1, r2]) assert.equal((await ack(a, 'join', { room: r })).ok, true);
      const b = await sock('pm2');
      const online = h.collect(a, 'presence', (e) => e.user_id === 'pm2' && e.status === 'online');
      for (const r of [r1, r2]) assert.equal((await ack(b, 'join', { room: r })).ok, true);
      await h.until(() => online.length === 2, 10000, 'online in both rooms');
      const offline = h.collect(a, 'presence', (e) => e.user_id === 'pm2' && e.status === 'offline');
      b.disconnect();
      await h.until(() => offline.length >= 2, 10000, 'offline in both rooms');
      await h.sleep(QUIET_MS);
      assert.deepEqual(offline.map((e) => e.room).sort(), [r1, r2].sort());
      assert.deepEqual(online.map((e) => e.room).sort(), [r1, r2].sort());
    });

    it('offline when the last socket is dropped without a Socket.IO disconnect (transport closed)', async () => {
      const [id] = await room('ph1');
      const a = await sock('ph1');
      assert.equal((await ack(a, 'join', { room: id })).ok, true);
      const b = await sock('ph2');
      const online = h.waitFor(a, 'presence', (e) => e.user_id === 'ph2' && e.status === 'online');
      assert.equal((await ack(b, 'join', { room: id })).ok, true);
      await online;
      const offline = h.waitFor(a, 'presence', (e) => e.user_id === 'ph2');
      b.io.engine.transport.ws._socket.destroy();
      assert.deepEqual(await offline, { room: id, user_id: 'ph2', status: 'offline' });
    });
  });

  // ------------------------------------------------------------------ sync

  describe('sync', () => {
    let id;
    let info;
    let sockA;
    before(async () => {
      [id, info] = await room('sy');
      sockA = await sock('sy');
      const acks = await Promise.all(
        Array.from({ length: 120 }, (_, i) => ack(sockA, 'send', { room: id, content: `s${i + 1}` })),
      );
      for (const a of acks) assert.equal(a.ok, true, JSON.stringify(a));
    });

    const seqs = (r) => r.messages.map((m) => m.seq);
    const range = (a, b) => Array.from({ length: b - a + 1 }, (_, i) => a + i);

    it('acks { ok, epoch, messages, more }; limit defaults to 100', async () => {
      const s = await sock('sy-reader'); // no join needed
      const r = await ack(s, 'sync', { room: id, since_seq: 0 });
      assert.deepEqual(Object.keys(r).sort(), ['epoch', 'messages', 'more', 'ok']);
      assert.equal(r.ok, true);
      assert.equal(r.epoch, info.epoch);
      assert.deepEqual(seqs(r), range(1, 100));
      assert.equal(r.more, true);
      for (const m of r.messages) assertMessageShape(assert, m);
      assert.deepEqual(r.messages.map((m) => m.content), range(1, 100).map((i) => `s${i}`));
      const r2 = await ack(s, 'sync', { room: id, since_seq: 100 });
      assert.deepEqual(seqs(r2), range(101, 120));
      assert.equal(r2.more, false);
    });

    it('limit pages and more is exact', async () => {
      const s = await sock('sy-reader2');
      const r = await ack(s, 'sync', { room: id, since_seq: 10, limit: 7 });
      assert.deepEqual(seqs(r), range(11, 17));
      assert.equal(r.more, true);
      const r2 = await ack(s, 'sync', { room: id, since_seq: 110, limit: 10 });
      assert.deepEqual(seqs(r2), range(111, 120));
      assert.equal(r2.more, false, 'more must be false when the page ends exactly at the last message');
      const r3 = await ack(s, 'sync', { room: id, since_seq: 0, limit: 500 });
      assert.deepEqual(seqs(r3), range(1, 120));
      assert.equal(r3.more, false);
      const r4 = await ack(s, 'sync', { room: id, since_seq: 119, limit: 1 });
      assert.deepEqual(seqs(r4), [120]);
      assert.equal(r4.more, false);
      const r5 = await ack(s, 'sync', { room: id, since_seq: 0, limit: 1 });
      assert.deepEqual(seqs(r5), [1]);
      assert.equal(r5.more, true);
    });

    it('since_seq equal to the last seq → no messages, more:false', async () => {
      const s = await sock('sy-reader3');
      const r = await ack(s, 'sync', { room: id, since_seq: 120, epoch: info.epoch });
      assert.deepEqual(r, { ok: true, epoch: info.epoch, messages: [], more: false });
    });

    it('matching epoch → ok; epoch: null and limit: null behave as absent', async () => {
      const s = await sock('sy-reader4');
      const r = await ack(s, 'sync', { room: id, since_seq: 115, epoch: info.epoch });
      assert.equal(r.ok, true);
      assert.deepEqual(seqs(r), range(116, 120));
      const r2 = await ack(s, 'sync', { room: id, since_seq: 0, epoch: null, limit: null });
      assert.equal(r2.ok, true, JSON.stringify(r2));
      assert.deepEqual(seqs(r2), range(1, 100));
      assert.equal(r2.more, true);
    });

    it('epoch mismatch → reset', async () => {
      const s = await sock('sy-reader5');
      assertAckError(assert, await ack(s, 'sync', { room: id, since_seq: 0, epoch: 'not-the-epoch' }), 'reset');
      assertAckError(assert, await ack(s, 'sync', { room: id, since_seq: 5, epoch: '' }), 'reset');
    });

    it('since_seq past the last seq → reset', async () => {
      const s = await sock('sy-reader6');
      assertAckError(assert, await ack(s, 'sync', { room: id, since_seq: 121 }), 'reset');
      assertAckError(assert, await ack(s, 'sync', { room: id, since_seq: 1000000, epoch: info.epoch }), 'reset');
    });

    it('since_seq negative / non-integer / string / missing / null → bad_request', async () => {
      const s = await sock('sy-reader7');
      for (const since of [-1, 1.5, '3', true, [1], { n: 1 }]) {
        assertAckError(assert, await ack(s, 'sync', { room: id, since_seq: since }), 'bad_request');
      }
      assertAckError(assert, await ack(s, 'sync', { room: id }), 'bad_request');
      assertAckError(assert, await ack(s, 'sync', { room: id, since_seq: null }), 'bad_request');
    });

    it('limit 0, 501, -1, 1.5, "10" → bad_request; 1 and 500 ok', async () => {
      const s = await sock('sy-reader8');
      for (const limit of [0, 501, -1, 1.5, '10', true]) {
        assertAckError(assert, await ack(s, 'sync', { room: id, since_seq: 0, limit }), 'bad_request');
      }
      assert.equal((await ack(s, 'sync', { room: id, since_seq: 0, limit: 1 })).ok, true);
      assert.equal((await ack(s, 'sync', { room: id, since_seq: 0, limit: 500 })).ok, true);
    });

    it('epoch of a wrong type → bad_request', async () => {
      const s = await sock('sy-reader9');
      assertAckError(assert, await ack(s, 'sync', { room: id, since_seq: 0, epoch: 5 }), 'bad_request');
    });

    it('sync of a missing room → not_found', async () => {
      const s = await sock('sy-reader10');
      assertAckError(assert, await ack(s, 'sync', { room: 'missing-room-sync', since_seq: 0 }), 'not_found');
    });

    it('sync of an empty room at since_seq 0 → [] more:false', async () => {
      const [id2, info2] = await room('sy2');
      const s = await sock('sy-reader11');
      assert.deepEqual(await ack(s, 'sync', { room: id2, since_seq: 0 }),
        { ok: true, epoch: info2.epoch, messages: [], more: false });
      assertAckError(assert, await ack(s, 'sync', { room: id2, since_seq: 1 }), 'reset');
    });
  });

  // ------------------------------------------------------------------ payload rules

  describe('payload rules (§5)', () => {
    let id;
    let s;
    before(async () => {
      [id] = await room('pr');
      s = await sock('pr');
    });

    const EVENTS = ['join', 'leave', 'send', 'typing', 'sync', 'presence'];
    const valid = (event, r) => {
      if (event === 'send') return { room: r, content: 'x' };
      if (event === 'sync') return { room: r, since_seq: 0 };
      return { room: r };
    };

    for (const event of EVENTS) {
      it(`${event}: missing payload / not an object → bad_request`, async () => {
        assertAckError(assert, await ack(s, event), 'bad_request');
        for (const p of ['room', 42, true, null, [{ room: id }], [], '']) {
          assertAckError(assert, await ack(s, event, p), 'bad_request');
        }
      });

      it(`${event}: room that does not match ROOM → bad_request, never not_found`, async () => {
        for (const bad of ['Bad', '', 'x'.repeat(65), 'a b', 'a.b', 'é', 'a/b', ' room']) {
          assertAckError(assert, await ack(s, event, valid(event, bad)), 'bad_request');
        }
      });

      it(`${event}: room of a wrong type or missing → bad_request`, async () => {
        const base = valid(event, id);
        for (const bad of [5, true, { id }, [id]]) {
          assertAckError(assert, await ack(s, event, { ...base, room: bad }), 'bad_request');
        }
        const { room: _r, ...noRoom } = base;
        assertAckError(assert, await ack(s, event, noRoom), 'bad_request');
      });

      it(`${event}: unknown extra fields are ignored`, async () => {
        const r = await ack(s, event, { ...valid(event, id), zzz: 1, nested: { a: [1] }, user_id: 'mallory' });
        assert.equal(r.ok, true, JSON.stringify(r));
      });
    }

    it('unknown event name → ack { ok:false, error:{ code:bad_request, message } }', async () => {
      assertAckError(assert, await ack(s, 'no-such-event', { room: id }), 'bad_request');
      assertAckError(assert, await ack(s, 'JOIN', { room: id }), 'bad_request');
      assertAckError(assert, await ack(s, 'message', { room: id, content: 'x' }), 'bad_request');
    });

    it('the socket keeps working after errors', async () => {
      const r = await ack(s, 'send', { room: id, content: 'still alive' });
      assert.equal(r.ok, true);
      assert.equal(s.connected, true);
    });
  });

  // ------------------------------------------------------------------ error precedence

  describe('error precedence (§5)', () => {
    it('bad room id AND missing content → bad_request', async () => {
      const s = await sock('ep1');
      assertAckError(assert, await ack(s, 'send', { room: 'Bad Room' }), 'bad_request');
    });

    it('private room, not a member, with a bad payload → bad_request (not forbidden)', async () => {
      const [id] = await room('ep-owner', { private: true });
      const s = await sock('ep-outsider');
      assertAckError(assert, await ack(s, 'send', { room: id, content: '' }), 'bad_request');
      assertAckError(assert, await ack(s, 'send', { room: id, content: 'x', client_id: 'c'.repeat(129) }), 'bad_request');
      assertAckError(assert, await ack(s, 'sync', { room: id, since_seq: -1 }), 'bad_request');
      assertAckError(assert, await ack(s, 'sync', { room: id, since_seq: 0, limit: 0 }), 'bad_request');
      // and with a good payload: forbidden
      assertAckError(assert, await ack(s, 'send', { room: id, content: 'x' }), 'forbidden');
    });

    it('missing room with a bad payload → bad_request (not not_found)', async () => {
      const s = await sock('ep2');
      assertAckError(assert, await ack(s, 'send', { room: 'missing-room-ep', content: '' }), 'bad_request');
      assertAckError(assert, await ack(s, 'sync', { room: 'missing-room-ep', since_seq: 'x' }), 'bad_request');
      assertAckError(assert, await ack(s, 'sync', { room: 'missing-room-ep', since_seq: 0, limit: 501 }), 'bad_request');
    });

    it('sync of a missing room with a wrong epoch → not_found (not reset)', async () => {
      const s = await sock('ep3');
      assertAckError(assert, await ack(s, 'sync', { room: 'missing-room-ep2', since_seq: 5, epoch: 'zz' }), 'not_found');
    });

    it('sync of a private room, not a member, wrong epoch → forbidden (not reset)', async () => {
      const [id] = await room('ep-owner2', { private: true });
      const s = await sock('ep-outsider2');
      assertAckError(assert, await ack(s, 'sync', { room: id, since_seq: 5, epoch: 'zz' }), 'forbidden');
    });
  });

  // ------------------------------------------------------------------ size limit

  describe('content size (TSUNAGI_MAX_MESSAGE_BYTES=100)', () => {
    let small;
    let id;
    let s;
    before(async () => {
      small = await h.startServer({ env: { TSUNAGI_SEND_RATE: '0', TSUNAGI_MAX_MESSAGE_BYTES: '100' } });
      id = h.roomId('sz');
      await h.createRoom(small.url, h.userToken('sz'), id);
      s = await h.connect(small.url, h.userToken('sz'));
    });
    after(async () => { if (small) await small.destroy(); });

    it('exactly 100 bytes passes (ASCII, 2-, 3- and 4-byte UTF-8)', async () => {
      for (const content of ['a'.repeat(100), 'é'.repeat(50), '€'.repeat(33) + 'a', '😀'.repeat(25)]) {
        assert.equal(Buffer.byteLength(content), 100);
        const r = await ack(s, 'send', { room: id, content });
        assert.equal(r.ok, true, `${JSON.stringify(r)} for ${content.length} UTF-16 units`);
        assert.equal(r.message.content, content);
      }
    });

    it('over 100 bytes → too_large (counted in UTF-8 bytes, not characters or UTF-16 units)', async () => {
      for (const content of ['a'.repeat(101), 'é'.repeat(51), '€'.repeat(34), '😀'.repeat(26), 'x'.repeat(100000)]) {
        assert.ok(Buffer.byteLength(content) > 100);
        assertAckError(assert, await ack(s, 'send', { room: id, content }), 'too_large');
      }
    });

    it('precedence: bad room id + oversized → bad_request; oversized to a missing room → too_large', async () => {
      const big = 'a'.repeat(101);
      assertAckError(assert, await ack(s, 'send', { room: 'Bad', content: big }), 'bad_request');
      assertAckError(assert, await ack(s, 'send', { room: id, content: big, client_id: 'c'.repeat(129) }), 'bad_request');
      assertAckError(assert, await ack(s, 'send', { room: id, content: big, client_id: 7 }), 'bad_request');
      assertAckError(assert, await ack(s, 'send', { room: 'missing-room-size', content: big }), 'too_large');
    });

    it('oversized to a private room the user may not write → too_large (before forbidden)', async () => {
      const pid = h.roomId('szp');
      await h.createRoom(small.url, h.userToken('sz-owner'), pid, { private: true });
      assertAckError(assert, await ack(s, 'send', { room: pid, content: 'a'.repeat(101) }), 'too_large');
      assertAckError(assert, await ack(s, 'send', { room: pid, content: 'a' }), 'forbidden');
    });

    it('HTTP POST over the limit → 413 too_large; exactly at the limit → 201', async () => {
      const t = h.userToken('sz');
      const big = await h.http(small.url, 'POST', `/api/v1/rooms/${id}/messages`, t, { content: 'é'.repeat(51) });
      h.assertHttpError(assert, big, 413, 'too_large');
      const ok = await h.http(small.url, 'POST', `/api/v1/rooms/${id}/messages`, t, { content: '😀'.repeat(25) });
      assert.equal(ok.status, 201, ok.text);
      assert.equal(ok.body.content, '😀'.repeat(25));
    });
  });
});
