'use strict';
// PROTOCOL.md §3 Guarantees: durable before acked (kill -9), idempotent retries after a crash,
// order and no gaps across a restart; graceful SIGTERM.

const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const path = require('node:path');
const h = require('./harness');

const range = (a, b) => Array.from({ length: b - a + 1 }, (_, i) => a + i);

/**
 * Keeps `window` sends in flight on `socket` until it disconnects or `stop()` is called.
 * Records acked messages, failed acks and sends whose ack never came (pending).
 */
function sender(socket, user, room, window = 8) {
  const st = {
    user,
    room,
    sent: new Map(), // client_id → content
    acked: new Map(), // client_id → MESSAGE
    failed: new Map(), // client_id → error
    pending: new Set(), // client_ids without an ack
    stopped: false,
    order: [], // client_ids in emit order
  };
  let n = 0;
  const next = () => {
    if (st.stopped || !socket.connected) return;
    const cid = `${user}-${++n}`;
    const content = `${user} says ${n}`;
    st.sent.set(cid, content);
    st.pending.add(cid);
    st.order.push(cid);
    socket.emit('send', { room, content, client_id: cid }, (res) => {
      st.pending.delete(cid);
      if (res && res.ok === true) st.acked.set(cid, res.message);
      else st.failed.set(cid, res && res.error);
      next();
    });
  };
  socket.on('disconnect', () => { st.stopped = true; });
  for (let i = 0; i < window; i++) next();
  st.stop = () => { st.stopped = true; };
  return st;
}

function assertNoGap(hist, who) {
  assert.deepEqual(hist.map((m) => m.seq), range(1, hist.length), `${who}: seq not 1..N`);
  const cids = hist.map((m) => m.client_id);
  assert.equal(new Set(cids).size, cids.length, `${who}: a client_id stored twice`);
}

async function runLoad(srv, rooms, perRoom) {
  const states = [];
  for (const room of rooms) {
    for (let i = 0; i < perRoom; i++) {
      const user = `${room}-u${i}`;
      const s = await h.connect(srv.url, h.userToken(user));
      states.push({ st: sender(s, user, room), socket: s });
    }
  }
  return states;
}

/** Checks, after a restart, that everything acked is stored unchanged and seqs have no gap. */
async function checkAfterRestart(srv, rooms, states, infos) {
  const T = h.adminToken('crash-admin');
  const histories = {};
  for (const room of rooms) {
    const hist = await h.fullHistory(srv.url, T, room);
    assertNoGap(hist, room);
    histories[room] = hist;
    const mine = states.filter((x) => x.st.room === room).map((x) => x.st);
    const byCid = new Map(hist.map((m) => [m.client_id, m]));
    for (const st of mine) {
      for (const [cid, msg] of st.acked) {
        assert.deepEqual(byCid.get(cid), msg, `acked ${cid} lost or changed after restart`);
        assert.deepEqual(hist[msg.seq - 1], msg);
      }
    }
    // nothing stored that nobody sent
    const sentCids = new Set(mine.flatMap((st) => [...st.sent.keys()]));
    for (const m of hist) assert.ok(sentCids.has(m.client_id), `unexpected stored message ${JSON.stringify(m)}`);
    // per-socket order survives: each user's stored messages are in its emit order
    for (const st of mine) {
      const stored = hist.filter((m) => m.user_id === st.user).map((m) => m.client_id);
      const expected = st.order.filter((cid) => byCid.has(cid));
      assert.deepEqual(stored, expected, `${st.user}: stored out of emit order`);
    }
    // the room's epoch and last_seq are unchanged
    const s = await h.connect(srv.url, T);
    const j = await h.ack(s, 'join', { room });
    assert.equal(j.epoch, infos[room].epoch, 'epoch changed across a restart');
    assert.equal(j.last_seq, hist.length);
    s.close();
  }
  return histories;
}

