/*
 * memory.js: the transport that worked, remembered per server across page loads so the next
 * load starts on it instead of paying the deadlines again (docs/client.md "Remembering").
 * Every storage error means "remember nothing".
 */

/** localStorage when it works, else an in-memory map. */
export function defaultStorage() {
  try {
    const s = globalThis.localStorage;
    if (s) {
      const k = '__pushedge_probe__';
      s.setItem(k, '1');
      s.removeItem(k);
      return s;
    }
  } catch (e) {
    /* storage disabled (privacy mode, sandboxed frame): remember nothing */
  }
  const mem = new Map();
  return { getItem: (k) => mem.get(k) ?? null, setItem: (k, v) => mem.set(k, String(v)), removeItem: (k) => mem.delete(k) };
}

/** The rung of the transport remembered under `key`, if any and fresh; else 0 (the top). */
export function recall(storage, key, order, now) {
  try {
    const saved = JSON.parse(storage.getItem(key) || 'null');
    if (saved && saved.until > now) {
      const i = order.indexOf(saved.transport);
      if (i > 0) return i;
    }
  } catch (e) {
    /* nothing usable remembered */
  }
  return 0;
}

/** `name` works: remember it for `ms`, or forget the entry when it is the top transport. */
export function remember(storage, key, order, name, now, ms) {
  try {
    if (order.indexOf(name) === 0) storage.removeItem(key);
    else storage.setItem(key, JSON.stringify({ transport: name, until: now + ms }));
  } catch (e) {
    /* storage full or disabled */
  }
}
