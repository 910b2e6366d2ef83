'use strict';
// The authorization matrix: every HTTP endpoint and Socket.IO client event × every principal ×
// public / private room or sensor → the answer PROTOCOL.md §2–§7 prescribes (docs/protocol.md where
// the contract is silent). The TABLE below is the whole specification: each entry that is not `—`
// is one check (a "cell") run against a real server with fixtures of its own, so the order of
// cells does not matter. Every cell runs; the failing ones are listed together, each by its name.
//
//   node --test authz.test.js        run the matrix (TSUNAGI_TEST_PG / TSUNAGI_TEST_REDIS_ALL apply)
//   node authz.test.js --markdown    print the table as markdown (docs/security.md)

const PRINCIPALS = ['no token', 'bad token', 'expired', 'user', 'member', 'owner', 'admin'];

// Entries: an HTTP status, or an ack (`ok` or the error code). `401` carries the column's code
// (no token → auth_required, bad token → invalid_token, expired → token_expired); `403` is
// `forbidden`. `connect_error`: a socket without a valid token never connects (its connect_error
// carries the column's code), so it can send no event: those cells check the connect.
// `listed` / `hidden`: 200, and the cell's room / sensor / webhook is or is not among the items.
// `with-email` / `no-email`: 200, and the account's USER carries its `email` or not.
// `—`: the principal does not exist for this operation (a sensor has no members; an account no
// room). `X ~Y [n]`: the contract says X, the server answers Y today: known deviation n (below);
// the cell accepts both and says which it saw.
//
// "(no such …)": the id names nothing. Authentication comes first (401), then the contract's order
// (§5: not_found before forbidden), except on the admin-only endpoints, which are forbidden whole.
//
// Principals: user = a valid token that is neither member nor owner; member = added with
// POST …/members; owner = the room's or sensor's creator, the account itself (users), the
// webhook's creator; admin = a token with role admin. Each cell mints fresh ones.
const TABLE = `
operation                                        | visibility | no token      | bad token     | expired       | user   | member | owner  | admin
POST /api/v1/auth/register                       |            | 201           | 201           | 201           | 201    | —      | —      | 201
POST /api/v1/auth/login                          |            | 200           | 200           | 200           | 200    | —      | —      | 200
GET /api/v1/users                                |            | 401           | 401           | 401           | 200    | —      | —      | 200
GET /api/v1/users/{id}                           |            | 401           | 401           | 401           | 200    | —      | 200    | 200
GET /api/v1/users/{id} (email)                   |            | 401           | 401           | 401           | no-email | —    | with-email | with-email
GET /api/v1/users (email)                        |            | 401           | 401           | 401           | no-email | —    | with-email | with-email
PATCH /api/v1/users/{id}                         |            | 401           | 401           | 401           | 403    | —      | 200    | 200
PATCH /api/v1/users/{id} (role)                  |            | 401           | 401           | 401           | 403    | —      | 403    | 200
POST /api/v1/rooms                               | public     | 401           | 401           | 401           | 201    | —      | —      | 201
POST /api/v1/rooms                               | private    | 401           | 401           | 401           | 201    | —      | —      | 201
GET /api/v1/rooms                                | public     | 401           | 401           | 401           | listed | listed | listed | listed
GET /api/v1/rooms                                | private    | 401           | 401           | 401           | hidden | listed | listed | listed
POST /api/v1/rooms/{id}/members                  | public     | 401           | 401           | 401           | 403    | 403    | 204    | 204
POST /api/v1/rooms/{id}/members                  | private    | 401           | 401           | 401           | 403    | 403    | 204    | 204
GET /api/v1/rooms/{id}/members                   | public     | 401           | 401           | 401           | 200    | 200    | 200    | 200
GET /api/v1/rooms/{id}/members                   | private    | 401           | 401           | 401           | 403    | 200    | 200    | 200
GET /api/v1/rooms/{id}/messages                  | public     | 401           | 401           | 401           | 200    | 200    | 200    | 200
GET /api/v1/rooms/{id}/messages                  | private    | 401           | 401           | 401           | 403    | 200    | 200    | 200
POST /api/v1/rooms/{id}/messages                 | public     | 401           | 401           | 401           | 201    | 201    | 201    | 201
POST /api/v1/rooms/{id}/messages                 | private    | 401           | 401           | 401           | 403    | 201    | 201    | 201
GET /api/v1/rooms/{id}/state                     | public     | 401           | 401           | 401           | 200    | 200    | 200    | 200
GET /api/v1/rooms/{id}/state                     | private    | 401           | 401           | 401           | 403    | 200    | 200    | 200
GET /api/v1/rooms/{id}/state/{key}               | public     | 401           | 401           | 401           | 200    | 200    | 200    | 200
GET /api/v1/rooms/{id}/state/{key}               | private    | 401           | 401           | 401           | 403    | 200    | 200    | 200
PUT /api/v1/rooms/{id}/state/{key}               | public     | 401           | 401           | 401           | 200    | 200    | 200    | 200
PUT /api/v1/rooms/{id}/state/{key}               | private    | 401           | 401           | 401           | 403    | 200    | 200    | 200
DELETE /api/v1/rooms/{id}/state/{key}            | public     | 401           | 401           | 401           | 204    | 204    | 204    | 204
DELETE /api/v1/rooms/{id}/state/{key}            | private    | 401           | 401           | 401           | 403    | 204    | 204    | 204
POST /api/v1/sensors                             | public     | 401           | 401           | 401           | 201    | —      | —      | 201
POST /api/v1/sensors                             | private    | 401           | 401           | 401           | 201    | —      | —      | 201
GET /api/v1/sensors                              | public     | 401           | 401           | 401           | listed | —      | listed | listed
GET /api/v1/sensors                              | private    | 401           | 401           | 401           | hidden | —      | listed | listed
GET /api/v1/sensors/{id}                         | public     | 401           | 401           | 401           | 200    | —      | 200    | 200
GET /api/v1/sensors/{id}                         | private    | 401           | 401           | 401           | 403    | —      | 200    | 200
POST /api/v1/sensors/{id}/readings               | public     | 401           | 401           | 401           | 403    | —      | 202    | 202
POST /api/v1/sensors/{id}/readings               | private    | 401           | 401           | 401           | 403    | —      | 202    | 202
GET /api/v1/sensors/{id}/readings                | public     | 401           | 401           | 401           | 200    | —      | 200    | 200
GET /api/v1/sensors/{id}/readings                | private    | 401           | 401           | 401           | 403    | —      | 200    | 200
GET /api/v1/sensors/{id}/series                  | public     | 401           | 401           | 401           | 200    | —      | 200    | 200
GET /api/v1/sensors/{id}/series                  | private    | 401           | 401           | 401           | 403    | —      | 200    | 200
POST /api/v1/webhooks (rooms: [room])            | public     | 401           | 401           | 401           | 403    | 403    | 201    | 201
POST /api/v1/webhooks (rooms: [room])            | private    | 401           | 401           | 401           | 403    | 403    | 201    | 201
POST /api/v1/webhooks (every room)               |            | 401           | 401           | 401           | 403    | —      | —      | 201
GET /api/v1/webhooks                             | public     | 401           | 401           | 401           | hidden | hidden | listed | listed
GET /api/v1/webhooks                             | private    | 401           | 401           | 401           | hidden | hidden | listed | listed
DELETE /api/v1/webhooks/{id}                     | public     | 401           | 401           | 401           | 403    | 403    | 204    | 204
DELETE /api/v1/webhooks/{id}                     | private    | 401           | 401           | 401           | 403    | 403    | 204    | 204
GET /api/v1/admin/audit                          |            | 401           | 401           | 401           | 403    | —      | —      | 200
GET /api/v1/admin/stats                          |            | 401           | 401           | 401           | 403    | —      | —      | 200
GET /api/v1/admin/dashboard                      |            | 401           | 401           | 401           | 403    | —      | —      | 200
POST /api/v1/admin/archive                       |            | 401           | 401           | 401           | 403    | —      | —      | 202
GET /api/v1/admin/jobs                           |            | 401           | 401           | 401           | 403    | —      | —      | 200
POST /api/v1/admin/jobs/{id}/retry               |            | 401           | 401           | 401           | 403    | —      | —      | 200
GET /api/v1/rooms/{id}/messages (no such room)  |            | 401           | 401           | 401           | 404    | —      | —      | 404
POST /api/v1/rooms/{id}/members (no such room)   |            | 401           | 401           | 401           | 404    | —      | —      | 404
PATCH /api/v1/users/{id} (no such account)       |            | 401           | 401           | 401           | 404    | —      | —      | 404
GET /api/v1/sensors/{id} (no such sensor)        |            | 401           | 401           | 401           | 404    | —      | —      | 404
POST /api/v1/sensors/{id}/readings (no such sensor) |         | 401           | 401           | 401           | 404    | —      | —      | 404
DELETE /api/v1/webhooks/{id} (no such webhook)   |            | 401           | 401           | 401           | 404    | —      | —      | 404
POST /api/v1/admin/jobs/{id}/retry (no such job) |            | 401           | 401           | 401           | 403    | —      | —      | 404
GET /api/v1/openapi.json                         |            | 200           | 200           | 200           | 200          | — | — | 200
GET /                                            |            | 200           | 200           | 200           | 200    | —      | —      | 200
GET /admin                                       |            | 200           | 200           | 200           | 200    | —      | —      | 200
GET /assets/{name}                               |            | 200           | 200           | 200           | 200    | —      | —      | 200
GET /healthz                                     |            | 200           | 200           | 200           | 200    | —      | —      | 200
GET /readyz                                      |            | 200           | 200           | 200           | 200    | —      | —      | 200
GET /metrics                                     |            | 200           | 200           | 200           | 200    | —      | —      | 200
socket join                                      | public     | connect_error | connect_error | connect_error | ok     | ok     | ok     | ok
socket join                                      | private    | connect_error | connect_error | connect_error | forbidden | ok  | ok     | ok
socket leave                                     | public     | connect_error | connect_error | connect_error | ok     | ok     | ok     | ok
socket leave                                     | private    | connect_error | connect_error | connect_error | ok     | ok     | ok     | ok
socket send                                      | public     | connect_error | connect_error | connect_error | ok     | ok     | ok     | ok
socket send                                      | private    | connect_error | connect_error | connect_error | forbidden | ok  | ok     | ok
socket typing                                    | public     | connect_error | connect_error | connect_error | ok     | ok     | ok     | ok
socket typing                                    | private    | connect_error | connect_error | connect_error | forbidden | ok  | ok     | ok
socket sync                                      | public     | connect_error | connect_error | connect_error | ok     | ok     | ok     | ok
socket sync                                      | private    | connect_error | connect_error | connect_error | forbidden | ok  | ok     | ok
socket presence                                  | public     | connect_error | connect_error | connect_error | ok     | ok     | ok     | ok
socket presence                                  | private    | connect_error | connect_error | connect_error | forbidden | ok  | ok     | ok
socket state_set                                 | public     | connect_error | connect_error | connect_error | ok     | ok     | ok     | ok
socket state_set                                 | private    | connect_error | connect_error | connect_error | forbidden | ok  | ok     | ok
socket state_get                                 | public     | connect_error | connect_error | connect_error | ok     | ok     | ok     | ok
socket state_get                                 | private    | connect_error | connect_error | connect_error | forbidden | ok  | ok     | ok
socket reading                                   | public     | connect_error | connect_error | connect_error | forbidden | — | ok     | ok
socket reading                                   | private    | connect_error | connect_error | connect_error | forbidden | — | ok     | ok
socket subscribe                                 | public     | connect_error | connect_error | connect_error | ok     | —      | ok     | ok
socket subscribe                                 | private    | connect_error | connect_error | connect_error | forbidden | — | ok     | ok
socket unsubscribe                               | public     | connect_error | connect_error | connect_error | ok     | —      | ok     | ok
socket unsubscribe                               | private    | connect_error | connect_error | connect_error | ok     | —      | ok     | ok
socket join (no such room)                       |            | connect_error | connect_error | connect_error | not_found | —   | —      | not_found
socket leave (no such room)                      |            | connect_error | connect_error | connect_error | not_found | —   | —      | not_found
socket subscribe (no such sensor)                |            | connect_error | connect_error | connect_error | not_found | —   | —      | not_found
socket reading (no such sensor)                  |            | connect_error | connect_error | connect_error | not_found | —   | —      | not_found
`;

