// The topic tree's data, without the DOM (topics.js draws it): every topic seen by the
// dashboard's `#` and `$SYS/#` subscription as a node of a tree split on "/", with its last
// message, a bounded history, a message count and a rate. Kept apart from the drawing so that
// its caps can be checked in Node (tests/topics.mjs) and so that a message costs only O(depth)
// work here; the drawing happens once per animation frame, for the rows in view.
//
// Memory is capped, because `#` on a busy broker is unbounded input:
// - at most `maxTopics` topics and `maxNodes` tree nodes (levels): a message to a new topic
//   past either cap is not added, only counted (`refused`); the topics already in the tree
//   keep updating. A full tree stays stable rather than churning.
// - per message at most `entryBytes` of payload is kept (its real size is kept too, and shown);
// - at most `historyLen` messages per topic, and over all topics at most `maxEntries` messages
//   and `maxBytes` of kept payload: past either, the oldest history entries go first, across
//   all topics, but never a topic's last message (so the bytes of the last messages are bounded
//   by maxTopics × entryBytes on their own).
// - the characters of topic names and levels kept are at most `maxNameChars` (a topic may be
//   4 KiB long: 20 000 of them would otherwise hold ~100 MiB of names for no payload); a new
//   topic past it is refused like past `maxTopics`.
// Nothing here recurses over topic levels: a topic may have thousands.

/** Defaults; `new TopicTree(opts)` may lower them (the Node checks do). */
export const LIMITS = Object.freeze({
  maxTopics: 20_000,
  maxNodes: 60_000,
  historyLen: 50,
  entryBytes: 2048,
  maxEntries: 200_000,
  maxBytes: 64 * 1024 * 1024,
  maxNameChars: 4 * 1024 * 1024,
});

/** Time constant of the per-topic rate, in seconds (an exponentially weighted average). */
export const RATE_TAU_S = 10;

/** One level of the tree; a topic when `topic` is set (a node can be both a topic and a branch). */
class Node {
  constructor(name, parent) {
    this.name = name;
    this.parent = parent;
    this.depth = parent ? parent.depth + 1 : -1;
    /** name -> Node, or null while it has none. */
    this.children = null;
    /** The children in name order, or null when one was added since (sorted again on demand). */
    this.sorted = null;
    this.expanded = false;
    /** The topic's data when a message came for exactly this node's path. */
    this.topic = null;
    /** Topics at or under this node, and messages to them. */
    this.topics = 0;
    this.messages = 0;
    /** Bumped on any change the row shows: a row is drawn again only when it differs. */
    this.ver = 0;
  }

  /** The topic name of this node: its levels joined by "/". */
  path() {
    if (this.topic) return this.topic.name;
    const parts = [];
    for (let n = this; n.parent; n = n.parent) parts.push(n.name);
    return parts.reverse().join("/");
  }

  sortedChildren() {
    if (!this.children) return [];
    if (!this.sorted) this.sorted = [...this.children.values()].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
    return this.sorted;
  }
}

/** What is kept of one message. */
class Entry {
  constructor(topic, payload, qos, retain, at) {
    this.topic = topic;
    /** At most `entryBytes` of the payload (a copy when cut, so the rest can be freed). */
    this.bytes = payload;
    /** The payload's real size. */
    this.size = payload.length;
    this.qos = qos;
    this.retain = retain;
    /** Date.now() when it arrived. */
    this.at = at;
    /** False once it left its topic's history (the global queue drops it lazily). */
    this.live = true;
  }
}

export class TopicTree {
  constructor(opts = {}) {
    this.limits = { ...LIMITS, ...opts };
    this.root = new Node("", null);
    this.root.expanded = true;
    this.topicCount = 0;
    this.nodeCount = 0;
    /** Characters held by topic names and tree levels (see `maxNameChars`). */
    this.nameChars = 0;
    /** Messages to new topics refused because the tree was full, and their distinct count is
     * not kept (that would be unbounded too). */
    this.refused = 0;
    this.messages = 0;
    /** History entries kept over all topics, and their payload bytes. */
    this.entries = 0;
    this.bytes = 0;
    /** Every kept entry in arrival order, plus ones that already left their topic (skipped
     * and compacted away): the global "oldest first" for the caps. */
    this.queue = [];
    this.queueHead = 0;
    /** Set when nodes were added (the flat list of rows must be made again). */
    this.structureChanged = false;
  }

