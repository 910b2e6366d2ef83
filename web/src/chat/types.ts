// The parts of tsunagi-client and of the HTTP API this page relies on (PROTOCOL.md §3, §4).

export interface Message {
  id: string; room: string; seq: number; user_id: string;
  content: string; client_id: string | null; created_at: string;
}
export interface Pending { client_id: string; content: string; created_at: string; state?: string }
export interface User { id: string; username: string; display_name?: string }
export interface RoomInfo { id: string; name: string; private: boolean; owner_id: string; last_seq: number }

type Handler = (...args: any[]) => void;
export interface Room {
  join(): Promise<{ epoch: string; last_seq: number }>;
  leave(): Promise<unknown>;
  send(content: string): Promise<Message>;
  typing(): unknown;
  presence(): Promise<Array<{ user_id: string; status: string }>>;
  history(opts: { beforeSeq?: number; limit?: number }): Promise<{ items: Message[]; more: boolean }>;
  pending(): Pending[];
  on(ev: string, fn: Handler): unknown;
  off?(ev: string, fn: Handler): unknown;
}
export interface Client {
  userId: string;
  status: string;
  on(ev: string, fn: Handler): unknown;
  setToken(t: string): void;
  close(): void;
  http(method: string, path: string, body?: unknown): Promise<any>;
  room(id: string): Room;
}