const DEVIATIONS = {};

// ------------------------------------------------------------------ the table, parsed

const { OPERATIONS, AUTH_CODES, fixture, sharedFixtures } = require('./authz-ops');

function parseTable() {
  const lines = TABLE.trim().split('\n');
  const header = lines[0].split('|').map((s) => s.trim());
  if (header.slice(2).join() !== PRINCIPALS.join()) throw new Error('TABLE header: the columns are the principals');
  return lines.slice(1).map((line) => {
    const [operation, visibility, ...entries] = line.split('|').map((s) => s.trim());
    if (entries.length !== PRINCIPALS.length) throw new Error(`TABLE row "${line}": ${entries.length} entries`);
    const cells = entries.map((entry) => {
      const m = entry.match(/^(\S+)(?:\s+~(\S+)\s+\[(\d+)\])?$/);
      if (!m) throw new Error(`TABLE entry "${entry}" in "${operation}"`);
      if (m[3] && !DEVIATIONS[m[3]]) throw new Error(`TABLE: no deviation [${m[3]}]`);
      return { expected: m[1], deviation: m[2] ? { answer: m[2], note: m[3] } : null };
    });
    return { operation, visibility, cells };
  });
}

/** What a cell's entry means as an observed answer ("401 auth_required", "403 forbidden", "ok"). */
function outcome(entry, principal) {
  if (entry === '401') return `401 ${AUTH_CODES[principal]}`;
  if (entry === 'connect_error') return `connect_error ${AUTH_CODES[principal]}`;
  if (entry === '403') return '403 forbidden';
  if (entry === '404') return '404 not_found';
  return entry;
}

