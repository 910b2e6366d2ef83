// One room: exactly-once, in-order delivery (join history + live + sync recovery) and the offline send queue.
//
// Delivery: `lastSeq` is the last seq emitted. Everything received (join history, live events, sync pages)
// goes through ingest(): seq <= lastSeq is a duplicate and dropped; others wait in `buffer` until they are
// next in line. A hole in the buffer starts `sync` from lastSeq, paging until `more` is false.
//
// Sending: one message in flight per room; the next queued one goes out only after the previous ack.
// That keeps order even across retries (a retry reuses the client_id, so the server answers it idempotently).
import { Emitter } from './emitter';
import { RoomState } from './state';
import type { Client } from './client';
import { TsunagiError, type Message, type PendingMessage, type State } from './types';

interface QueueItem extends PendingMessage {
  resolve?: (m: Message) => void;
  reject?: (e: Error) => void;
}

export interface JoinResult { epoch: string; last_seq: number }

// Errors after which a send is tried again with the same client_id; any other code is final.
const RETRY = new Set(['disconnected', 'timeout', 'unavailable']);

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function newClientId(): string {
  const c = (globalThis as any).crypto;
  if (c && typeof c.randomUUID === 'function') return c.randomUUID();
  return `${Date.now().toString(36)}-${Math.random().toString(36).slice(2)}${Math.random().toString(36).slice(2)}`;
}

export class Room extends Emitter {
  readonly id: string;
  readonly state: RoomState;
  epoch: string | null = null;
  /** The last seq emitted as 'message'; null until the first join gives a starting point. */
  lastSeq: number | null = null;

  private wanted = false; // join() called and not left since
  private joined = false; // join acked on the current connection
  private joining = false;
  private forceReset = false;
  private gen = 0; // bumped on every (dis)connect and re-join: late answers of an older one are ignored
  private early: Array<['message', Message] | ['state', State]> = []; // live events before the join ack
  private buffer = new Map<number, Message>();
  private syncing = false;
  private syncAgain = false;
  private joinWaiters: Array<{ resolve: (r: JoinResult) => void; reject: (e: Error) => void }> = [];
  private queue: QueueItem[] = [];
  private flushing = false;
  private lastTyping = 0;

  constructor(private client: Client, id: string) {
    super();
    this.id = id;
    this.state = new RoomState(client, id);
    this.state.on('state', (s) => this.emit('state', s));
    this.loadQueue();
    if (client.connected) this._onConnect();
  }

  // ------------------------------------------------------------ joining

  /** Joins (and keeps re-joining after every reconnect) → { epoch, last_seq }. */
  join(): Promise<JoinResult> {
    this.wanted = true;
    if (this.joined && this.epoch !== null) {
      return Promise.resolve({ epoch: this.epoch, last_seq: this.lastSeq ?? 0 });
    }
    const p = new Promise<JoinResult>((resolve, reject) => this.joinWaiters.push({ resolve, reject }));
    if (this.client.connected && !this.joining) void this.doJoin();
    return p;
  }

  leave(): Promise<void> {
    this.wanted = false;
    this.joined = false;
    this.joining = false;
    this.gen++;
    this.early = [];
    this.settleJoin(null, new TsunagiError('left', 'left the room'));
    return this.client._call('leave', { room: this.id }).then(() => undefined, () => undefined);
  }

  private settleJoin(result: JoinResult | null, error?: Error) {
    const waiters = this.joinWaiters;
    this.joinWaiters = [];
    for (const w of waiters) (result ? w.resolve(result) : w.reject(error!));
  }

