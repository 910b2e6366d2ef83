// One open room: its messages (seq order, each once), the offline queue shown as pending,
// older pages fetched when scrolled to the top, typing and presence.
import { $, el, timeOf } from './dom';
import { fillName, name } from './names';
import type { Message, Pending, Room } from './types';

const TYPING_SHOWN_MS = 3000;
const TYPING_EVERY_MS = 1500;

export class RoomView {
  private list = $<HTMLOListElement>('messages');
  private typingBox = $('typing');
  private onlineBox = $('online');
  private bySeq = new Map<number, HTMLLIElement>();
  private ackedIds = new Set<string>(); // client_ids already shown as real messages
  private pendingNodes: HTMLLIElement[] = [];
  private typers = new Map<string, number>(); // user id -> timer
  private online = new Map<string, string>();
  private oldest = Infinity;
  private moreOlder = true;
  private loadingOlder = false;
  private lastTyping = 0;
  private closed = false;
  private unlisten: Array<() => void> = [];
  private onScroll = () => { if (this.list.scrollTop < 40) void this.loadOlder(); };

  constructor(readonly id: string, readonly room: Room, private myId: string, private onError: (e: any) => void) {
    this.list.replaceChildren();
    this.typingBox.textContent = '';
    this.onlineBox.replaceChildren();
    // each listener also ignores events once this view is replaced by another room's
    this.listen('message', (m: Message) => this.addMessage(m, true));
    this.listen('pending', (arr: Pending[]) => this.renderPending(arr));
    this.listen('typing', (e: { user_id: string }) => this.someoneTyping(e.user_id));
    this.listen('presence', (e: { user_id: string; status: string }) => this.setOnline(e.user_id, e.status));
    this.listen('reset', () => {
      // the room's history was reset: drop what is shown, the client delivers it again
      this.bySeq.clear();
      this.ackedIds.clear();
      this.oldest = Infinity;
      this.moreOlder = true;
      this.list.replaceChildren();
      this.renderPending(this.room.pending());
    });
    this.list.addEventListener('scroll', this.onScroll);
  }

  private listen(ev: string, fn: (...a: any[]) => void): void {
    const h = (...a: any[]) => { if (!this.closed) fn(...a); };
    this.room.on(ev, h);
    this.unlisten.push(() => this.room.off?.(ev, h));
  }

  async open(): Promise<void> {
    const joined = await this.room.join();
    if (this.closed) return;
    if (this.bySeq.size === 0 && joined.last_seq > 0) {
      // a room opened before in this page: the client delivered its messages then, so the
      // newest page comes over HTTP (live ones that arrive meanwhile are merged by seq)
      try {
        const page = await this.room.history({ limit: 50 });
        if (this.closed) return;
        for (const m of page.items) this.addMessage(m, false);
      } catch { /* offline: scrolling up loads them later */ }
    }
    if (joined.last_seq === 0) this.moreOlder = false;
    this.renderPending(this.room.pending());
    this.refreshPresence();
    this.scrollToEnd();
    // a short first page may leave no scrollbar: fetch older pages right away then
    if (this.list.scrollHeight <= this.list.clientHeight) void this.loadOlder();
  }

  /** Asks for the room's presence (after a join, and again after each reconnect). */
  refreshPresence(): void {
    this.room.presence().then((users) => {
      if (this.closed) return;
      this.online.clear();
      for (const u of users) if (u.status === 'online') this.online.set(u.user_id, u.status);
      this.online.set(this.myId, 'online');
      this.renderOnline();
    }, () => { /* offline: presence events or the next refresh fill it in */ });
  }

  close(): void {
    this.closed = true;
    this.list.removeEventListener('scroll', this.onScroll);
    for (const off of this.unlisten) off();
    for (const t of this.typers.values()) clearTimeout(t);
    this.room.leave().catch(() => { /* leaving while offline is fine */ });
  }

  send(text: string): void {
    this.room.send(text).then(
      // shown at once from the ack (by seq; the broadcast copy is then a duplicate and skipped)
      (m) => { if (!this.closed) this.addMessage(m, true); },
      (e) => { if (!this.closed) this.onError(e); },
    );
    // the client reports queued sends through 'pending'; show them at once too
    this.renderPending(this.room.pending());
    this.scrollToEnd();
  }

  typed(): void {
    const now = Date.now();
    if (now - this.lastTyping < TYPING_EVERY_MS) return;
    this.lastTyping = now;
    try { Promise.resolve(this.room.typing()).catch(() => {}); } catch { /* offline */ }
  }

