// The chat page: rooms, history, live messages, typing and presence over tsunagi's Socket.IO API.
// It speaks the Socket.IO v4 protocol over a WebSocket itself, so the binary serves it with nothing to build.
"use strict";

/** A minimal Socket.IO v4 client (WebSocket transport, default namespace, acks). */
class Sio {
  constructor(token, handlers) {
    this.token = token; this.handlers = handlers; this.acks = new Map(); this.nextAck = 0; this.retry = 500;
    this.open();
  }
  open() {
    const proto = location.protocol === "https:" ? "wss" : "ws";
    this.ws = new WebSocket(`${proto}://${location.host}/socket.io/?EIO=4&transport=websocket`);
    this.ws.onmessage = (e) => this.onFrame(e.data);
    this.ws.onclose = () => {
      this.connected = false;
      for (const cb of this.acks.values()) cb({ ok: false, error: { code: "unavailable", message: "disconnected" } });
      this.acks.clear();
      this.handlers.status("reconnecting…");
      if (!this.stopped) setTimeout(() => this.open(), this.retry = Math.min(this.retry * 2, 10000));
    };
  }
  onFrame(data) {
    if (data[0] === "0") return this.ws.send("40" + JSON.stringify({ token: this.token }));
    if (data === "2") return this.ws.send("3");
    if (data[0] !== "4") return;
    const type = data[1], rest = data.slice(2);
    if (type === "0") { this.connected = true; this.retry = 500; this.handlers.connect(); }
    else if (type === "4") { this.stopped = true; this.handlers.refused(JSON.parse(rest)); this.ws.close(); }
    else if (type === "2") { const [name, arg] = JSON.parse(rest); this.handlers.event(name, arg); }
    else if (type === "3") {
      const id = Number(rest.match(/^\d+/)[0]);
      const cb = this.acks.get(id);
      this.acks.delete(id);
      if (cb) cb(JSON.parse(rest.slice(String(id).length))[0]);
    }
  }
  call(event, payload) {
    return new Promise((resolve) => {
      if (!this.connected) return resolve({ ok: false, error: { code: "unavailable", message: "not connected" } });
      const id = this.nextAck++;
      this.acks.set(id, resolve);
      this.ws.send("42" + id + JSON.stringify([event, payload]));
    });
  }
  close() { this.stopped = true; this.ws.close(); }
}

const $ = (id) => document.getElementById(id);
const state = { sio: null, room: null, epoch: null, lastSeq: 0, seen: new Set(), typing: new Map(), online: new Set() };

async function api(method, path, body) {
  const res = await fetch(path, {
    method, body: body && JSON.stringify(body),
    headers: { "content-type": "application/json", authorization: "Bearer " + localStorage.token },
  });
  return { status: res.status, body: res.status === 204 ? null : await res.json() };
}

/** Adds a message in seq order, once (live delivery, history and sync overlap). */
function show(m) {
  if (state.seen.has(m.seq)) return;
  state.seen.add(m.seq);
  const div = document.createElement("div");
  div.className = "msg";
  div.dataset.seq = m.seq;
  const time = document.createElement("small");
  time.textContent = new Date(m.created_at).toLocaleTimeString();
  const who = document.createElement("b");
  who.textContent = m.user_id;
  div.append(time, who, document.createTextNode(m.content));
  const later = [...$("log").querySelectorAll(".msg")].find((d) => Number(d.dataset.seq) > m.seq);
  $("log").insertBefore(div, later || null);
  while (state.seen.has(state.lastSeq + 1)) state.lastSeq++;
  if (!later) $("log").scrollTop = $("log").scrollHeight;
}

function note(text, cls) {
  const div = document.createElement("div");
  div.className = cls || "";
  div.textContent = text;
  $("log").append(div);
}

function renderOnline() {
  $("online").textContent = "";
  for (const u of [...state.online].sort()) { const d = document.createElement("div"); d.textContent = u; $("online").append(d); }
}

async function loadRooms() {
  const r = await api("GET", "/api/v1/rooms?limit=500");
  if (r.status !== 200) return note(r.body.error.message, "err");
  $("rooms").textContent = "";
  for (const room of r.body.items) {
    const d = document.createElement("div");
    d.className = "room" + (room.id === state.room ? " active" : "");
    d.textContent = (room.private ? "🔒 " : "# ") + room.name;
    d.onclick = () => join(room.id);
    $("rooms").append(d);
  }
}