  private async doJoin() {
    const gen = ++this.gen;
    this.joining = true;
    this.joined = false;
    this.early = [];
    try {
      const ack = await this.client._call('join', { room: this.id });
      if (gen !== this.gen) return;
      this.joining = false;
      this.joined = true;
      const changed = this.epoch !== null && ack.epoch !== this.epoch;
      // A last_seq behind ours (a restored backup) is a reset too: our cursor means nothing there.
      const behind = this.lastSeq !== null && ack.last_seq < this.lastSeq;
      const reset = this.forceReset || changed || behind;
      this.forceReset = false;
      if (reset) {
        this.lastSeq = null;
        this.buffer.clear();
      }
      this.epoch = ack.epoch;
      const history: Message[] = ack.history || [];
      if (this.lastSeq === null) this.lastSeq = history.length ? history[0].seq - 1 : ack.last_seq;
      if (reset) this.emit('reset');
      this.state._snapshot(ack.state || [], reset);
      for (const m of history) this.ingest(m);
      const early = this.early;
      this.early = [];
      for (const [kind, e] of early) (kind === 'message' ? this.ingest(e as Message) : this.state._apply(e as State));
      if ((this.lastSeq ?? 0) < ack.last_seq) this.requestSync();
      this.settleJoin({ epoch: ack.epoch, last_seq: ack.last_seq });
    } catch (e: any) {
      if (gen !== this.gen) return;
      this.joining = false;
      if (RETRY.has(e.code) || e.code === 'rate_limited') {
        // 'disconnected': the reconnect re-joins. Otherwise try again shortly.
        if (e.code !== 'disconnected') setTimeout(() => { if (gen === this.gen && this.wanted) void this.doJoin(); }, e.retryAfterMs ?? 1000);
        return;
      }
      // not_found / forbidden: stop re-joining; a re-join nobody awaits reports it as 'error'.
      this.wanted = false;
      if (!this.joinWaiters.length) this.emit('error', e);
      this.settleJoin(null, e);
    }
  }

  // ------------------------------------------------------------ delivery

  private ingest(m: Message) {
    if (this.lastSeq === null || typeof m?.seq !== 'number') return;
    if (m.seq <= this.lastSeq || this.buffer.has(m.seq)) return; // already delivered or already waiting
    this.buffer.set(m.seq, m);
    let next: Message | undefined;
    while ((next = this.buffer.get(this.lastSeq + 1))) {
      this.buffer.delete(next.seq);
      this.lastSeq = next.seq;
      this.emit('message', next);
    }
    if (this.buffer.size) this.requestSync(); // a hole before the buffered ones
  }

  private requestSync() {
    if (!this.joined) return; // the join ack checks again
    if (this.syncing) { this.syncAgain = true; return; }
    this.syncing = true;
    void this.syncLoop(this.gen);
  }

  private async syncLoop(gen: number) {
    try {
      for (;;) {
        this.syncAgain = false;
        const before = this.lastSeq;
        const ack = await this.client._call('sync', {
          room: this.id, since_seq: this.lastSeq, epoch: this.epoch, limit: this.client.syncLimit,
        });
        if (gen !== this.gen) return;
        for (const m of ack.messages || []) this.ingest(m);
        if (ack.more) continue;
        if (!this.buffer.size) break;
        // Buffered messages still wait for a hole that sync did not fill yet: ask again, without spinning.
        if (this.lastSeq === before) await sleep(200);
        if (gen !== this.gen) return;
      }
      this.syncing = false;
    } catch (e: any) {
      if (gen !== this.gen) return;
      this.syncing = false;
      if (e.code === 'reset') {
        this.forceReset = true;
        void this.doJoin();
      } else if (e.code !== 'disconnected') {
        setTimeout(() => { if (gen === this.gen) this.requestSync(); }, e.retryAfterMs ?? 1000);
      }
    }
  }

  // ------------------------------------------------------------ socket events (called by Client)

  _onConnect() {
    this.gen++;
    this.joined = false;
    this.joining = false;
    this.syncing = false;
    if (this.wanted) void this.doJoin();
    void this.flush();
  }

  _onDisconnect() {
    this.gen++;
    this.joined = false;
    this.joining = false;
    this.syncing = false;
    this.early = [];
  }

  _onMessage(m: Message) {
    if (this.joined) this.ingest(m);
    else if (this.joining) this.early.push(['message', m]);
  }

  _onState(s: State) {
    if (this.joined) this.state._apply(s);
    else if (this.joining) this.early.push(['state', s]);
  }

  _onTyping(e: { room: string; user_id: string }) { this.emit('typing', e); }

  _onPresence(e: { room: string; user_id: string; status: string }) { this.emit('presence', e); }

