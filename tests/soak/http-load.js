'use strict';
// The soak's HTTP load: messages posted with client_id retries, sensor readings (§6.1) in
// batches (some durable), and reads (message pages, users, rooms, readings, state) spread over
// both instances. Every answer goes to the recorder.

const crypto = require('node:crypto');
const { http, sleep } = require('../node/harness');

const jitter = (ms) => ms * (0.5 + Math.random());
const pick = (a) => a[Math.floor(Math.random() * a.length)];

/** One request to instance `i` → the answer, or null when none came (recorded either way). */
async function call(world, i, method, urlPath, token, body, route) {
  const started = world.rec.now();
  try {
    const r = await http(world.servers[i].url, method, urlPath, token, body);
    world.rec.http(method, route, r, world.rec.now() - started);
    return r;
  } catch (err) {
    world.rec.count(`http ${method} ${route} no answer`);
    world.rec.noAnswerFrom(i, started, `${method} ${route}`, err);
    return null;
  }
}

const retryDelay = (r) => (r && r.body && r.body.error && r.body.error.retry_after_ms) || jitter(300);

/** Posts one message every second or so, each retried with its client_id (on the other instance after no answer). */
async function httpSender(world, k, rooms) {
  const token = world.tokens.user(`soak-h${k}`);
  let n = 0;
  let instance = k % 2;
  while (!world.stopLoad) {
    await sleep(jitter(1000));
    if (world.stopLoad) break;
    const room = pick(rooms);
    const clientId = `h${k}-${++n}`;
    const content = `soak ${clientId} ${crypto.randomBytes(6).toString('hex')}`;
    const record = { clientId, room, content, userId: `soak-h${k}`, acked: null, attempts: 0, via: 'http' };
    world.sends.push(record);
    while (!record.acked && Date.now() < world.drainUntil) {
      record.attempts++;
      instance = 1 - instance;
      const r = await call(world, instance, 'POST', `/api/v1/rooms/${room}/messages`, token,
        { content, client_id: clientId }, '/rooms/:id/messages');
      if (r && (r.status === 201 || r.status === 200)) {
        if (r.body.client_id !== clientId || r.body.content !== content) {
          world.rec.fail('POST messages answer is not the message sent', `${clientId}: ${r.text.slice(0, 200)}`);
        }
        if (r.status === 200 && record.attempts === 1) world.rec.fail('200 for a first send', clientId);
        record.acked = r.body;
      } else await sleep(retryDelay(r));
    }
  }
}

/**
 * Writes batches of 10 readings with unique, increasing `ts` twice a second; every fourth batch
 * `?durable=true`. A refused or unanswered batch is sent again as it was (idempotent by ts).
 */
async function sensorWriter(world, sensor) {
  let instance = 0;
  let batches = 0;
  while (!world.stopLoad) {
    await sleep(jitter(500));
    if (world.stopLoad) break;
    const durable = ++batches % 4 === 0;
    const readings = [];
    for (let j = 0; j < 10; j++) {
      const ts = sensor.base + sensor.written++;
      readings.push({ ts, value: Math.round(Math.random() * 1e6) / 100, tags: { batch: String(batches) } });
    }
    const query = durable ? '?durable=true' : '';
    for (;;) {
      instance = 1 - instance;
      const r = await call(world, instance, 'POST', `/api/v1/sensors/${sensor.id}/readings${query}`,
        sensor.token, { readings }, `/sensors/:id/readings${query}`);
      if (r && (r.status === 201 || r.status === 202)) {
        if (r.body.accepted !== readings.length || r.body.durable !== durable) {
          world.rec.fail('readings answer', `${sensor.id}: ${r.text}`);
        }
        const at = world.rec.now();
        for (const x of readings) sensor.accepted.set(x.ts, { value: x.value, instance, at, durable });
        break;
      }
      if (Date.now() > world.drainUntil) break;
      await sleep(retryDelay(r));
    }
  }
}

/** Reads on both instances, checking what the pages must be (ascending, gap-free seq). */
async function httpReader(world, k, { rooms, sensors, userIds }) {
  const token = k === 0 ? world.tokens.admin('soak-reader-admin') : world.tokens.user(`soak-reader${k}`);
  const readable = k === 0 ? rooms : rooms.filter((r) => !r.private);
  let instance = k % 2;
  while (!world.stopLoad) {
    await sleep(jitter(300));
    instance = 1 - instance;
    const room = pick(readable).id;
    const dice = Math.floor(Math.random() * 7);
    if (dice <= 1) {
      const after = dice === 0 ? Math.floor(Math.random() * (world.lastSeqSeen.get(room) || 0)) : null;
      const q = after === null ? '?limit=50' : `?after_seq=${after}&limit=50`;
      const r = await call(world, instance, 'GET', `/api/v1/rooms/${room}/messages${q}`, token, undefined,
        `/rooms/:id/messages${after === null ? '' : '?after_seq'}`);
      if (r && r.status === 200) checkPage(world, room, r.body.items, after);
    } else if (dice === 2) {
      await call(world, instance, 'GET', '/api/v1/users?limit=20', token, undefined, '/users');
    } else if (dice === 3) {
      await call(world, instance, 'GET', `/api/v1/users/${pick(userIds)}`, token, undefined, '/users/:id');
    } else if (dice === 4) {
      await call(world, instance, 'GET', '/api/v1/rooms?limit=50', token, undefined, '/rooms');
    } else if (dice === 5) {
      const s = pick(sensors);
      await call(world, instance, 'GET', `/api/v1/sensors/${s.id}/readings?from=${s.base}&to=${s.base + s.written + 1}&limit=100`,
        token, undefined, '/sensors/:id/readings');
    } else {
      await call(world, instance, 'GET', `/api/v1/rooms/${room}/state`, token, undefined, '/rooms/:id/state');
    }
  }
}

function checkPage(world, room, items, after) {
  for (let j = 0; j < items.length; j++) {
    const expected = j === 0 ? (after === null ? items[0].seq : after + 1) : items[j - 1].seq + 1;
    if (items[j].seq !== expected) {
      world.rec.fail('gap in a GET messages page', `${room} after_seq=${after}: seq ${items[j].seq}, expected ${expected}`);
      return;
    }
  }
  if (items.length) {
    const last = items[items.length - 1].seq;
    if (last > (world.lastSeqSeen.get(room) || 0)) world.lastSeqSeen.set(room, last);
  }
}

module.exports = { call, httpSender, sensorWriter, httpReader };