// ------------------------------------------------------------------ markdown

const code = (s) => `\`${s}\``;

function operationCell(operation) {
  const socket = operation.match(/^socket (\S+)(?: \((.*)\))?$/);
  if (socket) return `${code(socket[1])} (Socket.IO${socket[2] ? `; ${socket[2]}` : ''})`;
  const m = operation.match(/^(\S+ \S+)(?: \((.*)\))?$/);
  return m[2] ? `${code(m[1])} (${m[2]})` : code(m[1]);
}

function entryCell(cell, principal) {
  if (cell.expected === '—') return '—';
  const text = code(outcome(cell.expected, principal));
  return cell.deviation ? `${text} (today ${code(cell.deviation.answer)}, note ${cell.deviation.note})` : text;
}

function markdown() {
  const out = [
    '## The authorization table',
    '',
    'Generated from `tests/node/authz.test.js` (`node tests/node/authz.test.js --markdown`), which checks',
    'every entry against the real binary, on SQLite and on PostgreSQL + Redis. An entry is the HTTP status',
    'or the Socket.IO ack (`ok` or the error code). `401` carries the column\'s code: no token →',
    '`auth_required`, bad token (wrong signature) → `invalid_token`, expired → `token_expired`. A socket',
    'without a valid token never connects (`connect_error` with that code, over WebSocket and long-polling,',
    'the token in `auth` or in an `Authorization` header), so it reaches no event.',
    '`listed` / `hidden`: 200, and the room, sensor or webhook is or is not among the items.',
    '`with-email` / `no-email`: 200, and the account\'s USER carries its `email` or not. `—`: the',
    'principal does not exist for this operation. user = a valid token, neither member nor owner;',
    'member = added with `POST …/members`; owner = the creator of the room, sensor or webhook, or the',
    'account itself; admin = `role: "admin"`.',
    '',
    `| operation | visibility | ${PRINCIPALS.join(' | ')} |`,
    `|---|---|${PRINCIPALS.map(() => '---').join('|')}|`,
  ];
  for (const { operation, visibility, cells } of parseTable()) {
    const entries = cells.map((c, i) => entryCell(c, PRINCIPALS[i]));
    out.push(`| ${operationCell(operation)} | ${visibility || '—'} | ${entries.join(' | ')} |`);
  }
  const notes = Object.entries(DEVIATIONS);
  if (notes.length) {
    out.push('', 'Known deviations (the server answers otherwise today; the cell accepts both):', '');
    for (const [n, why] of notes) out.push(`${n}. ${why}`);
  }
  return out.join('\n');
}

