// Room state (PROTOCOL.md §6.2): a local copy kept from join's snapshot and `state` events.
import { Emitter } from './emitter';
import type { Client } from './client';
import type { State } from './types';

export class RoomState extends Emitter {
  private items = new Map<string, State>();

  constructor(private client: Client, private roomId: string) { super(); }

  get(key: string): State | undefined { return this.items.get(key); }

  all(): State[] { return [...this.items.values()].sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0)); }

  /** state_set; `version` = the version last seen (0 = must not exist). Rejects with code `conflict` and `.current`. */
  async set(key: string, value: unknown, version?: number): Promise<State> {
    const payload: Record<string, unknown> = { room: this.roomId, key, value };
    if (version !== undefined) payload.version = version;
    const ack = await this.client._call('state_set', payload);
    this._apply(ack.state);
    return ack.state;
  }

  /** Applies one STATE (value null = deleted) unless it is older than what we hold; emits 'state' when it changes something. */
  _apply(s: State) {
    if (!s || typeof s.key !== 'string') return;
    const cur = this.items.get(s.key);
    if (s.value === null) {
      if (!cur || s.version < cur.version) return;
      this.items.delete(s.key);
    } else {
      // Same version again (our own ack, then its event) or an older one: nothing new.
      if (cur && s.version <= cur.version) return;
      this.items.set(s.key, s);
    }
    this.emit('state', s);
  }

  /** join's ack: the whole state of the room. Keys we hold that it lacks were deleted meanwhile. */
  _snapshot(list: State[], reset: boolean) {
    if (reset) this.items.clear();
    const seen = new Set(list.map((s) => s.key));
    for (const cur of [...this.items.values()]) {
      if (!seen.has(cur.key)) {
        this.items.delete(cur.key);
        this.emit('state', { ...cur, value: null });
      }
    }
    for (const s of list) {
      const cur = this.items.get(s.key);
      // A snapshot is the truth at join time: a lower version means the key was deleted and written again.
      if (cur && s.version < cur.version) this.items.delete(s.key);
      this._apply(s);
    }
  }
}
