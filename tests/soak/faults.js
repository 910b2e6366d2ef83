'use strict';
// The soak's private fault targets. The shared Redis (6379) and the shared replica (5433) serve
// other tests at the same time, so they are never stopped: the soak gets its own redis-server to
// restart, and a TCP proxy in front of the replica to "stop" (the replica process keeps running).

const { spawn, execFile } = require('node:child_process');
const net = require('node:net');
const { sleep } = require('../node/harness');

/** A redis-server of our own on `port` (no persistence: a restart loses every key, as a crash would). */
class PrivateRedis {
  constructor(port) {
    this.port = port;
    this.proc = null;
    this.url = `redis://127.0.0.1:${port}`;
  }

  async start() {
    this.proc = spawn('redis-server', ['--port', String(this.port), '--bind', '127.0.0.1',
      '--save', '', '--appendonly', 'no', '--daemonize', 'no', '--loglevel', 'warning'],
    { stdio: 'ignore' });
    const proc = this.proc;
    this.exited = new Promise((resolve) => proc.on('exit', resolve));
    for (let i = 0; i < 100; i++) {
      if (await this.ping()) return;
      if (proc.exitCode !== null) throw new Error(`redis-server exited (${proc.exitCode}) on port ${this.port}`);
      await sleep(50);
    }
    throw new Error(`redis-server did not answer on port ${this.port}`);
  }

  ping() {
    return new Promise((resolve) => {
      const s = net.connect(this.port, '127.0.0.1');
      s.setTimeout(500);
      s.on('connect', () => s.write('PING\r\n'));
      s.on('data', (d) => { s.destroy(); resolve(d.toString().startsWith('+PONG')); });
      s.on('error', () => resolve(false));
      s.on('timeout', () => { s.destroy(); resolve(false); });
    });
  }

  /** Stops it (SIGTERM) and waits until the process is gone. */
  async stop() {
    if (!this.proc || this.proc.exitCode !== null || this.proc.signalCode !== null) return;
    this.proc.kill('SIGTERM');
    const t = setTimeout(() => this.proc.kill('SIGKILL'), 5000);
    await this.exited;
    clearTimeout(t);
  }
}

/**
 * A TCP proxy to the replica. `pause()` cuts every open connection and stops listening (new
 * connections are refused, as from a stopped server); `resume()` listens again on the same port.
 */
class ReplicaProxy {
  constructor(targetPort) {
    this.targetPort = targetPort;
    this.sockets = new Set();
    this.server = null;
    this.port = null;
  }

  async listen(port = 0) {
    this.server = net.createServer((client) => {
      const upstream = net.connect(this.targetPort, '127.0.0.1');
      for (const s of [client, upstream]) {
        this.sockets.add(s);
        s.on('close', () => this.sockets.delete(s));
        s.on('error', () => { client.destroy(); upstream.destroy(); });
      }
      client.pipe(upstream);
      upstream.pipe(client);
    });
    await new Promise((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(port, '127.0.0.1', resolve);
    });
    this.port = this.server.address().port;
  }

  async pause() {
    const server = this.server;
    this.server = null;
    await new Promise((resolve) => { server.close(resolve); for (const s of this.sockets) s.destroy(); });
  }

  async resume() {
    await this.listen(this.port);
  }

  async close() {
    if (this.server) await this.pause();
  }
}

/**
 * Holds ACCESS EXCLUSIVE locks on the tables every send, join and state write needs, for `ms`, from
 * a psql session of its own: the instances' pool connections block on them and later requests wait
 * for a connection, so both pools are exhausted while it lasts. Resolves when the lock is released.
 */
function holdWriteLocks(databaseUrl, ms) {
  const sql = `BEGIN; LOCK TABLE rooms, messages, room_state IN ACCESS EXCLUSIVE MODE; `
    + `SELECT pg_sleep(${ms / 1000}); ROLLBACK;`;
  return new Promise((resolve, reject) => {
    execFile('psql', ['-X', '-q', '-v', 'ON_ERROR_STOP=1', '-d', databaseUrl, '-c', sql],
      { timeout: ms + 30000 }, (err, _stdout, stderr) => (err ? reject(new Error(`lock session: ${stderr || err.message}`)) : resolve()));
  });
}

module.exports = { PrivateRedis, ReplicaProxy, holdWriteLocks };