// ------------------------------------------------------------------ the run

/** Every cell of the table that applies, with its name ("… × member × private room"). */
function cellsOf(rows) {
  const cells = [];
  for (const { operation, visibility, cells: entries } of rows) {
    const op = OPERATIONS[operation];
    if (!op) throw new Error(`TABLE: no operation "${operation}" in authz-ops.js`);
    const noun = op.noun || (op.scope === 'sensor' ? 'sensor' : 'room');
    entries.forEach((entry, i) => {
      if (entry.expected === '—') return;
      const principal = PRINCIPALS[i];
      const name = [operation, principal, visibility && `${visibility} ${noun}`].filter(Boolean).join(' × ');
      cells.push({ name, operation, op, visibility, principal, entry });
    });
  }
  return cells;
}

/** Runs `fn` over `items`, `width` at a time. */
async function pool(items, width, fn) {
  let next = 0;
  const worker = async () => {
    while (next < items.length) await fn(items[next++]);
  };
  await Promise.all(Array.from({ length: width }, worker));
}

/** Runs one cell: its failure as a sentence, or null. A cell at a known deviation notes it in `seen`. */
async function check(url, cell, n, shared, seen) {
  let got;
  try {
    const { fx, tokens } = await fixture(url, cell.op, cell.visibility, n, shared);
    got = await cell.op.run({
      url, n, fx, shared, visibility: cell.visibility, principal: cell.principal,
      token: tokens[cell.principal], adminToken: tokens.admin,
    });
  } catch (e) {
    got = `an error: ${e.message}`;
  }
  const expected = outcome(cell.entry.expected, cell.principal);
  const { deviation } = cell.entry;
  if (deviation && got === outcome(deviation.answer, cell.principal)) {
    seen.push({ note: deviation.note, text: `${cell.name}: ${got} (known deviation ${deviation.note})` });
    return null;
  }
  if (got === expected) return null;
  return `${cell.name}: expected ${expected}, got ${got}`;
}