describe('durability', () => {
  let srv;
  after(async () => { h.closeAll(); if (srv) await srv.destroy(); });

  it('SIGKILL: every acked message survives with the same id and seq; retries fill without gaps', async () => {
    srv = await h.startServer({ env: { TSUNAGI_SEND_RATE: '0' } });
    const rooms = [h.roomId('crash'), h.roomId('crash')];
    const infos = {};
    for (const r of rooms) infos[r] = await h.createRoom(srv.url, h.userToken('crash-owner'), r);
    const states = await runLoad(srv, rooms, 3);
    await h.until(() => states.every((x) => x.st.acked.size >= 10), 15000, 'every sender to get acks');
    await h.sleep(1000);
    const res = await srv.kill9();
    assert.equal(res.signal, 'SIGKILL');
    await h.until(() => states.every((x) => !x.socket.connected), 15000, 'sockets to notice the crash');
    const totalAcked = states.reduce((a, x) => a + x.st.acked.size, 0);
    const totalPending = states.reduce((a, x) => a + x.st.pending.size, 0);
    assert.ok(totalAcked >= 60, `only ${totalAcked} acked before the kill`);
    assert.ok(totalPending > 0, 'no send was in flight at the kill');
    for (const x of states) assert.deepEqual([...x.st.failed], [], `${x.st.user}: failed acks before the kill`);

    await srv.restart();
    const histories = await checkAfterRestart(srv, rooms, states, infos);

    // retry every un-acked client_id with the same content
    for (const room of rooms) {
      const before = histories[room];
      const byCid = new Map(before.map((m) => [m.client_id, m]));
      let nextSeq = before.length + 1;
      for (const x of states.filter((y) => y.st.room === room)) {
        const s = await h.connect(srv.url, h.userToken(x.st.user));
        const cids = x.st.order.filter((cid) => x.st.pending.has(cid));
        const acks = await Promise.all(cids.map((cid) =>
          h.ack(s, 'send', { room, content: x.st.sent.get(cid), client_id: cid })));
        cids.forEach((cid, i) => {
          const r = acks[i];
          assert.equal(r.ok, true, JSON.stringify(r));
          if (byCid.has(cid)) {
            assert.deepEqual(r.message, byCid.get(cid), `retry of stored ${cid} must return it`);
          } else {
            assert.equal(r.message.seq, nextSeq++, `retry of ${cid} must take the next seq`);
            assert.equal(r.message.client_id, cid);
            assert.equal(r.message.content, x.st.sent.get(cid));
          }
        });
        s.close();
      }
      const afterRetry = await h.fullHistory(srv.url, h.adminToken('crash-admin'), room);
      assertNoGap(afterRetry, `${room} after retries`);
      assert.deepEqual(afterRetry.slice(0, before.length), before);
      // every client_id ever sent is now stored exactly once
      const sent = states.filter((y) => y.st.room === room).flatMap((y) => [...y.st.sent.keys()]);
      assert.deepEqual(afterRetry.map((m) => m.client_id).sort(), [...sent].sort());
    }
    const stop = await srv.stop();
    assert.deepEqual(stop, { code: 0, signal: null });
  });

  it('SIGTERM: sends in flight are either acked (and stored) or fail; exit code 0', async () => {
    if (srv) await srv.destroy();
    srv = await h.startServer({ env: { TSUNAGI_SEND_RATE: '0' } });
    const rooms = [h.roomId('term')];
    const infos = {};
    for (const r of rooms) infos[r] = await h.createRoom(srv.url, h.userToken('term-owner'), r);
    const states = await runLoad(srv, rooms, 4);
    await h.until(() => states.every((x) => x.st.acked.size >= 10), 15000, 'every sender to get acks');
    await h.sleep(500);
    const res = await srv.stop();
    assert.deepEqual(res, { code: 0, signal: null });
    await h.until(() => states.every((x) => !x.socket.connected), 15000, 'sockets to be closed');
    for (const x of states) {
      for (const [cid, err] of x.st.failed) {
        assert.ok(err && typeof err.code === 'string' && typeof err.message === 'string', `${cid}: ${JSON.stringify(err)}`);
        assert.equal(err.code, 'unavailable', `${cid}: a send refused at shutdown should be unavailable`);
      }
    }
    await srv.restart();
    await checkAfterRestart(srv, rooms, states, infos);
    assert.deepEqual(await srv.stop(), { code: 0, signal: null });
  });

  it('a wiped database: the room created again has a new epoch; an old epoch gets reset', async () => {
    if (srv) await srv.destroy();
    srv = await h.startServer({ env: { TSUNAGI_SEND_RATE: '0' } });
    const room = h.roomId('wipe');
    const t = h.userToken('wipe-owner');
    const first = await h.createRoom(srv.url, t, room);
    const s = await h.connect(srv.url, t);
    for (let i = 0; i < 5; i++) assert.equal((await h.ack(s, 'send', { room, content: `w${i}` })).ok, true);
    s.close();
    assert.deepEqual(await srv.stop(), { code: 0, signal: null });
    srv.wipe();
    await srv.restart();
    const second = await h.createRoom(srv.url, t, room);
    assert.equal(second.last_seq, 0);
    assert.notEqual(second.epoch, first.epoch, 'a room created again must have a new epoch');
    const c = await h.connect(srv.url, t);
    h.assertAckError(assert, await h.ack(c, 'sync', { room, since_seq: 0, epoch: first.epoch }), 'reset');
    h.assertAckError(assert, await h.ack(c, 'sync', { room, since_seq: 5 }), 'reset');
    const ok = await h.ack(c, 'sync', { room, since_seq: 0, epoch: second.epoch });
    assert.deepEqual(ok, { ok: true, epoch: second.epoch, messages: [], more: false });
    c.close();
  });
});
