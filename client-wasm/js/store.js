// IndexedDB for the client's `persistence` option: one object store "r" of records, keys
// numbers, values Uint8Array (their meaning is the protocol crate's, src/client/store.rs).
// Kept in JavaScript because the same code through web-sys bindings costs more bytes.

/**
 * Takes the Web Lock named after the store (one client per stored session: two tabs with
 * the same client id would overwrite each other's records; waits up to 2 s, so that a client
 * just ended has time to let go), opens (creating) database `name`, and resolves with
 * [db, keys, values, release]; `release()` lets the lock go. Without `navigator.locks`
 * (not a secure context) there is no lock.
 */
export function openStore(name) {
  return new Promise((resolve, reject) => {
    const open = (release) => {
      const req = indexedDB.open(name, 1);
      req.onupgradeneeded = () => req.result.createObjectStore("r");
      req.onerror = () => {
        release();
        reject(req.error);
      };
      req.onsuccess = () => {
        const db = req.result;
        const s = db.transaction("r").objectStore("r");
        const keys = s.getAllKeys();
        const values = s.getAll();
        // Requests of one transaction complete in order: keys are there when values are.
        values.onsuccess = () => resolve([db, keys.result, values.result, release]);
        values.onerror = () => {
          release();
          reject(values.error);
        };
      };
    };
    const locks = globalThis.navigator && navigator.locks;
    if (!locks) return open(() => {});
    locks
      .request("mqtt-bridge-client " + name, { signal: AbortSignal.timeout(2000) }, () => new Promise(open))
      .catch((e) =>
        reject(e && e.name === "TimeoutError" ? new Error(`another client (another tab?) holds the stored session "${name}"`) : e),
      );
  });
}

/**
 * Writes records in one transaction, after clearing the store if `clear`: `values[i]`
 * undefined deletes `keys[i]`. `done(true)` once committed, `done(false)` if it failed,
 * always later, never from inside this call. Transactions on one store commit in order.
 * "relaxed": committed data survives a reload and a crashed tab, not a power cut (the
 * browser, not the page, then owns it); "strict" would wait for a disk flush per step.
 */
export function writeStore(db, clear, keys, values, done) {
  let tx;
  try {
    tx = db.transaction("r", "readwrite", { durability: "relaxed" });
    const s = tx.objectStore("r");
    if (clear) s.clear();
    keys.forEach((k, i) => (values[i] ? s.put(values[i], k) : s.delete(k)));
  } catch (e) {
    return queueMicrotask(() => done(false));
  }
  tx.oncomplete = () => done(true);
  tx.onabort = () => done(false);
}
