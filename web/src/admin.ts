// The operations dashboard at /admin: an admin logs in, then the page polls
// GET /api/v1/admin/dashboard (the server samples every 2 s and keeps five minutes) and draws the
// charts with uPlot. Everything comes from this origin; the token stays in this page's own
// localStorage key, apart from the chat page's.
import uPlot from 'uplot';
import 'uplot/dist/uPlot.min.css';
import './admin/style.css';

const TOKEN_KEY = 'tsunagi.admin.token';
const POLL_MS = 2000;

interface Pool { in_use: number; idle: number; waiting: number }
interface Sample {
  t: number;
  sockets: number;
  messages_in_per_s: number;
  messages_out_per_s: number;
  commit_p50_ms: number | null;
  commit_p99_ms: number | null;
  pools: Record<string, Pool>;
  cache_hit_ratio: Record<string, number | null>;
  bus_connected: boolean;
  slow_consumer_disconnects_per_s: number;
  slow_consumer_disconnects_total: number;
  rate_limited_per_s: number;
}
interface Dashboard {
  interval_ms: number;
  window_s: number;
  backplane: { bus?: string; redis_configured?: boolean } | null;
  samples: Sample[];
}

const $ = <T extends HTMLElement>(id: string) => document.getElementById(id) as T;

class HttpError extends Error {
  constructor(public status: number, public code: string, message: string) { super(message); }
}

async function api<T>(path: string, init: RequestInit = {}, token?: string | null): Promise<T> {
  const headers: Record<string, string> = { 'content-type': 'application/json' };
  if (token) headers.authorization = `Bearer ${token}`;
  const res = await fetch(path, { ...init, headers });
  const body = await res.json().catch(() => ({}));
  if (!res.ok) {
    const e = body?.error ?? {};
    throw new HttpError(res.status, e.code ?? 'error', e.message ?? res.statusText);
  }
  return body as T;
}

// ---- login ----------------------------------------------------------------------------------

function showLogin(message = '') {
  $('dash-view').hidden = true;
  $('login-view').hidden = false;
  $('login-error').textContent = message;
  stopPolling();
}

async function onLogin(ev: Event) {
  ev.preventDefault();
  const login = ($('login-name') as HTMLInputElement).value.trim();
  const password = ($('login-password') as HTMLInputElement).value;
  const btn = $('login-btn') as HTMLButtonElement;
  btn.disabled = true;
  $('login-error').textContent = '';
  try {
    const r = await api<{ user: { role: string; username: string }; token: string }>(
      '/api/v1/auth/login', { method: 'POST', body: JSON.stringify({ login, password }) });
    if (r.user.role !== 'admin') {
      $('login-error').textContent = 'admins only: this account is not an admin';
      return;
    }
    localStorage.setItem(TOKEN_KEY, r.token);
    localStorage.setItem(TOKEN_KEY + '.name', r.user.username);
    ($('login-password') as HTMLInputElement).value = '';
    startDashboard();
  } catch (e) {
    $('login-error').textContent = e instanceof HttpError && e.status === 401
      ? 'unknown login or wrong password'
      : `login failed: ${(e as Error).message}`;
  } finally {
    btn.disabled = false;
  }
}

function logout() {
  localStorage.removeItem(TOKEN_KEY);
  localStorage.removeItem(TOKEN_KEY + '.name');
  showLogin();
}

// ---- charts ---------------------------------------------------------------------------------

const COLORS = ['#2f6fdb', '#e07b00', '#137a3a', '#b3261e', '#7b3fbf', '#00838f', '#8d6e00', '#c2185b', '#546e7a'];

interface Chart { plot: uPlot; keys: string }
const charts = new Map<string, Chart>();
let windowS = 300;

function chartWidth(el: HTMLElement) { return Math.max(280, el.clientWidth); }

/** Draws `data` in the chart at `id`, (re)building it when its series change. */
function draw(id: string, labels: string[], data: uPlot.AlignedData, opts: { max?: number } = {}) {
  const el = $(id);
  const keys = labels.join('|');
  let c = charts.get(id);
  if (!c || c.keys !== keys) {
    c?.plot.destroy();
    const plot = new uPlot({
      width: chartWidth(el),
      height: 190,
      legend: { live: true },
      cursor: { drag: { x: false, y: false } },
      // the x axis spans the history held (at least a minute, at most the server's window)
      scales: { x: { time: true, range: (_u, min, max) => [Math.max(max - windowS, Math.min(min, max - 60)), max] }, y: opts.max != null ? { range: [0, opts.max] } : { range: (_u, _min, max) => [0, Math.max(1, max * 1.15)] } },
      axes: [{}, { size: 50, values: (_u, vals) => vals.map((v) => fmt(v)) }],
      series: [{}, ...labels.map((label, i) => ({ label, stroke: COLORS[i % COLORS.length], width: 1.6, spanGaps: false }))],
    }, data, el);
    c = { plot, keys };
    charts.set(id, c);
  } else {
    c.plot.setData(data);
  }
}

