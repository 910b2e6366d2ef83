'use strict';
// What the soak saw: every answer (ack codes, HTTP statuses), the latency of each, the windows
// in which faults were active, and every violation with an example.

// The answers a well-formed load may get under faults (PROTOCOL.md §3, §4, §6): anything else,
// even another of the contract's codes, means the server misjudged a valid request.
const EXPECTED_ACK_CODES = new Set(['unavailable', 'rate_limited', 'conflict']);
const EXPECTED_HTTP_STATUSES = new Set([200, 201, 202, 204, 429, 503]);
const HTTP_ERROR_CODE = { 429: 'rate_limited', 503: 'unavailable' };

class Recorder {
  constructor() {
    this.t0 = Date.now();
    this.answers = new Map(); // "ack send unavailable" / "http GET /rooms/:id/messages 200" -> count
    this.violations = new Map(); // category -> { count, examples }
    this.faultLog = []; // { name, from, to }
    this.active = new Set();
    this.downWindows = new Map(); // instance index -> [{ from, to }]
    this.maxLatency = { ack: 0, http: 0 };
    this.faultAnswers = new Map(); // fault name -> Map(answer -> count)
    this.noAnswer = { expected: 0 };
  }

  now() { return Date.now() - this.t0; }

  fail(category, example) {
    let v = this.violations.get(category);
    if (!v) { v = { count: 0, examples: [] }; this.violations.set(category, v); }
    v.count++;
    if (v.examples.length < 5) v.examples.push(`${(this.now() / 1000).toFixed(1)}s ${example}`);
  }

  count(key) {
    this.answers.set(key, (this.answers.get(key) || 0) + 1);
    for (const f of this.active) {
      if (!this.faultAnswers.has(f)) this.faultAnswers.set(f, new Map());
      const m = this.faultAnswers.get(f);
      m.set(key, (m.get(key) || 0) + 1);
    }
  }

  /** An ack: `{ ok: true }` or an error whose code must be expected for `event`. */
  ack(event, res, latencyMs, detail = '') {
    this.maxLatency.ack = Math.max(this.maxLatency.ack, latencyMs);
    if (!res || typeof res !== 'object' || typeof res.ok !== 'boolean') {
      this.count(`ack ${event} malformed`);
      this.fail('malformed ack', `${event} ${JSON.stringify(res)} ${detail}`);
      return;
    }
    if (res.ok) { this.count(`ack ${event} ok`); return; }
    const code = res.error && res.error.code;
    this.count(`ack ${event} ${code}`);
    const expected = EXPECTED_ACK_CODES.has(code) && (code !== 'conflict' || event === 'state_set');
    if (!expected) this.fail('unexpected ack code', `${event} ${JSON.stringify(res)} ${detail}`);
    else if (code === 'rate_limited' && !Number.isInteger(res.error.retry_after_ms)) {
      this.fail('rate_limited without retry_after_ms', `${event} ${JSON.stringify(res)}`);
    }
  }

  /** An HTTP answer { status, body, headers } for `route` (a path template). */
  http(method, route, r, latencyMs) {
    this.maxLatency.http = Math.max(this.maxLatency.http, latencyMs);
    this.count(`http ${method} ${route} ${r.status}`);
    if (!EXPECTED_HTTP_STATUSES.has(r.status)) {
      this.fail('unexpected HTTP status', `${method} ${route} ${r.status} ${r.text.slice(0, 200)}`);
      return;
    }
    const code = HTTP_ERROR_CODE[r.status];
    if (code && !(r.body && r.body.error && r.body.error.code === code)) {
      this.fail('HTTP error body', `${method} ${route} ${r.status} ${r.text.slice(0, 200)}`);
    }
    if (r.status === 429 && !r.headers.get('retry-after')) this.fail('429 without Retry-After', `${method} ${route}`);
  }

  /** Whether instance `i` was down (killed, not yet answering) at any time in [from, to] (+ slack). */
  wasDown(i, from, to, slackMs = 2000) {
    return (this.downWindows.get(i) || []).some((w) => from <= (w.to ?? Infinity) + slackMs && to >= w.from - slackMs);
  }

  /** A request that got no answer (connection refused or reset, timeout). */
  noAnswerFrom(i, from, what, err) {
    const to = this.now();
    if (this.wasDown(i, from, to)) { this.noAnswer.expected++; return; }
    this.fail('no answer from a running instance', `instance ${i + 1}: ${what}: ${err && err.message}`);
  }

  async fault(name, fn) {
    const entry = { name, from: this.now(), to: null };
    this.faultLog.push(entry);
    this.active.add(name);
    try { await fn(); } finally { this.active.delete(name); entry.to = this.now(); }
  }
}

module.exports = { Recorder, EXPECTED_ACK_CODES, EXPECTED_HTTP_STATUSES };
