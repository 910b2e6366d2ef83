// Shared setup: the contract suite's harness (real server, tokens, rooms) and the built client.
import { createRequire } from 'node:module';
import assert from 'node:assert/strict';

const require = createRequire(import.meta.url);
export const h = require('../../../tests/node/harness.js');
export { connect } from '../dist/index.js';

/** Collects a room's 'message' events. */
export function collect(room) {
  const got = [];
  room.on('message', (m) => got.push(m));
  return got;
}

/** Asserts `msgs` are seq 1..n (or from..n) exactly once, in order. */
export function assertContiguous(msgs, from = 1) {
  msgs.forEach((m, i) => assert.equal(m.seq, from + i, `message #${i} has seq ${m.seq}, expected ${from + i}`));
}

export const settle = (ms = 300) => new Promise((r) => setTimeout(r, ms));
