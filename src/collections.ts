// Small collection helpers shared by several stages (Node 20 has no Map.groupBy).

/** groupBy collects items into lists by key, keeping their order. */
export function groupBy<K, T>(items: Iterable<T>, key: (t: T) => K): Map<K, T[]> {
  const m = new Map<K, T[]>();
  for (const it of items) {
    const k = key(it);
    const list = m.get(k);
    if (list) list.push(it);
    else m.set(k, [it]);
  }
  return m;
}