async function join(room) {
  if (state.room && state.room !== room) await state.sio.call("leave", { room: state.room });
  const ack = await state.sio.call("join", { room });
  if (!ack.ok) return note(ack.error.message, "err");
  Object.assign(state, { room, epoch: ack.epoch, lastSeq: 0, seen: new Set() });
  $("title").textContent = "#" + room;
  $("log").textContent = "";
  if (ack.history.length) state.lastSeq = ack.history[0].seq - 1;
  ack.history.forEach(show);
  $("text").disabled = $("sendbtn").disabled = false;
  const p = await state.sio.call("presence", { room });
  state.online = new Set(p.ok ? p.users.map((u) => u.user_id) : []);
  renderOnline();
  loadRooms();
}

/** After a reconnect: re-join (live delivery resumes after its last_seq), then fetch the messages
 *  missed in between with sync; a changed epoch means the history was reset: start over. */
async function recover() {
  if (!state.room) return;
  const room = state.room;
  const ack = await state.sio.call("join", { room });
  if (!ack.ok) return note(ack.error.message, "err");
  if (ack.epoch !== state.epoch) { state.room = null; return join(room); }
  ack.history.forEach(show);
  while (state.lastSeq < ack.last_seq) {
    const r = await state.sio.call("sync", { room, since_seq: state.lastSeq, epoch: state.epoch, limit: 500 });
    if (!r.ok) return r.error.code === "reset" ? join(room) : note(r.error.message, "err");
    r.messages.forEach(show);
    if (!r.messages.length) break;
  }
}

function start(token) {
  if (state.sio) state.sio.close();
  localStorage.token = token;
  state.sio = new Sio(token, {
    status: (s) => ($("status").textContent = s),
    refused: (e) => { $("status").textContent = "refused: " + ((e.data && e.data.code) || e.message); },
    connect: () => { $("status").textContent = "connected"; loadRooms(); recover(); },
    event: (name, arg) => {
      if (name === "message" && arg.room === state.room) show(arg);
      if (name === "typing" && arg.room === state.room) {
        clearTimeout(state.typing.get(arg.user_id));
        state.typing.set(arg.user_id, setTimeout(() => { state.typing.delete(arg.user_id); renderTyping(); }, 3000));
        renderTyping();
      }
      if (name === "presence" && arg.room === state.room) {
        arg.status === "online" ? state.online.add(arg.user_id) : state.online.delete(arg.user_id);
        renderOnline();
      }
    },
  });
}

function renderTyping() {
  const who = [...state.typing.keys()];
  $("typing").textContent = who.length ? who.join(", ") + " typing…" : "";
}

$("login").onsubmit = (e) => { e.preventDefault(); start($("token").value.trim()); };
$("create").onsubmit = async (e) => {
  e.preventDefault();
  const id = $("newroom").value.trim();
  const r = await api("POST", "/api/v1/rooms", { id });
  if (r.status !== 201) return note(r.body.error.message, "err");
  $("newroom").value = "";
  join(id);
};
let lastTyping = 0;
$("text").oninput = () => {
  if (state.room && Date.now() - lastTyping > 2000) { lastTyping = Date.now(); state.sio.call("typing", { room: state.room }); }
};
$("send").onsubmit = async (e) => {
  e.preventDefault();
  const content = $("text").value;
  if (!content || !state.room) return;
  $("text").value = "";
  const client_id = crypto.randomUUID ? crypto.randomUUID() : String(Math.random()).slice(2);
  for (let attempt = 0; attempt < 5; attempt++) {
    const ack = await state.sio.call("send", { room: state.room, content, client_id });
    if (ack.ok) return; // the message itself arrives as a `message` event, in seq order
    if (ack.error.code !== "unavailable" && ack.error.code !== "rate_limited") return note(ack.error.message, "err");
    await new Promise((r) => setTimeout(r, ack.error.retry_after_ms || 1000));
  }
  note("could not send: try again", "err");
};
if (localStorage.token) { $("token").value = localStorage.token; start(localStorage.token); }
