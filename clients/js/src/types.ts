// Shapes of PROTOCOL.md §3 and §6.2.
export interface Message {
  id: string;
  room: string;
  seq: number;
  user_id: string;
  content: string;
  client_id: string | null;
  created_at: string;
}

export interface State {
  room: string;
  key: string;
  value: unknown;
  version: number;
  updated_by: string;
  updated_at: string;
}

export interface PendingMessage {
  client_id: string;
  content: string;
  created_at: string;
  state: 'queued' | 'sending';
}

export type Status = 'connecting' | 'connected' | 'offline' | 'auth_failed';

export interface AckError { code: string; message?: string; retry_after_ms?: number; current?: State | null }
export type Ack = { ok: true; [k: string]: any } | { ok: false; error: AckError };

/** An Error carrying the protocol's error code (and the HTTP status for `http()`). */
export class TsunagiError extends Error {
  code: string;
  status?: number;
  retryAfterMs?: number;
  current?: State | null;
  constructor(code: string, message?: string, extra: Partial<TsunagiError> = {}) {
    super(message || code);
    this.name = 'TsunagiError';
    this.code = code;
    Object.assign(this, extra);
  }
}