  /**
   * Records one message. Returns its node, or null when the tree is full and the topic new.
   * `payload` is a Uint8Array the tree may keep (the client gives a fresh one per message).
   */
  add(topicName, payload, qos, retain, now = Date.now()) {
    const node = this.nodeFor(topicName);
    if (!node) {
      this.refused++;
      return null;
    }
    this.messages++;
    let t = node.topic;
    if (!t) {
      t = { name: topicName, count: 0, history: [], rate: 0, rateAt: now, last: null };
      node.topic = t;
      this.topicCount++;
      for (let n = node; n; n = n.parent) n.topics++;
      this.structureChanged = true;
    }
    t.count++;
    const decay = Math.exp(-(now - t.rateAt) / 1000 / RATE_TAU_S);
    t.rate = t.rate * decay + 1 / RATE_TAU_S;
    t.rateAt = now;
    const cut = payload.length > this.limits.entryBytes ? payload.slice(0, this.limits.entryBytes) : payload;
    const e = new Entry(t, cut, qos, retain, now);
    e.size = payload.length;
    t.last = e;
    t.history.push(e);
    this.entries++;
    this.bytes += cut.length;
    this.queue.push(e);
    while (t.history.length > this.limits.historyLen) this.forget(t.history.shift());
    this.enforceCaps();
    for (let n = node; n; n = n.parent) {
      n.messages++;
      n.ver++;
    }
    return node;
  }

  /** The node of `topicName`, made with its missing ancestors if the caps allow; else null. */
  nodeFor(topicName) {
    const levels = topicName.split("/");
    let n = this.root;
    let i = 0;
    for (; i < levels.length; i++) {
      const next = n.children?.get(levels[i]);
      if (!next) break;
      n = next;
    }
    const { maxTopics, maxNodes, maxNameChars } = this.limits;
    if (i === levels.length) {
      if (n.topic) return n;
      if (this.topicCount >= maxTopics || this.nameChars + topicName.length > maxNameChars) return null;
      this.nameChars += topicName.length;
      return n;
    }
    let chars = topicName.length;
    for (let j = i; j < levels.length; j++) chars += levels[j].length;
    if (this.topicCount >= maxTopics || this.nodeCount + (levels.length - i) > maxNodes || this.nameChars + chars > maxNameChars) return null;
    this.nameChars += chars;
    for (; i < levels.length; i++) {
      const child = new Node(levels[i], n);
      if (!n.children) n.children = new Map();
      n.children.set(levels[i], child);
      n.sorted = null;
      n.ver++;
      this.nodeCount++;
      n = child;
    }
    this.structureChanged = true;
    return n;
  }

  forget(e) {
    e.live = false;
    this.entries--;
    this.bytes -= e.bytes.length;
  }

  /** Drops the oldest history entries (never a topic's last message) while over a cap. */
  enforceCaps() {
    const { maxEntries, maxBytes } = this.limits;
    while ((this.entries > maxEntries || this.bytes > maxBytes) && this.queueHead < this.queue.length) {
      const e = this.queue[this.queueHead++];
      if (!e.live) continue;
      if (e.topic.last === e) {
        // Its topic's last message stays; it is re-queued behind the newer ones.
        this.queue.push(e);
        if (this.onlyLastsLeft()) break;
        continue;
      }
      // A topic's history is in arrival order, so a live entry at the global front is its
      // topic's oldest.
      const h = e.topic.history;
      if (h[0] === e) h.shift();
      else h.splice(h.indexOf(e), 1);
      this.forget(e);
    }
    // Compact: the queue holds live entries plus at most as many dropped ones.
    if (this.queueHead > 1024 && this.queueHead * 2 > this.queue.length) {
      this.queue = this.queue.slice(this.queueHead);
      this.queueHead = 0;
    }
    if (this.queue.length - this.queueHead > 2 * this.entries + 1024) {
      this.queue = this.queue.slice(this.queueHead).filter((e) => e.live);
      this.queueHead = 0;
    }
  }

