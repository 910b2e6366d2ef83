// tsunagi-client: rooms over socket.io-client with exactly-once, in-order delivery and an offline queue.
export { connect, Client, type ConnectOptions } from './client';
export { Room, type JoinResult } from './room';
export { RoomState } from './state';
export { TsunagiError, type Message, type State, type PendingMessage, type Status } from './types';
