// The chat page at /: sign up / log in, rooms, live messages through tsunagi-client.
import { connect } from 'tsunagi-client';
import { clearSession, login, register, saveSession, savedSession } from './chat/auth';
import { $, el } from './chat/dom';
import { fillName, nameOf, remember, setFetcher } from './chat/names';
import { RoomView } from './chat/room-view';
import type { Client, RoomInfo, User } from './chat/types';

const OPEN_ROOM = 'tsunagi.room';

let client: Client | null = null;
let me: User | null = null;
let view: RoomView | null = null;
let rooms: RoomInfo[] = [];

const show = (id: string, on: boolean) => { $(id).hidden = !on; };
const errText = (e: any) => (e && e.message) || String(e);

// ------------------------------------------------------------------ session

function toLogin(message = ''): void {
  if (view) { view.close(); view = null; }
  // forgotten first: its closing 'offline' status must not show the banner
  const c = client;
  client = null;
  if (c) c.close();
  clearSession();
  me = null;
  show('app', false);
  show('banner', false);
  show('auth', true);
  $('auth-error').textContent = message;
  $<HTMLInputElement>('login-name').focus();
}

/** A 401 anywhere means the token is bad or expired: back to the login form. */
function checkAuth(e: any): boolean {
  if (e && (e.status === 401 || ['invalid_token', 'token_expired', 'auth_required'].includes(e.code))) {
    toLogin('Your session has ended. Please log in again.');
    return true;
  }
  return false;
}

function start(token: string, user: User | null): void {
  show('auth', false);
  show('app', true);
  const c = connect({ url: location.origin, token, storage: localStorage }) as unknown as Client;
  client = c;
  setFetcher((path) => c.http('GET', path));
  c.on('status', (status: string, detail?: { code?: string }) => {
    if (client !== c) return;
    if (status === 'auth_failed') {
      toLogin(detail && detail.code === 'token_expired'
        ? 'Your session has expired. Please log in again.'
        : 'Please log in again.');
      return;
    }
    renderStatus();
    // after a reconnect the client re-joins; who is online may have changed meanwhile
    if (status === 'connected' && view) view.refreshPresence();
  });
  renderStatus();
  me = user;
  if (user) remember(user);
  const myId = (user && user.id) || c.userId;
  // the stored user may be stale (display name changed): refresh it quietly
  c.http('GET', `/api/v1/users/${encodeURIComponent(myId)}`).then((u: User) => {
    if (client !== c) return;
    me = u;
    remember(u);
    localStorage.setItem('tsunagi.user', JSON.stringify(u));
    renderMe();
  }, (e) => { checkAuth(e); });
  renderMe();
  void loadRooms().then(() => {
    const last = localStorage.getItem(OPEN_ROOM);
    if (last && client === c) void openRoom(last);
  });
}

function renderMe(): void {
  const box = $('me');
  if (me) box.textContent = nameOf(me);
  else if (client) fillName(box, client.userId);
}

/** The banner shows as soon as the connection drops (or the browser says it is offline). */
function renderStatus(): void {
  if (!client) return;
  const offline = !navigator.onLine || client.status !== 'connected';
  const label = !navigator.onLine ? 'offline' : client.status;
  $('status').textContent = label;
  const banner = $('banner');
  banner.hidden = !offline;
  banner.textContent = client.status === 'connecting' && navigator.onLine
    ? 'Connecting…'
    : 'You are offline. Messages you send will be delivered when the connection is back.';
}

// ------------------------------------------------------------------ rooms

async function loadRooms(): Promise<void> {
  if (!client) return;
  try {
    const res = await client.http('GET', '/api/v1/rooms?limit=500');
    rooms = res.items || [];
    renderRooms();
  } catch (e) {
    if (!checkAuth(e)) $('create-error').textContent = `Could not load rooms: ${errText(e)}`;
  }
}

function renderRooms(): void {
  const list = $('rooms');
  list.replaceChildren(...rooms.map((r) => {
    const li = el('li');
    const b = el('button', 'room', r.private ? `🔒 ${r.name}` : `# ${r.name}`);
    b.type = 'button';
    b.dataset.room = r.id;
    if (view && view.id === r.id) { b.classList.add('active'); b.setAttribute('aria-current', 'true'); }
    b.addEventListener('click', () => void openRoom(r.id));
    li.append(b);
    return li;
  }));
}

async function openRoom(id: string): Promise<void> {
  if (!client) return;
  if (view && view.id === id) return;
  if (view) view.close();
  const info = rooms.find((r) => r.id === id);
  $('title').textContent = `#${info ? info.name : id}`;
  // the owner of a private room may add members
  show('member-form', !!(info && info.private && me && info.owner_id === me.id));
  $('member-note').textContent = '';
  const v = new RoomView(id, client.room(id), (me && me.id) || client.userId, showSendError);
  view = v;
  localStorage.setItem(OPEN_ROOM, id);
  renderRooms();
  const text = $<HTMLInputElement>('text');
  text.disabled = false;
  $<HTMLButtonElement>('sendbtn').disabled = false;
  try {
    await v.open();
  } catch (e: any) {
    if (checkAuth(e) || view !== v) return;
    if (e && (e.code === 'not_found' || e.code === 'forbidden')) {
      // a room that is gone or closed to us is not reopened on the next reload
      localStorage.removeItem(OPEN_ROOM);
      v.close();
      view = null;
      $('title').textContent = e.code === 'forbidden' ? 'That room is private' : 'No such room';
      text.disabled = true;
      $<HTMLButtonElement>('sendbtn').disabled = true;
      renderRooms();
    }
    // otherwise (offline) the client joins when the connection is back
  }
}

