'use strict';
// The chat page served at / by `tsunagi serve`, driven in headless Chromium: two people sign up
// through the page, open one room, see each other typing (by name) and chat; one of them loses the
// network, writes two messages that stay pending, and on reconnection both pages show the same
// four messages in the same order, each once. Also: no console errors, nothing fetched from
// another origin, and the composer fits a 375 px phone.

const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const path = require('node:path');
const { chromium } = require('playwright-core');
const h = require('./harness');

const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
// Without these flags Chromium reaches for the network at start; this machine has none.
const ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync'];
const SHOTS = path.resolve(__dirname, '../../docs/screenshots');
const DESKTOP = { width: 1100, height: 700 };

describe('chat page in a browser', () => {
  let srv; let browser;
  before(async () => {
    srv = await h.startServer({ env: { TSUNAGI_TYPING_RATE: '50' } });
    browser = await chromium.launch({ executablePath: CHROMIUM, args: ARGS });
  });
  after(async () => {
    if (browser) await browser.close();
    if (srv) await srv.destroy();
  });

  /** A fresh browser (context) on the page, recording errors and foreign requests. */
  async function openPage(label) {
    const context = await browser.newContext({ viewport: DESKTOP });
    const p = await context.newPage();
    const host = new URL(srv.url).host;
    p.label = label;
    p.context_ = context;
    p.errors = [];
    p.foreign = [];
    p.offline = false;
    p.on('pageerror', (e) => p.errors.push(`pageerror: ${e.message}`));
    p.on('console', (m) => {
      if (m.type() !== 'error') return;
      // While the test holds the network down, Chromium itself logs the failed reconnection
      // attempts; those are the browser reporting the cut, not the page misbehaving.
      if (p.offline && /ERR_INTERNET_DISCONNECTED|WebSocket connection to .* failed|Failed to load resource/.test(m.text())) return;
      p.errors.push(`console: ${m.text()}`);
    });
    p.on('request', (r) => {
      const u = new URL(r.url());
      if (u.protocol === 'data:' || u.protocol === 'blob:') return;
      if (u.host !== host) p.foreign.push(r.url());
    });
    await p.goto(srv.url + '/');
    return p;
  }

  async function signUp(p, username, displayName) {
    await p.waitForSelector('#register-form');
    await p.fill('#reg-username', username);
    await p.fill('#reg-display', displayName);
    await p.fill('#reg-email', `${username}@example.com`);
    // (the password policy refuses one that contains the username)
    await p.fill('#reg-password', 'Correct-Horse-Battery-42');
    await p.click('#register-btn');
    await p.waitForSelector('#app:not([hidden]), #auth-error:not(:empty)');
    assert.equal(await p.textContent('#auth-error'), '', 'sign-up refused');
    await p.waitForSelector('#status:text-is("connected")');
    await p.waitForSelector(`#me:text-is("${displayName}")`);
  }

  // What a page shows, in order: [who, text, pending?] per message.
  const shown = (p) => p.$$eval('#messages .msg', (els) => els.map((e) => ({
    who: e.querySelector('.who').textContent,
    text: e.querySelector('.text').textContent,
    seq: e.dataset.seq ? Number(e.dataset.seq) : null,
    pending: e.classList.contains('pending'),
  })));

  it('two users sign up, chat, see typing by name, and an offline user catches up in order', async () => {
    const alice = await openPage('alice');
    await signUp(alice, 'alice', 'Alice Liddell');
    await alice.fill('#newroom', 'lobby');
    await alice.press('#newroom', 'Enter');
    await alice.waitForSelector('#title:text-is("#lobby")');

    const bob = await openPage('bob');
    await signUp(bob, 'bob', 'Bob Builder');
    await bob.click('.room[data-room="lobby"]');
    await bob.waitForSelector('#title:text-is("#lobby")');
    // presence: each sees the other online, by name
    await alice.waitForSelector('#online .who-online:text-is("Bob Builder")');
    await bob.waitForSelector('#online .who-online:text-is("Alice Liddell")');

    // A types: B sees it with A's name; A sends with Enter; B sees it with A's name
    await alice.click('#text');
    await alice.keyboard.type('hello bob', { delay: 30 });
    await bob.waitForSelector('#typing:has-text("Alice Liddell is typing")');
    await alice.keyboard.press('Enter');
    await bob.waitForSelector('#messages .msg:not(.pending):has(.text:text-is("hello bob"))');
    assert.deepEqual((await shown(bob)).map((m) => [m.who, m.text]), [['Alice Liddell', 'hello bob']]);

    // B's network is cut: the page says so at once, and his sends wait as pending
    await bob.context_.setOffline(true);
    bob.offline = true;
    await bob.waitForSelector('#banner:not([hidden])', { timeout: 5000 });
    for (const t of ['bob offline 1', 'bob offline 2']) {
      await bob.fill('#text', t);
      await bob.press('#text', 'Enter');
    }
    await bob.waitForFunction(() => document.querySelectorAll('#messages .msg.pending').length === 2);
    const pend = await bob.$$eval('#messages .msg.pending', (els) => els.map((e) => e.textContent));
    assert.ok(pend.every((t) => t.includes('sending…')), JSON.stringify(pend));
    await alice.fill('#text', 'alice while bob is away');
    await alice.click('#sendbtn');
    await alice.waitForSelector('#messages .msg:not(.pending):has(.text:text-is("alice while bob is away"))');

    // B is back: both pages converge on the same four messages, in seq order, each once
    await bob.context_.setOffline(false);
    const settled = (p) => p.waitForFunction(() => {
      const all = document.querySelectorAll('#messages .msg');
      return all.length === 4 && document.querySelectorAll('#messages .msg.pending').length === 0;
    }, null, { timeout: 20000 });
    await Promise.all([settled(alice), settled(bob)]);
    await bob.waitForSelector('#banner', { state: 'hidden' });
    bob.offline = false; // connected again: from here on every console error counts
    const a = await shown(alice);
    const b = await shown(bob);
    assert.deepEqual(a, b);
    assert.deepEqual(a.map((m) => m.seq), [1, 2, 3, 4]);
    // Bob's two could only be sent after he came back, so they follow Alice's
    assert.deepEqual(a.map((m) => m.text),
      ['hello bob', 'alice while bob is away', 'bob offline 1', 'bob offline 2']);
    const byText = Object.fromEntries(a.map((m) => [m.text, m.who]));
    assert.equal(byText['bob offline 1'], 'Bob Builder');
    assert.equal(byText['alice while bob is away'], 'Alice Liddell');

    // screenshots of the exchange, desktop size
    fs.mkdirSync(SHOTS, { recursive: true });
    await alice.screenshot({ path: path.join(SHOTS, 'chat-alice.png') });
    await bob.screenshot({ path: path.join(SHOTS, 'chat-bob.png') });

    // a phone: the Send button is on screen and nothing scrolls sideways
    await alice.setViewportSize({ width: 375, height: 667 });
    const box = await alice.locator('#sendbtn').boundingBox();
    assert.ok(box && box.x >= 0 && box.x + box.width <= 375 && box.y + box.height <= 667,
      `Send button at ${JSON.stringify(box)}`);
    const wide = await alice.evaluate(() => document.documentElement.scrollWidth);
    assert.ok(wide <= 375, `page is ${wide} px wide at 375`);

    assert.deepEqual([...alice.errors, ...bob.errors], []);
    assert.deepEqual([...alice.foreign, ...bob.foreign], []);
  });
});
