// The connection: one socket.io-client socket, its status, and routing of room events to Room objects.
import { io, type Socket } from 'socket.io-client';
import { Emitter } from './emitter';
import { Room } from './room';
import { TsunagiError, type Ack, type Status } from './types';

export interface ConnectOptions {
  url: string;
  token: string;
  transports?: string[];
  /** Where the offline queue is kept across reloads (e.g. localStorage); in memory without it. */
  storage?: Storage;
  /** How long to wait for an ack before treating the call as failed (ms, default 10000). */
  ackTimeoutMs?: number;
  /** Messages per `sync` page (1..500, default 100). */
  syncLimit?: number;
  /** Passed through to socket.io-client's reconnection settings. */
  reconnectionDelay?: number;
  reconnectionDelayMax?: number;
}

const AUTH_CODES = new Set(['invalid_token', 'token_expired', 'auth_required']);

/** The token's `sub`, read without verification (the server verifies). */
function subOf(token: string): string {
  try {
    const part = token.split('.')[1].replace(/-/g, '+').replace(/_/g, '/');
    const json = decodeURIComponent(Array.from(atob(part.padEnd(part.length + ((4 - (part.length % 4)) % 4), '=')),
      (c) => '%' + c.charCodeAt(0).toString(16).padStart(2, '0')).join(''));
    const sub = JSON.parse(json).sub;
    return typeof sub === 'string' ? sub : '';
  } catch {
    return '';
  }
}

export class Client extends Emitter {
  readonly url: string;
  userId: string;
  status: Status = 'connecting';
  /** The underlying socket (for diagnostics and tests; its listeners are the client's). */
  readonly socket: Socket;
  readonly storage?: Storage;
  readonly ackTimeoutMs: number;
  readonly syncLimit: number;
  private token: string;
  private rooms = new Map<string, Room>();
  private closed = false;

  constructor(opts: ConnectOptions) {
    super();
    this.url = opts.url.replace(/\/+$/, '');
    this.token = opts.token;
    this.userId = subOf(opts.token);
    this.storage = opts.storage;
    this.ackTimeoutMs = opts.ackTimeoutMs ?? 10000;
    this.syncLimit = opts.syncLimit ?? 100;
    this.socket = io(this.url, {
      // A function, so every reconnect sends the current token (setToken).
      auth: (cb) => cb({ token: this.token }),
      transports: opts.transports ?? ['websocket', 'polling'],
      forceNew: true,
      reconnection: true,
      reconnectionDelay: opts.reconnectionDelay ?? 500,
      reconnectionDelayMax: opts.reconnectionDelayMax ?? 5000,
    });
    const s = this.socket;
    s.on('connect', () => {
      this.setStatus('connected');
      for (const room of this.rooms.values()) room._onConnect();
    });
    s.on('disconnect', (reason) => {
      for (const room of this.rooms.values()) room._onDisconnect();
      if (this.closed) return;
      this.setStatus('offline');
      // After a server-side disconnect socket.io-client does not reconnect on its own.
      if (reason === 'io server disconnect') s.connect();
    });
    s.on('connect_error', (err: Error & { data?: { code?: string } }) => {
      const code = err?.data?.code;
      if (code && AUTH_CODES.has(code)) {
        // A refused token will not get better by retrying: stop until setToken().
        s.disconnect();
        this.setStatus('auth_failed', { code });
        return;
      }
      this.setStatus('offline');
      // A refusal by the namespace (not the transport) is not retried by the Manager.
      if (!s.active) setTimeout(() => { if (!this.closed && !s.connected && this.status !== 'auth_failed') s.connect(); }, 1000);
    });
    s.on('message', (m) => this.rooms.get(m?.room)?._onMessage(m));
    s.on('typing', (e) => this.rooms.get(e?.room)?._onTyping(e));
    s.on('presence', (e) => this.rooms.get(e?.room)?._onPresence(e));
    s.on('state', (e) => this.rooms.get(e?.room)?._onState(e));
  }

  private setStatus(status: Status, detail?: unknown) {
    if (this.status === status) return;
    this.status = status;
    this.emit('status', status, detail);
  }

  /** The token used from the next (re)connect and HTTP call on; restarts a connection refused for its token. */
  setToken(token: string) {
    this.token = token;
    this.userId = subOf(token) || this.userId;
    if (this.status === 'auth_failed' && !this.closed) {
      this.setStatus('connecting');
      this.socket.connect();
    }
  }

  close() {
    this.closed = true;
    this.socket.disconnect();
    this.setStatus('offline');
  }

  get connected() { return this.socket.connected; }

  /** One Room object per id. */
  room(id: string): Room {
    let room = this.rooms.get(id);
    if (!room) {
      room = new Room(this, id);
      this.rooms.set(id, room);
    }
    return room;
  }

  /** Emits with an ack; rejects with a TsunagiError (code 'timeout' / 'disconnected' or the ack's code). */
  _call(event: string, payload: unknown): Promise<any> {
    if (!this.socket.connected) return Promise.reject(new TsunagiError('disconnected', 'not connected'));
    return new Promise((resolve, reject) => {
      this.socket.timeout(this.ackTimeoutMs).emit(event, payload, (err: Error | null, ack: Ack) => {
        if (err) return reject(new TsunagiError(this.socket.connected ? 'timeout' : 'disconnected', err.message));
        if (ack && ack.ok) return resolve(ack);
        const e = (ack && !ack.ok && ack.error) || { code: 'bad_response' };
        reject(new TsunagiError(e.code, e.message, { retryAfterMs: e.retry_after_ms, current: e.current }));
      });
    });
  }

  /** Fire-and-forget emit (typing) when connected. */
  _emit(event: string, payload: unknown) {
    if (this.socket.connected) this.socket.emit(event, payload, () => {});
  }

  /** fetch with the Bearer token against `url`; JSON in and out; throws TsunagiError(status, code). */
  async http(method: string, path: string, body?: unknown): Promise<any> {
    const headers: Record<string, string> = { authorization: `Bearer ${this.token}` };
    if (body !== undefined) headers['content-type'] = 'application/json';
    const res = await fetch(this.url + path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
    const text = await res.text();
    let parsed: any = null;
    try { parsed = text ? JSON.parse(text) : null; } catch { parsed = text; }
    if (!res.ok) {
      const e = parsed && parsed.error;
      throw new TsunagiError(e?.code || `http_${res.status}`, e?.message || `HTTP ${res.status}`,
        { status: res.status, current: e?.current });
    }
    return parsed;
  }
}

export function connect(opts: ConnectOptions): Client {
  return new Client(opts);
}
