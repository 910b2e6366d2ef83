'use strict';
// The chat page served at / by `tsunagi serve`, driven in headless Chromium: two users in two
// browsers create a room, join, exchange messages, see typing and presence, and a page that loses
// its connection recovers the messages it missed.

const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { chromium } = require('playwright-core');
const h = require('./harness');

const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
// Without these flags Chromium reaches for the network at start; this machine has none.
const ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync'];

describe('chat page in a browser', () => {
  let srv; let browser;
  before(async () => {
    srv = await h.startServer({ env: { TSUNAGI_TYPING_RATE: '50' } });
    browser = await chromium.launch({ executablePath: CHROMIUM, args: ARGS });
  });
  after(async () => {
    if (browser) await browser.close();
    if (srv) await srv.stop();
  });

  async function page(user) {
    const p = await (await browser.newContext()).newPage();
    const errors = [];
    p.on('pageerror', (e) => errors.push(e.message));
    p.errors = errors;
    await p.goto(srv.url + '/');
    await p.fill('#token', h.userToken(user));
    await p.click('#login button');
    await p.waitForSelector('#status:text("connected")');
    return p;
  }

  const texts = (p) => p.$$eval('.msg', (els) => els.map((e) => e.lastChild.textContent));

  it('two users chat, see typing and presence, and a reconnect recovers missed messages', async () => {
    const alice = await page('alice');
    await alice.fill('#newroom', 'lobby');
    await alice.click('#create button');
    await alice.waitForSelector('#title:text("#lobby")');

    const bob = await page('bob');
    await bob.click('.room:has-text("lobby")');
    await bob.waitForSelector('#title:text("#lobby")');
    await alice.waitForSelector('#online :text("bob")');

    await alice.fill('#text', 'hello bob');
    await alice.click('#sendbtn');
    await bob.waitForSelector('.msg:has-text("hello bob")');
    await bob.type('#text', 'hi');
    await alice.waitForSelector('#typing:has-text("bob typing")');
    await bob.click('#sendbtn');
    await alice.waitForSelector('.msg:has-text("hi")');
    assert.deepEqual(await texts(alice), ['hello bob', 'hi']);
    assert.deepEqual(await texts(bob), ['hello bob', 'hi']);

    // Bob's connection drops; alice sends while he is away; his page reconnects and syncs.
    await bob.evaluate(() => state.sio.ws.close());
    for (let i = 1; i <= 5; i++) {
      await h.http(srv.url, 'POST', '/api/v1/rooms/lobby/messages', h.userToken('alice'), { content: `missed ${i}` });
    }
    await bob.waitForSelector('.msg:has-text("missed 5")', { timeout: 15000 });
    const expected = ['hello bob', 'hi', 'missed 1', 'missed 2', 'missed 3', 'missed 4', 'missed 5'];
    assert.deepEqual(await texts(bob), expected);
    await alice.waitForSelector('.msg:has-text("missed 5")');
    assert.deepEqual(await texts(alice), expected);
    assert.deepEqual([...alice.errors, ...bob.errors], []);
  });
});
