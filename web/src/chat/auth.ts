// Sign up / log in over plain fetch (no socket yet), and the token kept in localStorage.
import type { User } from './types';

const TOKEN = 'tsunagi.token';
const USER = 'tsunagi.user';

export function savedSession(): { token: string; user: User | null } | null {
  const token = localStorage.getItem(TOKEN);
  if (!token) return null;
  let user: User | null = null;
  try { user = JSON.parse(localStorage.getItem(USER) || 'null'); } catch { /* ignore */ }
  return { token, user };
}

export function saveSession(token: string, user: User): void {
  localStorage.setItem(TOKEN, token);
  localStorage.setItem(USER, JSON.stringify(user));
}

export function clearSession(): void {
  localStorage.removeItem(TOKEN);
  localStorage.removeItem(USER);
}

async function post(path: string, body: unknown): Promise<{ user: User; token: string }> {
  const res = await fetch(path, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify(body),
  });
  let data: any = null;
  try { data = await res.json(); } catch { /* not JSON */ }
  if (!res.ok) {
    const msg = data && data.error && data.error.message;
    throw new Error(msg || `request failed (${res.status})`);
  }
  return data;
}

export const login = (loginName: string, password: string) =>
  post('/api/v1/auth/login', { login: loginName, password });

export const register = (f: { username: string; email: string; password: string; display_name?: string }) =>
  post('/api/v1/auth/register', f);