function showSendError(e: any): void {
  if (checkAuth(e)) return;
  $('typing').textContent = `Not sent: ${errText(e)}`;
}

// ------------------------------------------------------------------ forms

function wire(): void {
  $('login-form').addEventListener('submit', async (ev) => {
    ev.preventDefault();
    $('auth-error').textContent = '';
    try {
      const r = await login($<HTMLInputElement>('login-name').value.trim(), $<HTMLInputElement>('login-password').value);
      saveSession(r.token, r.user);
      $<HTMLInputElement>('login-password').value = '';
      start(r.token, r.user);
    } catch (e) {
      $('auth-error').textContent = errText(e);
    }
  });

  $('register-form').addEventListener('submit', async (ev) => {
    ev.preventDefault();
    $('auth-error').textContent = '';
    const display = $<HTMLInputElement>('reg-display').value.trim();
    try {
      const r = await register({
        username: $<HTMLInputElement>('reg-username').value.trim(),
        email: $<HTMLInputElement>('reg-email').value.trim(),
        password: $<HTMLInputElement>('reg-password').value,
        ...(display ? { display_name: display } : {}),
      });
      saveSession(r.token, r.user);
      $<HTMLInputElement>('reg-password').value = '';
      start(r.token, r.user);
    } catch (e) {
      $('auth-error').textContent = errText(e);
    }
  });

  $('logout').addEventListener('click', () => {
    localStorage.removeItem(OPEN_ROOM);
    toLogin();
  });

  $('create-form').addEventListener('submit', async (ev) => {
    ev.preventDefault();
    if (!client) return;
    const input = $<HTMLInputElement>('newroom');
    const id = input.value.trim().toLowerCase();
    const priv = $<HTMLInputElement>('newroom-private').checked;
    $('create-error').textContent = '';
    try {
      const info: RoomInfo = await client.http('POST', '/api/v1/rooms', { id, private: priv });
      input.value = '';
      rooms = [...rooms.filter((r) => r.id !== info.id), info].sort((a, b) => (a.id < b.id ? -1 : 1));
      renderRooms();
      await openRoom(info.id);
      $<HTMLInputElement>('text').focus();
    } catch (e: any) {
      if (checkAuth(e)) return;
      $('create-error').textContent = e && e.status === 409 ? `Room "${id}" already exists` : errText(e);
    }
  });

  $('member-form').addEventListener('submit', async (ev) => {
    ev.preventDefault();
    if (!client || !view) return;
    const input = $<HTMLInputElement>('member');
    const note = $('member-note');
    const who = input.value.trim();
    if (!who) return;
    note.textContent = 'Adding…';
    try {
      const userId = await resolveUser(client, who);
      await client.http('POST', `/api/v1/rooms/${encodeURIComponent(view.id)}/members`, { user_id: userId });
      input.value = '';
      note.textContent = `Added ${who}`;
    } catch (e) {
      if (!checkAuth(e)) note.textContent = errText(e);
    }
  });

  $('composer').addEventListener('submit', (ev) => {
    ev.preventDefault();
    const input = $<HTMLInputElement>('text');
    const text = input.value;
    if (!view || !text.trim()) return;
    input.value = '';
    $('typing').textContent = '';
    view.send(text);
  });
  $('text').addEventListener('input', () => {
    if (view && $<HTMLInputElement>('text').value) view.typed();
  });

  // the browser knows it is offline before any socket timeout does
  window.addEventListener('offline', renderStatus);
  window.addEventListener('online', renderStatus);
}

/**
 * A username typed by the owner → its user id. PROTOCOL has no lookup by username, so the user
 * list is paged through; anything not found is taken as a user id (members may come from
 * another backend's tokens).
 */
async function resolveUser(c: Client, who: string): Promise<string> {
  let cursor: string | null = null;
  for (let page = 0; page < 20; page++) {
    const q = `/api/v1/users?limit=200${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ''}`;
    const res: { items: User[]; next_cursor: string | null } = await c.http('GET', q);
    const hit = res.items.find((u) => u.username.toLowerCase() === who.toLowerCase() || u.id === who);
    if (hit) return hit.id;
    if (!res.next_cursor) break;
    cursor = res.next_cursor;
  }
  return who;
}

wire();
// the new-room form starts open where there is room for it (folded on a phone)
if (window.matchMedia('(min-width: 701px)').matches) $<HTMLDetailsElement>('create').open = true;
const saved = savedSession();
if (saved) start(saved.token, saved.user);
else toLogin();
