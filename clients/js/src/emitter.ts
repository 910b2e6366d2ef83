// A tiny typed event emitter: works in browsers and Node without a dependency.
export type Listener = (...args: any[]) => void;

export class Emitter {
  private listeners = new Map<string, Set<Listener>>();

  on(event: string, fn: Listener): this {
    let set = this.listeners.get(event);
    if (!set) this.listeners.set(event, (set = new Set()));
    set.add(fn);
    return this;
  }

  off(event: string, fn?: Listener): this {
    if (!fn) this.listeners.delete(event);
    else this.listeners.get(event)?.delete(fn);
    return this;
  }

  protected emit(event: string, ...args: unknown[]): void {
    for (const fn of [...(this.listeners.get(event) ?? [])]) {
      // One faulty listener must not break delivery to the others (or our own bookkeeping).
      try { fn(...args); } catch (e) { setTimeout(() => { throw e; }); }
    }
  }
}