function fmt(v: number | null | undefined): string {
  if (v == null || Number.isNaN(v)) return '–';
  if (v === 0) return '0';
  const a = Math.abs(v);
  if (a >= 100) return v.toFixed(0);
  if (a >= 10) return v.toFixed(1);
  return v.toFixed(2).replace(/\.?0+$/, '');
}

function render(d: Dashboard) {
  const s = d.samples;
  windowS = d.window_s || windowS;
  const x = s.map((p) => p.t / 1000);
  const last = s[s.length - 1];

  draw('chart-sockets', ['sockets'], [x, s.map((p) => p.sockets)]);
  draw('chart-messages', ['in/s', 'out/s'], [x, s.map((p) => p.messages_in_per_s), s.map((p) => p.messages_out_per_s)]);
  draw('chart-latency', ['p50', 'p99'], [x, s.map((p) => p.commit_p50_ms), s.map((p) => p.commit_p99_ms)]);

  const pools = [...new Set(s.flatMap((p) => Object.keys(p.pools)))].sort();
  const poolSeries: string[] = []; const poolData: (number | null)[][] = [];
  for (const pool of pools) {
    for (const k of ['in_use', 'idle', 'waiting'] as const) {
      poolSeries.push(`${pool} ${k.replace('_', ' ')}`);
      poolData.push(s.map((p) => p.pools[pool]?.[k] ?? null));
    }
  }
  draw('chart-pools', poolSeries, [x, ...poolData]);

  const caches = [...new Set(s.flatMap((p) => Object.keys(p.cache_hit_ratio)))].sort();
  draw('chart-caches', caches, [x, ...caches.map((k) => s.map((p) => {
    const r = p.cache_hit_ratio[k];
    return r == null ? null : r * 100;
  }))], { max: 100 });

  draw('chart-refusals', ['slow-consumer disconnects/s', 'rate-limited/s'],
    [x, s.map((p) => p.slow_consumer_disconnects_per_s), s.map((p) => p.rate_limited_per_s)]);

  if (last) {
    $('cur-sockets').textContent = fmt(last.sockets);
    $('cur-in').textContent = fmt(last.messages_in_per_s);
    $('cur-out').textContent = fmt(last.messages_out_per_s);
    $('cur-p50').textContent = last.commit_p50_ms == null ? '–' : `${fmt(last.commit_p50_ms)} ms`;
    $('cur-p99').textContent = last.commit_p99_ms == null ? '–' : `${fmt(last.commit_p99_ms)} ms`;
    $('cur-slow').textContent = `${fmt(last.slow_consumer_disconnects_total)} total`;
    $('cur-rl').textContent = fmt(last.rate_limited_per_s);
    $('updated').textContent = `updated ${new Date(last.t).toLocaleTimeString()} · ${s.length} samples`;
  }
  const bp = d.backplane ?? {};
  const bus = $('bus-state');
  const up = last ? last.bus_connected : false;
  bus.textContent = `bus (${bp.bus ?? '?'}): ${up ? 'connected' : 'disconnected'}`;
  bus.className = `badge ${up ? 'ok' : 'bad'}`;
  const redis = $('redis-state');
  redis.textContent = bp.redis_configured ? 'redis: configured' : 'redis: not configured (one instance)';
  redis.className = `badge ${bp.redis_configured ? (up ? 'ok' : 'bad') : ''}`;
}

// ---- polling --------------------------------------------------------------------------------

let timer: number | undefined;

function stopPolling() {
  if (timer !== undefined) clearTimeout(timer);
  timer = undefined;
}

async function poll() {
  const token = localStorage.getItem(TOKEN_KEY);
  if (!token) return showLogin();
  try {
    render(await api<Dashboard>('/api/v1/admin/dashboard', {}, token));
    $('dash-error').textContent = '';
  } catch (e) {
    if (e instanceof HttpError && e.status === 401) {
      localStorage.removeItem(TOKEN_KEY);
      return showLogin('your session ended: log in again');
    }
    if (e instanceof HttpError && e.status === 403) {
      localStorage.removeItem(TOKEN_KEY);
      return showLogin('admins only');
    }
    $('dash-error').textContent = `no figures: ${(e as Error).message} (retrying)`;
  }
  timer = window.setTimeout(poll, POLL_MS);
}

function startDashboard() {
  $('login-view').hidden = true;
  $('dash-view').hidden = false;
  $('who').textContent = localStorage.getItem(TOKEN_KEY + '.name') ?? '';
  stopPolling();
  void poll();
}

function init() {
  $('login-form').addEventListener('submit', onLogin);
  $('logout-btn').addEventListener('click', logout);
  // charts follow the window's width
  new ResizeObserver(() => {
    for (const [id, c] of charts) c.plot.setSize({ width: chartWidth($(id)), height: 190 });
  }).observe($('dash-view'));
  if (localStorage.getItem(TOKEN_KEY)) startDashboard(); else showLogin();
}

init();
