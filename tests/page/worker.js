// A dedicated module Worker using the package (no window, no document): runs the scenarios
// against the broker `{ ws }` it is sent and reports back, with what it sees of its global.
import init, { connect } from "/pkg/client_wasm.js";
import { roundtrip, seed } from "./scenarios.js";

onmessage = async (e) => {
  try {
    await init();
    const rt = await roundtrip(connect, e.data.ws, "worker");
    const seedLog = await seed(connect, e.data.ws, 5, "worker");
    postMessage({ window: typeof window, roundtrip: rt, seed: seedLog });
  } catch (err) {
    postMessage({ error: err.message ?? String(err) });
  }
};
