// Review 15 (failing check): the topic tree's memory caps count topics, nodes and payload
// bytes, but not the topic names. Any client may publish 20 000 topics of about 4 KiB each
// (the broker's default max_topic_length is 4096): a watching tab then holds ~100 MiB of names
// with only 20 KB of payload, beyond the 64 MiB of payload the README states as the cap.
// Usage: node --expose-gc tests/review15-tree-names.mjs   (exits 1 on failure)
import { TopicTree, LIMITS } from "../web/topics-model.js";

const BOUND = LIMITS.maxBytes; // 64 MiB: the largest figure the README gives for what the tree keeps
globalThis.gc?.();
const before = process.memoryUsage().heapUsed;
const tree = new TopicTree();
const pad = "x".repeat(4000);
for (let i = 0; i < LIMITS.maxTopics; i++) tree.add(`t/${i}/${pad}/${i}`, new Uint8Array(1), 0, false);
globalThis.gc?.();
const grew = process.memoryUsage().heapUsed - before;
console.log(`topics ${tree.topicCount}, payload kept ${tree.bytes} B, heap grew ${(grew / 2 ** 20).toFixed(1)} MiB`);
if (grew > BOUND) {
  console.error(`FAIL: the tree holds ${(grew / 2 ** 20).toFixed(1)} MiB for 20 KB of payload: topic names are not capped`);
  process.exit(1);
}
