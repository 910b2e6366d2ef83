// Display names of user ids, fetched once each through GET /api/v1/users/{id} and cached.
import type { User } from './types';

type Get = (path: string) => Promise<User>;

const cache = new Map<string, Promise<string>>();
let getUser: Get | null = null;

export function setFetcher(fn: Get): void {
  getUser = fn;
  cache.clear();
}

export const nameOf = (u: User): string => u.display_name || u.username || u.id;

/** Remembers a user already at hand (oneself, after login), so it is never fetched. */
export function remember(u: User): void {
  cache.set(u.id, Promise.resolve(nameOf(u)));
}

export function name(id: string): Promise<string> {
  let p = cache.get(id);
  if (!p) {
    const fetcher = getUser;
    p = fetcher
      ? fetcher(`/api/v1/users/${encodeURIComponent(id)}`).then(nameOf, (e: any) => {
        // a user minted by another backend has no account here: its id is all there is
        if (e && e.status === 404) return id;
        cache.delete(id); // transient failure: try again next time
        return id;
      })
      : Promise.resolve(id);
    cache.set(id, p);
  }
  return p;
}

/** Fills `node` with the user's name (a placeholder until it is known). */
export function fillName(node: HTMLElement, id: string): void {
  node.textContent = '…';
  node.dataset.user = id;
  name(id).then((n) => {
    if (node.dataset.user === id) node.textContent = n;
  });
}
