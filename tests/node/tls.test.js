'use strict';
// PROTOCOL.md §7: with TSUNAGI_TLS_CERT / TSUNAGI_TLS_KEY the listener serves HTTPS and WSS only.
// The official socket.io-client over wss:// and over HTTPS long-polling, trusting only a test CA
// made here with the openssl CLI (no openssl: the test fails, it is never skipped).

const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { execFileSync } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const h = require('./harness');

const { ack } = h;

/** A CA and a server certificate for localhost and 127.0.0.1 (EC P-256, one day), in `dir`. */
function makeCerts(dir) {
  const openssl = (...args) => {
    try {
      execFileSync('openssl', args, { cwd: dir, stdio: 'pipe' });
    } catch (e) {
      throw new Error(`openssl ${args[0]} failed (the TLS test needs the openssl CLI): ${e.stderr || e.message}`);
    }
  };
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes'];
  openssl('req', '-x509', ...ec, '-keyout', 'ca.key', '-out', 'ca.pem', '-days', '1',
    '-subj', '/CN=tsunagi node test CA',
    '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign');
  openssl('req', ...ec, '-keyout', 'server.key', '-out', 'server.csr', '-subj', '/CN=localhost');
  fs.writeFileSync(path.join(dir, 'server.ext'), [
    'subjectAltName=DNS:localhost,IP:127.0.0.1',
    'basicConstraints=critical,CA:FALSE',
    'keyUsage=critical,digitalSignature',
    'extendedKeyUsage=serverAuth',
  ].join('\n'));
  openssl('x509', '-req', '-in', 'server.csr', '-CA', 'ca.pem', '-CAkey', 'ca.key', '-set_serial', '2',
    '-days', '1', '-extfile', 'server.ext', '-out', 'server.pem');
  return {
    ca: fs.readFileSync(path.join(dir, 'ca.pem')),
    cert: path.join(dir, 'server.pem'),
    key: path.join(dir, 'server.key'),
  };
}

describe('TLS listener (HTTPS and WSS)', () => {
  let srv;
  let certDir;
  let ca;
  before(async () => {
    certDir = fs.mkdtempSync(path.join(os.tmpdir(), 'tsunagi-tls-'));
    const certs = makeCerts(certDir);
    ca = certs.ca;
    srv = await h.startServer({
      ca,
      env: { TSUNAGI_TLS_CERT: certs.cert, TSUNAGI_TLS_KEY: certs.key },
    });
    assert.match(srv.url, /^https:\/\//);
  });
  after(async () => {
    h.closeAll();
    if (srv) await srv.destroy();
    if (certDir) fs.rmSync(certDir, { recursive: true, force: true });
  });

  /** A public room made over HTTPS by `owner`. */
  async function room(owner) {
    const id = h.roomId('tls');
    const r = await h.httpsRequest(`${srv.url}/api/v1/rooms`, ca,
      { method: 'POST', token: h.userToken(owner), body: { id } });
    assert.equal(r.status, 201, r.text);
    return id;
  }

  /** join, send with an ack, and the socket's own `message` arrives. */
  async function roundTrip(socket, id, content) {
    const joined = await ack(socket, 'join', { room: id });
    assert.equal(joined.ok, true, JSON.stringify(joined));
    const arrived = h.waitFor(socket, 'message', (m) => m.content === content);
    const sent = await ack(socket, 'send', { room: id, content, client_id: `c-${content}` });
    assert.equal(sent.ok, true, JSON.stringify(sent));
    const message = await arrived;
    h.assertMessageShape(assert, message);
    assert.equal(message.id, sent.message.id);
    assert.equal(message.room, id);
  }

  it('HTTPS answers /healthz and the API, trusting only the test CA', async () => {
    const r = await h.httpsRequest(`${srv.url}/healthz`, ca);
    assert.equal(r.status, 200);
    const me = await h.httpsRequest(`${srv.url}/api/v1/rooms`, ca, { token: h.userToken('tls-lister') });
    assert.equal(me.status, 200, me.text);
    // a client that does not trust the CA refuses the server
    await assert.rejects(fetch(`${srv.url}/healthz`));
  });

  it('socket.io-client over wss:// joins, sends with an ack and receives its message', async () => {
    const id = await room('tls-ws');
    const s = await h.connect(srv.url, h.userToken('tls-ws'), { ca, transports: ['websocket'] });
    assert.equal(s.io.engine.transport.name, 'websocket');
    await roundTrip(s, id, 'over wss');
  });

  it('socket.io-client over HTTPS long-polling joins, sends with an ack and receives its message', async () => {
    const id = await room('tls-poll');
    const s = await h.connect(srv.url, h.userToken('tls-poll'), { ca, transports: ['polling'] });
    assert.equal(s.io.engine.transport.name, 'polling');
    await roundTrip(s, id, 'over https polling');
  });

  it('the default transports start polling over HTTPS and upgrade to wss://', async () => {
    const id = await room('tls-upgrade');
    const s = await h.connect(srv.url, h.userToken('tls-upgrade'), { ca, transports: ['polling', 'websocket'] });
    await h.until(() => s.io.engine.transport.name === 'websocket', 10000, 'the upgrade to WebSocket');
    await roundTrip(s, id, 'after the upgrade');
  });

  it('plain http:// and ws:// to the TLS listener get no answer', async () => {
    const plain = srv.url.replace('https://', 'http://');
    await assert.rejects(fetch(`${plain}/healthz`, { signal: AbortSignal.timeout(5000) }));
    const err = await h.connectError(plain, { token: h.userToken('tls-plain') }, { timeout: 5000 });
    assert.equal(err.data, undefined, 'a transport error, not a server answer');
  });
});