  private addMessage(m: Message, live: boolean): void {
    if (this.bySeq.has(m.seq)) return;
    const atEnd = this.nearEnd();
    const li = el('li', 'msg');
    li.dataset.seq = String(m.seq);
    const meta = el('span', 'meta');
    const who = el('span', 'who');
    fillName(who, m.user_id);
    if (m.user_id === this.myId) li.classList.add('mine');
    const when = el('time', 'when', timeOf(m.created_at));
    when.dateTime = m.created_at;
    meta.append(who, when);
    li.append(meta, el('span', 'text', m.content));
    // insert before the shown message with the next larger seq (history pages come older),
    // else before the pending ones at the bottom
    let next = Infinity;
    for (const seq of this.bySeq.keys()) if (seq > m.seq && seq < next) next = seq;
    const before = next !== Infinity ? this.bySeq.get(next)! : this.pendingNodes[0] || null;
    this.list.insertBefore(li, before);
    this.bySeq.set(m.seq, li);
    this.oldest = Math.min(this.oldest, m.seq);
    if (m.client_id) {
      this.ackedIds.add(m.client_id);
      // the pending copy of an acked send is replaced by the real message
      this.pendingNodes = this.pendingNodes.filter((p) => {
        if (p.dataset.clientId !== m.client_id) return true;
        p.remove();
        return false;
      });
    }
    if (m.user_id !== this.myId) this.stopTyping(m.user_id);
    if (live && (atEnd || m.user_id === this.myId)) this.scrollToEnd();
  }

  private renderPending(arr: Pending[]): void {
    for (const p of this.pendingNodes) p.remove();
    this.pendingNodes = [];
    for (const p of arr || []) {
      if (this.ackedIds.has(p.client_id)) continue;
      const li = el('li', 'msg mine pending');
      li.dataset.clientId = p.client_id;
      const meta = el('span', 'meta');
      const who = el('span', 'who');
      fillName(who, this.myId);
      meta.append(who, el('span', 'when', p.state === 'failed' ? 'not sent' : 'sending…'));
      li.append(meta, el('span', 'text', p.content));
      this.list.append(li);
      this.pendingNodes.push(li);
    }
  }

  private async loadOlder(): Promise<void> {
    if (this.loadingOlder || !this.moreOlder || this.closed) return;
    if (this.oldest <= 1) { this.moreOlder = false; return; }
    if (this.oldest === Infinity) return; // nothing shown yet: the join brings the newest
    this.loadingOlder = true;
    try {
      const page = await this.room.history({ beforeSeq: this.oldest, limit: 50 });
      if (this.closed) return;
      // keep the same messages in view while older ones are added above
      const fromBottom = this.list.scrollHeight - this.list.scrollTop;
      for (const m of page.items) this.addMessage(m, false);
      this.list.scrollTop = this.list.scrollHeight - fromBottom;
      this.moreOlder = page.more && page.items.length > 0;
    } catch {
      /* offline: scrolling up again retries */
    } finally {
      this.loadingOlder = false;
    }
  }

  private someoneTyping(userId: string): void {
    if (userId === this.myId) return;
    clearTimeout(this.typers.get(userId));
    this.typers.set(userId, window.setTimeout(() => this.stopTyping(userId), TYPING_SHOWN_MS));
    this.renderTyping();
  }

  private stopTyping(userId: string): void {
    if (!this.typers.has(userId)) return;
    clearTimeout(this.typers.get(userId));
    this.typers.delete(userId);
    this.renderTyping();
  }

  private async renderTyping(): Promise<void> {
    const ids = [...this.typers.keys()];
    const names = await Promise.all(ids.map(name));
    if (this.closed) return;
    // the set may have changed while names were fetched
    if (ids.join() !== [...this.typers.keys()].join()) return;
    this.typingBox.textContent = names.length === 0 ? ''
      : `${names.join(', ')} ${names.length === 1 ? 'is' : 'are'} typing…`;
  }

  private setOnline(userId: string, status: string): void {
    if (status === 'online') this.online.set(userId, status);
    else if (userId !== this.myId) this.online.delete(userId);
    this.renderOnline();
  }

  private renderOnline(): void {
    const nodes: HTMLElement[] = [el('span', 'online-label', 'Online:')];
    for (const id of this.online.keys()) {
      const s = el('span', 'who-online');
      fillName(s, id);
      nodes.push(s);
    }
    this.onlineBox.replaceChildren(...nodes);
  }

  private nearEnd(): boolean {
    const l = this.list;
    return l.scrollHeight - l.scrollTop - l.clientHeight < 60;
  }

  private scrollToEnd(): void {
    this.list.scrollTop = this.list.scrollHeight;
  }
}
