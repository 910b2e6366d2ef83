'use strict';
// The soak's realtime clients: official socket.io-client sockets that reconnect by themselves,
// re-join and `sync` what they missed, send with acks and retry unacked sends with their
// `client_id`, write and read room state, and check every delivery as it arrives.

const path = require('node:path');
const crypto = require('node:crypto');
const { sleep } = require('../node/harness');

const { io } = require(require.resolve('socket.io-client', { paths: [path.join(__dirname, '../node')] }));

const ACK_TIMEOUT_MS = 15000;
const jitter = (ms) => ms * (0.5 + Math.random());
const pick = (a) => a[Math.floor(Math.random() * a.length)];
// jsonb keeps its own key order: compare values, not their text
const sameJson = require('node:util').isDeepStrictEqual;

class SoakSocket {
  /**
   * `world`: { servers, rec, sends, observed, stopLoad, drainUntil }; `instance`: 0 or 1;
   * `rooms`: the room ids this socket joins (and sends to).
   */
  constructor(world, index, instance, token, rooms, transports) {
    Object.assign(this, { world, index, instance, token, rooms, transports });
    this.rec = world.rec;
    this.roomState = new Map(rooms.map((r) => [r, { next: undefined, epoch: null, joining: false, buffer: [], stateVersions: new Map() }]));
    this.ready = false;
    this.generation = 0;
    this.connects = 0;
    this.disconnects = 0;
    this.deliveries = 0;
    this.sendCounter = 0;
    this.lastAckedSeq = new Map();
    this.stateKnown = new Map(); // room -> { version, value, unacked: [values that may have been written] }
    this.stateWrites = 0;
  }

  get key() { return `k-${this.index}`; }

  start() {
    const url = this.world.servers[this.instance].url;
    this.socket = io(url, {
      auth: { token: this.token },
      transports: this.transports,
      forceNew: true,
      reconnection: true,
      reconnectionDelay: 300,
      reconnectionDelayMax: 2000,
      timeout: 5000,
    });
    this.socket.on('connect', () => { this.connects++; this.recover(); });
    this.socket.on('disconnect', (reason) => {
      this.ready = false;
      this.disconnects++;
      this.generation++;
      // the client reconnects by itself except after a server-side disconnect
      if (reason === 'io server disconnect') setTimeout(() => this.socket.connect(), 300);
    });
    this.socket.on('connect_error', (err) => {
      if (err && err.data && err.data.code) {
        this.rec.count(`connect_error ${err.data.code}`);
        if (err.data.code !== 'unavailable') this.rec.fail('unexpected connect_error', `${this.index}: ${JSON.stringify(err.data)}`);
      } else this.rec.count('connect_error transport');
    });
    this.socket.on('message', (m) => this.onMessage(m));
    this.socket.on('state', (s) => this.onState(s));
    this.loop = this.sendLoop();
  }

  /** Emits with an ack → the ack, or throws { kind: 'disconnected' | 'timeout' }; records the answer. */
  emit(event, payload) {
    const started = this.rec.now();
    const wasConnected = this.socket.connected;
    return new Promise((resolve, reject) => {
      this.socket.timeout(ACK_TIMEOUT_MS).emit(event, payload, (err, res) => {
        if (!err) {
          this.rec.ack(event, res, this.rec.now() - started, `socket ${this.index}`);
          resolve(res);
        } else if (!wasConnected || !this.socket.connected) {
          this.rec.count(`ack ${event} lost (disconnected)`);
          reject(Object.assign(new Error('disconnected'), { kind: 'disconnected' }));
        } else {
          this.rec.count(`ack ${event} none`);
          this.rec.noAnswerFrom(this.instance, started, `socket ${this.index} ${event}`, new Error(`no ack in ${ACK_TIMEOUT_MS} ms`));
          reject(Object.assign(new Error('timeout'), { kind: 'timeout' }));
        }
      });
    });
  }

  /** On every (re)connect: join each room; after a reconnect, sync what was missed up to the join. */
  async recover() {
    const gen = this.generation;
    for (const room of this.rooms) {
      const st = this.roomState.get(room);
      for (;;) {
        if (gen !== this.generation) return;
        st.joining = true;
        st.buffer = [];
        let res;
        try { res = await this.emit('join', { room }); } catch { res = null; }
        if (gen !== this.generation) return;
        if (!res || !res.ok) { await sleep(jitter(500)); continue; }
        if (st.epoch && st.epoch !== res.epoch) this.rec.fail('epoch changed', `${room}: ${st.epoch} -> ${res.epoch}`);
        const previousNext = st.next;
        st.epoch = res.epoch;
        st.next = res.last_seq + 1;
        st.stateVersions = new Map((res.state || []).map((s) => [s.key, s.version]));
        st.joining = false;
        for (const m of st.buffer) {
          if (m.seq <= res.last_seq) this.rec.fail('message at or before the join ack\'s last_seq', `${room} seq ${m.seq} <= ${res.last_seq}`);
          else this.onMessage(m);
        }
        st.buffer = [];
        if (previousNext !== undefined && previousNext <= res.last_seq) {
          if (!(await this.syncRange(room, previousNext - 1, res.last_seq, gen))) return;
        }
        break;
      }
    }
    if (gen === this.generation) this.ready = true;
  }