  // ------------------------------------------------------------ sending

  /** Queues `content` and resolves with the MESSAGE once acked (see the file comment for retries and order). */
  send(content: string): Promise<Message> {
    return new Promise((resolve, reject) => {
      this.queue.push({ client_id: newClientId(), content, created_at: new Date().toISOString(), state: 'queued', resolve, reject });
      this.queueChanged();
      void this.flush();
    });
  }

  /** The messages not acked yet, oldest first. */
  pending(): PendingMessage[] {
    return this.queue.map(({ client_id, content, created_at, state }) => ({ client_id, content, created_at, state }));
  }

  private async flush() {
    if (this.flushing) return;
    this.flushing = true;
    try {
      while (this.queue.length && this.client.connected) {
        const item = this.queue[0];
        this.setItemState(item, 'sending');
        try {
          const ack = await this.client._call('send', { room: this.id, content: item.content, client_id: item.client_id });
          this.queue.shift();
          this.queueChanged();
          item.resolve?.(ack.message);
        } catch (e: any) {
          if (e.code === 'rate_limited' || RETRY.has(e.code)) {
            this.setItemState(item, 'queued');
            if (e.code === 'disconnected') break; // the reconnect flushes again
            await sleep(e.code === 'rate_limited' ? (e.retryAfterMs ?? 1000) : 1000);
            continue;
          }
          this.queue.shift(); // a definitive answer (bad_request, forbidden, too_large, not_found, …)
          this.queueChanged();
          item.reject?.(e);
        }
      }
    } finally {
      this.flushing = false;
      // A reconnect that happened while we were waiting found us busy: go on now.
      if (this.queue.length && this.client.connected) setTimeout(() => void this.flush(), 0);
    }
  }

  private setItemState(item: QueueItem, state: PendingMessage['state']) {
    if (item.state === state) return;
    item.state = state;
    this.queueChanged();
  }

  private get storageKey() { return `tsunagi-client:queue:${this.client.userId}:${this.id}`; }

  private queueChanged() {
    const storage = this.client.storage;
    if (storage) {
      try {
        const items = this.pending().map((p) => ({ ...p, state: 'queued' }));
        if (items.length) storage.setItem(this.storageKey, JSON.stringify(items));
        else storage.removeItem(this.storageKey);
      } catch { /* storage full or unavailable: the queue still lives in memory */ }
    }
    this.emit('pending', this.pending());
  }

  /** A queue left by an earlier page (same user and room): sent on the next connect, no promise attached. */
  private loadQueue() {
    const storage = this.client.storage;
    if (!storage) return;
    try {
      const items = JSON.parse(storage.getItem(this.storageKey) || '[]');
      if (Array.isArray(items)) {
        for (const p of items) {
          if (p && typeof p.client_id === 'string' && typeof p.content === 'string') {
            this.queue.push({ client_id: p.client_id, content: p.content, created_at: String(p.created_at || ''), state: 'queued' });
          }
        }
      }
    } catch { /* unreadable: start empty */ }
  }

  // ------------------------------------------------------------ the rest

  /** Emits `typing`, at most once per 2 s. */
  typing() {
    const now = Date.now();
    if (!this.client.connected || now - this.lastTyping < 2000) return;
    this.lastTyping = now;
    this.client._emit('typing', { room: this.id });
  }

  async presence(): Promise<Array<{ user_id: string; status: string }>> {
    const ack = await this.client._call('presence', { room: this.id });
    return ack.users;
  }

  /** Older pages through HTTP (for scrolling back); does not emit 'message'. */
  history(opts: { beforeSeq?: number; limit?: number } = {}): Promise<{ items: Message[]; more: boolean }> {
    const q = new URLSearchParams();
    if (opts.beforeSeq !== undefined) q.set('before_seq', String(opts.beforeSeq));
    if (opts.limit !== undefined) q.set('limit', String(opts.limit));
    const qs = q.toString();
    return this.client.http('GET', `/api/v1/rooms/${encodeURIComponent(this.id)}/messages${qs ? '?' + qs : ''}`);
  }
}
