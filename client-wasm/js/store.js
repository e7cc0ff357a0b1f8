// IndexedDB for the client's `persistence` option: one object store "r" of records, keys
// numbers, values Uint8Array (their meaning is the protocol crate's, src/client/store.rs).
// Kept in JavaScript because the same code through web-sys bindings costs more bytes.

/** Opens (creating) database `name`; resolves with [db, keys, values]. */
export function openStore(name) {
  return new Promise((resolve, reject) => {
    const open = indexedDB.open(name, 1);
    open.onupgradeneeded = () => open.result.createObjectStore("r");
    open.onerror = () => reject(open.error);
    open.onsuccess = () => {
      const db = open.result;
      const s = db.transaction("r").objectStore("r");
      const keys = s.getAllKeys();
      const values = s.getAll();
      // Requests of one transaction complete in order: keys are there when values are.
      values.onsuccess = () => resolve([db, keys.result, values.result]);
      values.onerror = () => reject(values.error);
    };
  });
}

/**
 * Writes records in one transaction: `values[i]` undefined deletes `keys[i]`. `done(true)`
 * once committed, `done(false)` if it failed. Transactions on one store commit in order.
 * "relaxed": committed data survives a reload and a crashed tab, not a power cut (the
 * browser, not the page, then owns it); "strict" would wait for a disk flush per step.
 */
export function writeStore(db, keys, values, done) {
  let tx;
  try {
    tx = db.transaction("r", "readwrite", { durability: "relaxed" });
    const s = tx.objectStore("r");
    keys.forEach((k, i) => (values[i] ? s.put(values[i], k) : s.delete(k)));
  } catch (e) {
    return done(false);
  }
  tx.oncomplete = () => done(true);
  tx.onabort = () => done(false);
}