  /** `sync` from `since` until `upTo` is covered: every seq once, ascending, no gap. */
  async syncRange(room, since, upTo, gen) {
    const st = this.roomState.get(room);
    let cursor = since;
    while (cursor < upTo) {
      if (gen !== this.generation) return false;
      let res;
      try { res = await this.emit('sync', { room, since_seq: cursor, epoch: st.epoch, limit: 500 }); } catch { res = null; }
      if (!res || !res.ok) {
        if (res && res.error && res.error.code === 'reset') this.rec.fail('sync answered reset', room);
        await sleep(jitter(500));
        continue;
      }
      for (const m of res.messages) {
        if (m.seq > upTo) break;
        if (m.seq !== cursor + 1) this.rec.fail('gap in sync', `${room} after ${cursor} got ${m.seq}`);
        this.observe(m);
        cursor = m.seq;
      }
      if (!res.more && cursor < upTo) {
        this.rec.fail('sync ended before the join\'s last_seq', `${room} ${cursor} < ${upTo}`);
        return true;
      }
    }
    this.world.syncedMessages += upTo - since;
    return true;
  }

  onMessage(m) {
    const st = this.roomState.get(m.room);
    if (!st) { this.rec.fail('message for a room not joined', `${this.index} ${m.room}`); return; }
    if (st.joining || st.next === undefined) { st.buffer.push(m); return; }
    if (m.seq === st.next) st.next++;
    else if (m.seq < st.next) this.rec.fail('duplicate or out-of-order delivery', `socket ${this.index} ${m.room} seq ${m.seq}, expected ${st.next}`);
    else {
      this.rec.fail('gap in live delivery', `socket ${this.index} ${m.room} seq ${m.seq}, expected ${st.next}`);
      st.next = m.seq + 1;
    }
    this.deliveries++;
    this.observe(m);
  }

  /** Every socket must see one message per (room, seq): the first sighting is compared with the history at the end. */
  observe(m) {
    const key = `${m.room}/${m.seq}`;
    const seen = this.world.observed.get(key);
    if (seen === undefined) this.world.observed.set(key, m.id);
    else if (seen !== m.id) this.rec.fail('two messages with one seq', `${key}: ${seen} and ${m.id}`);
  }

  onState(s) {
    const st = this.roomState.get(s.room);
    if (!st || st.joining) return;
    const last = st.stateVersions.get(s.key);
    if (last !== undefined && s.version <= last) {
      this.rec.fail('state event out of version order', `socket ${this.index} ${s.room}/${s.key} v${s.version} after v${last}`);
    }
    st.stateVersions.set(s.key, s.version);
  }

  async sendLoop() {
    while (!this.world.stopLoad) {
      await sleep(jitter(1000));
      if (!this.ready || this.world.stopLoad) continue;
      const room = pick(this.rooms);
      const dice = Math.random();
      if (dice < 0.1) await this.stateWrite(room);
      else if (dice < 0.13) await this.stateRead(room);
      else await this.send(room);
    }
  }

  /** One message, retried with its client_id until acked (also after the load stops, until the drain ends). */
  async send(room) {
    const clientId = `s${this.index}-${++this.sendCounter}`;
    const content = `soak ${clientId} ${crypto.randomBytes(6).toString('hex')}`;
    const record = { clientId, room, content, userId: `soak-u${this.index}`, acked: null, attempts: 0, via: 'socket' };
    this.world.sends.push(record);
    while (!record.acked && Date.now() < this.world.drainUntil) {
      if (!this.ready) { await sleep(100); continue; }
      record.attempts++;
      let res;
      try { res = await this.emit('send', { room, content, client_id: clientId }); } catch { await sleep(jitter(300)); continue; }
      if (res.ok) {
        const m = res.message;
        if (m.client_id !== clientId || m.content !== content || m.room !== room) {
          this.rec.fail('send ack is not the message sent', `${clientId}: ${JSON.stringify(m)}`);
        }
        const last = this.lastAckedSeq.get(room) || 0;
        if (m.seq <= last) this.rec.fail('a socket\'s sends out of order', `${clientId} seq ${m.seq} after ${last}`);
        this.lastAckedSeq.set(room, m.seq);
        record.acked = m;
      } else {
        await sleep(res.error.retry_after_ms || jitter(300));
      }
    }
  }

  /** A conditional write of this socket's own key: the version it last saw, or what a conflict says. */
  async stateWrite(room) {
    const known = this.stateKnown.get(room) || { version: 0, value: null, unacked: [] };
    this.stateKnown.set(room, known);
    const value = { n: ++this.stateWrites, by: this.index };
    let res;
    try { res = await this.emit('state_set', { room, key: this.key, value, version: known.version }); } catch {
      known.unacked.push(value);
      return;
    }
    if (res.ok) {
      if (res.state.version !== known.version + 1 || !sameJson(res.state.value, value)) {
        this.rec.fail('state_set ack', `${room}/${this.key}: ${JSON.stringify(res.state)} after v${known.version}`);
      }
      Object.assign(known, { version: res.state.version, value: res.state.value, unacked: [] });
    } else if (res.error.code === 'conflict') {
      // only this socket writes its key: a conflict must be an earlier unacked write that took effect
      const cur = res.error.current;
      if (!cur || !known.unacked.some((v) => sameJson(cur.value, v))) {
        this.rec.fail('conflict not explained by an unacked write', `${room}/${this.key}: ${JSON.stringify(res.error)}`);
      }
      Object.assign(known, { version: cur ? cur.version : 0, value: cur ? cur.value : null, unacked: [] });
    } else {
      known.unacked.push(value); // unavailable: it may or may not have been written
    }
  }

  async stateRead(room) {
    try { await this.emit('state_get', { room }); } catch { /* recorded */ }
  }

  /** Whether every room's delivery reached `lastSeq[room]`. */
  caughtUp(lastSeq) {
    return this.ready && this.socket.connected
      && this.rooms.every((r) => this.roomState.get(r).next - 1 === lastSeq.get(r));
  }

  close() { this.socket.close(); }
}

module.exports = { SoakSocket, ACK_TIMEOUT_MS };
