'use strict';
// The operations dashboard at /admin, in headless Chromium: a fresh account is made admin with
// the real binary's `make-admin` (same data directory and environment as the server), logs in
// through the page while a socket sends messages continuously, and the page shows a non-zero
// messages/s. Also: the data endpoint refuses a non-admin (403) and no token (401), a non-admin
// login on the page shows "admins only", no console errors, nothing fetched from another origin.
// Writes docs/screenshots/admin.png.

const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const path = require('node:path');
const { spawnSync } = require('node:child_process');
const { chromium } = require('playwright-core');
const h = require('./harness');

const BIN = process.env.TSUNAGI_BIN || path.resolve(__dirname, '../../target/release/tsunagi');
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
// Without these flags Chromium reaches for the network at start; this machine has none.
const ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync'];
const SHOTS = path.resolve(__dirname, '../../docs/screenshots');
const VIEW = { width: 1200, height: 800 };

/** `tsunagi make-admin <login>` against the server's database, as an operator would run it. */
function makeAdmin(srv, login) {
  return spawnSync(BIN, ['make-admin', login], { cwd: srv.dir, env: srv.env, encoding: 'utf8', timeout: 30000 });
}

describe('operations dashboard', () => {
  let srv; let browser; let admin; let plain; let sending = true; let sender;
  before(async () => {
    srv = await h.startServer();
    browser = await chromium.launch({ executablePath: CHROMIUM, args: ARGS });
    admin = await h.registerUser(srv.url);
    plain = await h.registerUser(srv.url);
  });
  after(async () => {
    sending = false;
    if (sender) await sender.catch(() => {});
    h.closeAll();
    if (browser) await browser.close();
    if (srv) await srv.destroy();
  });

  it('make-admin promotes an account (audited) and refuses an unknown one', async () => {
    const r = makeAdmin(srv, admin.username);
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stdout, /is now an admin/);
    const unknown = makeAdmin(srv, 'nobody_here_at_all');
    assert.notEqual(unknown.status, 0);
    assert.match(unknown.stderr, /no account/);
    const login = await h.http(srv.url, 'POST', '/api/v1/auth/login', null,
      { login: admin.username, password: admin.password });
    assert.equal(login.status, 200);
    assert.equal(login.body.user.role, 'admin');
    admin.token = login.body.token;
    const audit = await h.http(srv.url, 'GET', `/api/v1/admin/audit?actor=cli`, admin.token);
    assert.equal(audit.status, 200, audit.text);
    assert.ok(audit.body.items.some((e) => e.target === `user:${admin.user.id}`), audit.text);
  });

  it('the data endpoint is for admins only', async () => {
    const none = await h.http(srv.url, 'GET', '/api/v1/admin/dashboard');
    assert.equal(none.status, 401);
    const denied = await h.http(srv.url, 'GET', '/api/v1/admin/dashboard', plain.token);
    h.assertHttpError(assert, denied, 403, 'forbidden');
    const ok = await h.http(srv.url, 'GET', '/api/v1/admin/dashboard', h.mintToken('some-admin', { role: 'admin' }));
    assert.equal(ok.status, 200, ok.text);
    assert.ok(ok.body.samples.length >= 1, 'the sampler started with the app');
    assert.equal(ok.body.interval_ms, 2000);
  });

  it('an admin sees live figures in the browser', async () => {
    const room = `dash-${Date.now()}`;
    await h.createRoom(srv.url, plain.token, room);
    const s = await h.connect(srv.url, plain.token);
    assert.equal((await h.ack(s, 'join', { room })).ok, true);
    let n = 0;
    sender = (async () => {
      while (sending) {
        const res = await h.ack(s, 'send', { room, content: `tick ${n}`, client_id: `d-${n}` });
        assert.equal(res.ok, true, JSON.stringify(res));
        n += 1;
        // 10/s: under TSUNAGI_SEND_RATE (20/s) however long the page takes, so no rate_limited
        await new Promise((r) => setTimeout(r, 100));
      }
    })();

    const context = await browser.newContext({ viewport: VIEW });
    const p = await context.newPage();
    const host = new URL(srv.url).host;
    const errors = []; const foreign = [];
    p.on('pageerror', (e) => errors.push(`pageerror: ${e.message}`));
    p.on('console', (m) => { if (m.type() === 'error') errors.push(`console: ${m.text()}`); });
    p.on('request', (r) => {
      const u = new URL(r.url());
      if (u.protocol !== 'data:' && u.protocol !== 'blob:' && u.host !== host) foreign.push(r.url());
    });
    await p.goto(srv.url + '/admin');

    // a non-admin is turned away by the page
    await p.waitForSelector('#login-form');
    await p.fill('#login-name', plain.username);
    await p.fill('#login-password', plain.password);
    await p.click('#login-btn');
    await p.waitForSelector('#login-error:has-text("admins only")');

    await p.fill('#login-name', admin.username);
    await p.fill('#login-password', admin.password);
    await p.click('#login-btn');
    await p.waitForSelector('#dash-view:not([hidden])');
    // a few samples with traffic: messages in and out per second above zero
    await p.waitForFunction(() => Number(document.querySelector('#cur-in').textContent) > 0
      && Number(document.querySelector('#cur-out').textContent) > 0, null, { timeout: 15000 });
    await p.waitForFunction(() => /ms$/.test(document.querySelector('#cur-p50').textContent), null, { timeout: 10000 });
    assert.equal(await p.textContent('#cur-sockets'), '1');
    assert.match(await p.textContent('#bus-state'), /connected/);
    assert.equal(await p.locator('.uplot').count(), 6, 'six charts drawn');
    // the page keeps refreshing: a later sample
    const before = await p.textContent('#updated');
    await p.waitForFunction((b) => document.querySelector('#updated').textContent !== b, before, { timeout: 8000 });

    // a screenshot with some history: six samples or more
    await p.waitForFunction(() => Number((/(\d+) samples/.exec(document.querySelector('#updated').textContent) || [])[1]) >= 6,
      null, { timeout: 20000 });
    fs.mkdirSync(SHOTS, { recursive: true });
    await p.screenshot({ path: path.join(SHOTS, 'admin.png') });
    assert.deepEqual(errors, []);
    assert.deepEqual(foreign, []);
    // the token survives a reload (its own localStorage key), and log out returns to the form
    await p.reload();
    await p.waitForSelector('#dash-view:not([hidden])');
    await p.click('#logout-btn');
    await p.waitForSelector('#login-view:not([hidden])');
    assert.deepEqual(errors, []);
    await context.close();
    sending = false;
    await sender;
  });
});