function runMatrix() {
  const { describe, it, before, after } = require('node:test');
  const assert = require('node:assert/strict');
  const crypto = require('node:crypto');
  const fs = require('node:fs');
  const path = require('node:path');
  const h = require('./harness');

  describe('authorization matrix', () => {
    const cells = cellsOf(parseTable());
    let srv;
    let shared;
    before(async () => {
      srv = await h.startServer({
        env: { TSUNAGI_WEBHOOK_ALLOW_PRIVATE: 'true', TSUNAGI_WEBHOOK_MAX_ATTEMPTS: '1' },
      });
      const retries = cells.filter((c) => c.op.scope === 'job').length;
      shared = await sharedFixtures(srv.url, retries);
    });
    after(async () => { h.closeAll(); if (srv) await srv.destroy(); });

    it('docs/security.md carries this table', () => {
      const doc = fs.readFileSync(path.join(__dirname, '../../docs/security.md'), 'utf8');
      const at = doc.indexOf('## The authorization table');
      assert.ok(at >= 0, 'docs/security.md carries the authorization table under "## The authorization table"');
      const rowsOf = (text) => text.split('\n').filter((l) => l.startsWith('|'));
      const section = doc.slice(at).split(/\n## /)[0];
      assert.deepEqual(rowsOf(section), rowsOf(markdown()),
        'docs/security.md: the authorization table is stale: paste `node tests/node/authz.test.js --markdown`');
    });

    it(`every cell of the table (${cells.length})`, async (t) => {
      const started = Date.now();
      const failures = [];
      const seen = [];
      let n = 0;
      await pool(cells, 8, async (cell) => {
        const failure = await check(srv.url, cell, ++n, shared, seen);
        if (failure) failures.push(failure);
      });
      t.diagnostic(`${cells.length} cells in ${((Date.now() - started) / 1000).toFixed(1)} s`);
      for (const s of seen) t.diagnostic(s.text);
      // a deviation no cell shows any more is fixed: its marks should leave the TABLE
      for (const note of Object.keys(DEVIATIONS)) {
        if (!seen.some((s) => s.note === note)) t.diagnostic(`deviation ${note} is no longer seen: remove it from the TABLE`);
      }
      assert.ok(failures.length === 0,
        `${failures.length} of ${cells.length} cells disagree with the table:\n${failures.sort().join('\n')}`);
    });
  });

  // §3 "Across instances … act as one": a refusal one instance has cached must not outlive the
  // grant made on another.
  describe('authorization across two instances on one Redis', () => {
    let servers;
    before(async () => {
      servers = await h.startCluster(2, {
        env: {
          TSUNAGI_REDIS_URL: process.env.TSUNAGI_TEST_REDIS || 'redis://127.0.0.1:6379',
          TSUNAGI_REDIS_PREFIX: `tsunagi-test-${crypto.randomBytes(8).toString('hex')}`,
        },
      });
    });
    after(async () => { h.closeAll(); if (servers) await servers.destroy(); });

    it('a member added on one instance is admitted on the other, which had refused them', async (t) => {
      const [a, b] = servers.map((s) => s.url);
      const room = `az-cluster-${process.pid}`;
      const owner = h.userToken('az-cl-owner');
      const user = h.userToken('az-cl-user');
      await h.createRoom(a, owner, room, { private: true });
      const socket = await h.connect(b, user);
      h.assertAckError(assert, await h.ack(socket, 'join', { room }), 'forbidden');
      h.assertHttpError(assert, await h.http(b, 'GET', `/api/v1/rooms/${room}/messages`, user), 403, 'forbidden');
      await h.addMember(a, owner, room, 'az-cl-user');
      const granted = Date.now();
      await h.until(async () => (await h.ack(socket, 'join', { room })).ok, 2000, 'the join on the other instance');
      t.diagnostic(`admitted on the other instance ${Date.now() - granted} ms after the grant`);
      assert.equal((await h.http(b, 'GET', `/api/v1/rooms/${room}/messages`, user)).status, 200);
    });
  });
}

if (require.main === module && process.argv.includes('--markdown')) {
  process.stdout.write(`${markdown()}\n`);
} else {
  runMatrix();
}
