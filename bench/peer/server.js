// The benchmark's reference: a plain Socket.IO v4 server with tsunagi's `join`, `send` and `sync`
// (PROTOCOL.md §3), same ack shapes, written the way one would with the official package.
// Everything lives in memory: nothing is durable, nothing is checked against a database.
// The token in `auth` is not verified (no signature check): its `sub` claim is read only
// to fill `user_id`, so both servers put the same fields in MESSAGE.
'use strict';

const { randomUUID } = require('node:crypto');
const { createServer } = require('node:http');
const { Server } = require('socket.io');

const HISTORY = 50; // what a join returns, like tsunagi
const ROOM_RE = /^[a-z0-9_-]{1,64}$/;

const rooms = new Map(); // room -> { epoch, seq, history: MESSAGE[] (newest HISTORY) }
function roomState(room) {
  let r = rooms.get(room);
  if (!r) {
    r = { epoch: randomUUID(), seq: 0, history: [] };
    rooms.set(room, r);
  }
  return r;
}

function subOf(token) {
  try {
    const claims = JSON.parse(Buffer.from(String(token).split('.')[1], 'base64url'));
    return typeof claims.sub === 'string' && claims.sub ? claims.sub : null;
  } catch {
    return null;
  }
}

const fail = (code, message) => ({ ok: false, error: { code, message } });
const roomOf = (p) => (p && typeof p.room === 'string' && ROOM_RE.test(p.room) ? p.room : null);

const httpServer = createServer();
const io = new Server(httpServer, { serveClient: false });

io.use((socket, next) => {
  socket.data.userId = subOf(socket.handshake.auth && socket.handshake.auth.token) || socket.id;
  next();
});

io.on('connection', (socket) => {
  socket.on('join', (p, ack) => {
    if (typeof ack !== 'function') return;
    const room = roomOf(p);
    if (!room) return ack(fail('bad_request', 'room must be 1 to 64 of a-z 0-9 _ -'));
    const r = roomState(room);
    socket.join(room);
    ack({ ok: true, room, epoch: r.epoch, last_seq: r.seq, history: r.history });
  });

  // From memory like join, and only as far back as the kept history (enough for the history
  // bench's recent syncs; the reference keeps no more).
  socket.on('sync', (p, ack) => {
    if (typeof ack !== 'function') return;
    const room = roomOf(p);
    if (!room || !Number.isInteger(p.since_seq) || p.since_seq < 0) {
      return ack(fail('bad_request', 'room and since_seq are required'));
    }
    const limit = Number.isInteger(p.limit) ? p.limit : 100;
    const r = roomState(room);
    const after = r.history.filter((m) => m.seq > p.since_seq);
    ack({ ok: true, epoch: r.epoch, messages: after.slice(0, limit), more: after.length > limit });
  });

  socket.on('leave', (p, ack) => {
    const room = roomOf(p);
    if (room) socket.leave(room);
    if (typeof ack === 'function') ack(room ? { ok: true } : fail('bad_request', 'bad room'));
  });

  socket.on('send', (p, ack) => {
    if (typeof ack !== 'function') return;
    const room = roomOf(p);
    if (!room || typeof p.content !== 'string') {
      return ack(fail('bad_request', 'room and content are required'));
    }
    const r = roomState(room);
    r.seq += 1;
    const message = {
      id: randomUUID(),
      room,
      seq: r.seq,
      user_id: socket.data.userId,
      content: p.content,
      client_id: typeof p.client_id === 'string' ? p.client_id : null,
      created_at: new Date().toISOString(),
    };
    r.history.push(message);
    if (r.history.length > HISTORY) r.history.shift();
    io.to(room).emit('message', message);
    ack({ ok: true, message });
  });
});

const port = Number(process.env.PORT || 3000);
httpServer.listen(port, process.env.HOST || '127.0.0.1', () => {
  console.log(`peer listening on ${port}`);
});