  /** True when every kept entry is some topic's last message (nothing more can go). */
  onlyLastsLeft() {
    return this.entries <= this.topicCount;
  }

  /** The rate of `topic` in messages per second at `now`. */
  static rate(topic, now = Date.now()) {
    return topic.rate * Math.exp(-(now - topic.rateAt) / 1000 / RATE_TAU_S);
  }

  /**
   * The rows to show, in order: the expanded tree (no filter), or with `filter` every topic
   * whose name contains it, with its ancestors (as if expanded). Iterative.
   */
  flatten(filter = "") {
    const out = [];
    const stack = [];
    const pushChildren = (n) => {
      const kids = n.sortedChildren();
      for (let i = kids.length - 1; i >= 0; i--) stack.push(kids[i]);
    };
    if (!filter) {
      pushChildren(this.root);
      while (stack.length) {
        const n = stack.pop();
        out.push(n);
        if (n.expanded && n.children) pushChildren(n);
      }
      return out;
    }
    // Mark the matching topics' ancestors, then walk only the marked part of the tree.
    const keep = new Set();
    pushChildren(this.root);
    while (stack.length) {
      const n = stack.pop();
      if (n.topic && n.topic.name.includes(filter)) {
        for (let a = n; a && a !== this.root && !keep.has(a); a = a.parent) keep.add(a);
      }
      if (n.children) pushChildren(n);
    }
    pushChildren(this.root);
    while (stack.length) {
      const n = stack.pop();
      if (!keep.has(n)) continue;
      out.push(n);
      if (n.children) pushChildren(n);
    }
    return out;
  }
}

// ---------------------------------------------------------------------------------------
// Payloads as text

const utf8 = new TextDecoder("utf-8", { fatal: true });

/** How a payload reads: `{ kind: "empty" | "json" | "text" | "hex", text }`, `text` pretty
 * (JSON indented, hex as a dump of 16 bytes a line) or, with `oneLine`, a single short line. */
export function formatPayload(bytes, oneLine = false, maxChars = 160) {
  if (bytes.length === 0) return { kind: "empty", text: "(empty)" };
  let s = null;
  try {
    s = utf8.decode(bytes);
  } catch {
    // Not UTF-8 (or cut inside a character): hex.
  }
  // Control characters other than tab and line breaks read as binary.
  if (s !== null && !/[\u0000-\u0008\u000b\u000c\u000e-\u001f\u007f]/.test(s)) {
    const t = s.trim();
    if ((t[0] === "{" && t.at(-1) === "}") || (t[0] === "[" && t.at(-1) === "]")) {
      try {
        const v = JSON.parse(t);
        return { kind: "json", text: oneLine ? clip(JSON.stringify(v), maxChars) : JSON.stringify(v, null, 2) };
      } catch {
        // Not JSON after all: text.
      }
    }
    return { kind: "text", text: oneLine ? clip(s.replace(/\s+/g, " "), maxChars) : s };
  }
  if (oneLine) return { kind: "hex", text: clip(hexBytes(bytes.subarray(0, Math.ceil(maxChars / 3))), maxChars) };
  const lines = [];
  for (let i = 0; i < bytes.length; i += 16) {
    lines.push(`${i.toString(16).padStart(6, "0")}  ${hexBytes(bytes.subarray(i, i + 16))}`);
  }
  return { kind: "hex", text: lines.join("\n") };
}

function hexBytes(b) {
  return Array.from(b, (x) => x.toString(16).padStart(2, "0")).join(" ");
}

function clip(s, n) {
  return s.length > n ? `${s.slice(0, n - 1)}…` : s;
}
