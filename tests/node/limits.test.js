'use strict';
// The limits that hold against hostile clients (docs/security.md), through the official client:
// every refusal is one of the contract's answers.
const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const h = require('./harness');

describe('limits against hostile clients', () => {
  let srv;
  before(async () => {
    srv = await h.startServer({ env: { TSUNAGI_EVENT_RATE: '10', TSUNAGI_WRITE_RATE: '1' } });
  });
  after(async () => { h.closeAll(); if (srv) await srv.destroy(); });

  it('every event counts against the socket rate, unknown ones too: rate_limited with retry_after_ms', async () => {
    const s = await h.connect(srv.url, h.userToken('flood'));
    const name = 'x'.repeat(100000);
    const acks = await Promise.all(Array.from({ length: 60 }, () => h.ack(s, name, {})));
    const limited = acks.filter((a) => a.ok === false && a.error.code === 'rate_limited');
    assert.ok(limited.length >= 30, JSON.stringify(acks.map((a) => a.error.code)));
    for (const a of limited) assert.ok(a.error.retry_after_ms > 0, JSON.stringify(a));
    for (const a of acks) {
      assert.ok(['rate_limited', 'bad_request'].includes(a.error.code), JSON.stringify(a));
      assert.ok(JSON.stringify(a).length < 400, 'the unknown name was echoed back whole');
    }
    s.close();
  });

  it('room creation past the write rate → 429 with Retry-After', async () => {
    const t = h.userToken('builder');
    const statuses = [];
    let refused;
    for (let i = 0; i < 15; i++) {
      const r = await h.http(srv.url, 'POST', '/api/v1/rooms', t, { id: h.roomId('w') });
      statuses.push(r.status);
      if (r.status === 429) refused = r;
    }
    assert.equal(statuses.filter((s) => s === 201).length, 10, JSON.stringify(statuses));
    h.assertHttpError(assert, refused, 429, 'rate_limited');
  });

  it('U+0000 inside metadata → 400 bad_request', async () => {
    const r = await h.http(srv.url, 'POST', '/api/v1/rooms', h.userToken('nul'),
      { id: h.roomId('n'), metadata: { k: ['a\u0000'] } });
    h.assertHttpError(assert, r, 400, 'bad_request');
  });

  it('a token whose exp has a fraction connects; one past its exp → token_expired', async () => {
    const now = Date.now() / 1000;
    const s = await h.connect(srv.url, h.mintToken('frac', { exp: now + 3600.5 }));
    assert.equal(s.connected, true);
    s.close();
    const err = await h.connectError(srv.url, { token: h.mintToken('late', { exp: now - 0.5 }) });
    assert.equal(err.data.code, 'token_expired', JSON.stringify(err));
  });
});
