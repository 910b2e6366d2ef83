// The durable benchmark's reference: what a team would write for tsunagi's `join` and `send`
// (PROTOCOL.md §3, same ack shapes as bench/peer/server.js) with the usual Node stack:
// socket.io 4, @socket.io/redis-adapter (so more instances could run behind a balancer),
// node-redis and pg.
//
// Design, the idiomatic one:
// - One pg Pool (PEER_PG_POOL connections, default 10) on its own database (bench/durable.sh
//   creates it); the schema below is created at start.
// - send: one transaction per message on a pooled connection. The per-room seq comes from
//   `UPDATE rooms SET last_seq = last_seq + 1 … RETURNING last_seq` (the row lock orders the
//   writers of a room, in this process and any other), then the INSERT, then COMMIT. Only after
//   COMMIT is the message emitted to the room through the adapter and the send acked, so an ack
//   means the message is durable (synchronous_commit is on).
// - Idempotent on client_id like tsunagi: a (room, user, client_id) already stored answers with
//   the stored message; a concurrent duplicate trips the unique index and is answered the same.
// - join: the room row is created on first use (the peer has no rooms API), the socket joins,
//   and the newest HISTORY messages come from the table.
// The token in `auth` is not verified (no signature check): its `sub` claim only fills `user_id`.
'use strict';

const { randomUUID } = require('node:crypto');
const { createServer } = require('node:http');
const { Server } = require('socket.io');
const { createAdapter } = require('@socket.io/redis-adapter');
const { createClient } = require('redis');
const { Pool } = require('pg');

const HISTORY = 50; // what a join returns, like tsunagi
const ROOM_RE = /^[a-z0-9_-]{1,64}$/;

const SCHEMA = `
CREATE TABLE IF NOT EXISTS rooms (
  id TEXT PRIMARY KEY,
  epoch TEXT NOT NULL,
  last_seq BIGINT NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS messages (
  room_id TEXT NOT NULL REFERENCES rooms(id),
  seq BIGINT NOT NULL,
  id TEXT NOT NULL,
  user_id TEXT NOT NULL,
  content TEXT NOT NULL,
  client_id TEXT,
  created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
  PRIMARY KEY (room_id, seq)
);
CREATE UNIQUE INDEX IF NOT EXISTS messages_idempotency
  ON messages (room_id, user_id, client_id) WHERE client_id IS NOT NULL;
`;

const pool = new Pool({
  connectionString: process.env.PEER_DATABASE_URL,
  max: Number(process.env.PEER_PG_POOL || 10),
});

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

const toMessage = (r) => ({
  id: r.id,
  room: r.room_id,
  seq: Number(r.seq),
  user_id: r.user_id,
  content: r.content,
  client_id: r.client_id,
  created_at: r.created_at.toISOString(),
});

async function ensureRoom(room) {
  await pool.query(
    'INSERT INTO rooms (id, epoch) VALUES ($1, $2) ON CONFLICT (id) DO NOTHING',
    [room, randomUUID()],
  );
}

async function stored(room, userId, clientId) {
  const { rows } = await pool.query(
    'SELECT * FROM messages WHERE room_id = $1 AND user_id = $2 AND client_id = $3',
    [room, userId, clientId],
  );
  return rows.length ? toMessage(rows[0]) : null;
}

// One durable send: the stored message and whether this call created it.
async function append(room, userId, content, clientId) {
  if (clientId !== null) {
    const first = await stored(room, userId, clientId);
    if (first) return { message: first, created: false };
  }
  const client = await pool.connect();
  try {
    await client.query('BEGIN');
    const bumped = await client.query(
      'UPDATE rooms SET last_seq = last_seq + 1 WHERE id = $1 RETURNING last_seq',
      [room],
    );
    if (bumped.rowCount === 0) {
      await client.query('ROLLBACK');
      return null;
    }
    const { rows } = await client.query(
      'INSERT INTO messages (room_id, seq, id, user_id, content, client_id) ' +
        'VALUES ($1, $2, $3, $4, $5, $6) RETURNING *',
      [room, bumped.rows[0].last_seq, randomUUID(), userId, content, clientId],
    );
    await client.query('COMMIT');
    return { message: toMessage(rows[0]), created: true };
  } catch (e) {
    await client.query('ROLLBACK').catch(() => {});
    // a concurrent send with the same client_id won: answer with its message
    if (e.code === '23505' && clientId !== null) {
      const first = await stored(room, userId, clientId);
      if (first) return { message: first, created: false };
    }
    throw e;
  } finally {
    client.release();
  }
}

async function main() {
  await pool.query(SCHEMA);
  const httpServer = createServer();
  const io = new Server(httpServer, { serveClient: false });
  const pubClient = createClient({ url: process.env.PEER_REDIS_URL || 'redis://127.0.0.1:6379' });
  const subClient = pubClient.duplicate();
  await Promise.all([pubClient.connect(), subClient.connect()]);
  io.adapter(createAdapter(pubClient, subClient, { key: process.env.PEER_REDIS_KEY || 'peer' }));

  io.use((socket, next) => {
    socket.data.userId = subOf(socket.handshake.auth && socket.handshake.auth.token) || socket.id;
    next();
  });

  io.on('connection', (socket) => {
    socket.on('join', async (p, ack) => {
      if (typeof ack !== 'function') return;
      const room = roomOf(p);
      if (!room) return ack(fail('bad_request', 'room must be 1 to 64 of a-z 0-9 _ -'));
      try {
        await ensureRoom(room);
        const [r, h] = await Promise.all([
          pool.query('SELECT epoch, last_seq FROM rooms WHERE id = $1', [room]),
          pool.query('SELECT * FROM messages WHERE room_id = $1 ORDER BY seq DESC LIMIT $2', [
            room,
            HISTORY,
          ]),
        ]);
        socket.join(room);
        ack({
          ok: true,
          room,
          epoch: r.rows[0].epoch,
          last_seq: Number(r.rows[0].last_seq),
          history: h.rows.reverse().map(toMessage),
        });
      } catch (e) {
        console.error('join failed:', e.message);
        ack(fail('unavailable', 'database error'));
      }
    });

    socket.on('leave', (p, ack) => {
      const room = roomOf(p);
      if (room) socket.leave(room);
      if (typeof ack === 'function') ack(room ? { ok: true } : fail('bad_request', 'bad room'));
    });

    socket.on('send', async (p, ack) => {
      if (typeof ack !== 'function') return;
      const room = roomOf(p);
      if (!room || typeof p.content !== 'string') {
        return ack(fail('bad_request', 'room and content are required'));
      }
      const clientId = typeof p.client_id === 'string' ? p.client_id : null;
      try {
        const done = await append(room, socket.data.userId, p.content, clientId);
        if (!done) return ack(fail('not_found', 'no such room'));
        if (done.created) io.to(room).emit('message', done.message);
        ack({ ok: true, message: done.message });
      } catch (e) {
        console.error('send failed:', e.message);
        ack(fail('unavailable', 'database error'));
      }
    });
  });

  const port = Number(process.env.PORT || 3000);
  httpServer.listen(port, process.env.HOST || '127.0.0.1', () => {
    console.log(`durable peer listening on ${port}`);
  });
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
