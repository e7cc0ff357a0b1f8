// The dashboard's charts and the history behind them, kept in the page only (the bridge keeps
// no history for them): messages in / out per second, connections and queued messages from
// the `GET /api/v1/stats` readings app.js makes (every 2 s and after changes), and per session
// its queue length from the events' session summaries and the detail reads. app.js calls the
// `record*` functions; the drawing is charts.js's.
//
// The rates are the counters' differences over the readings' own times (charts.js RateMeter):
// a reading comes at most every 300 ms, so one rate spans at least a second; a counter that
// went down (the bridge restarted) starts a new line instead of a negative or huge rate.

import { LineChart, RateMeter, TimeSeries, now } from "./charts.js";

/** Sessions whose queue history is kept; the least recently changed beyond this are forgotten. */
const MAX_SESSIONS = 100;
/** A reading this late after the previous one means the bridge was unreachable: a break. */
const GAP_MS = 10_000;

const inRate = new TimeSeries();
const outRate = new TimeSeries();
const connections = new TimeSeries();
const queued = new TimeSeries();
const inMeter = new RateMeter();
const outMeter = new RateMeter();
/** client id -> its queue length over time (a step line: points only where it changed). */
const sessionQueues = new Map();
const charts = [];
let sessionChart = null;
let shownSession = null;

/** Creates the dashboard's charts in `host` and the session's in `sessionHost`. */
export function mountCharts(host, sessionHost) {
  charts.push(
    new LineChart(host, "messages", {
      title: "Messages per second",
      lines: [
        { key: "in", label: "in", cls: "l-in", series: inRate },
        { key: "out", label: "out", cls: "l-out", series: outRate },
      ],
      gapMs: GAP_MS,
      unit: "/s",
    }),
    new LineChart(host, "connections", {
      title: "Connections",
      lines: [{ key: "connections", label: "connections", cls: "l-conn", series: connections }],
      step: true,
      gapMs: GAP_MS,
      integer: true,
    }),
    new LineChart(host, "queued", {
      title: "Queued messages",
      lines: [{ key: "queued", label: "queued", cls: "l-queued", series: queued }],
      step: true,
      gapMs: GAP_MS,
      integer: true,
    }),
  );
  sessionChart = new LineChart(sessionHost, "session-queue", {
    title: "Queue length",
    lines: [{ key: "queued", label: "queued", cls: "l-queued", series: null }],
    step: true,
    integer: true,
    height: 120,
  });
  charts.push(sessionChart);
}

/** A `GET /stats` answer, just read. */
export function recordStats(s) {
  const t = now();
  for (const [meter, series, count] of [
    [inMeter, inRate, s.msgs_in],
    [outMeter, outRate, s.msgs_out],
  ]) {
    const r = meter.sample(t, count);
    if (r?.reset) series.push(t, null);
    else if (r) series.push(t, r.rate);
  }
  connections.push(t, s.connections);
  queued.push(t, s.queued);
  // The time axis moves on, too.
  for (const c of charts) c.invalidate();
}

/** A session's queue length as an event or a detail read gave it. */
export function recordQueue(id, length) {
  if (typeof id !== "string" || !Number.isFinite(length)) return;
  let series = sessionQueues.get(id);
  if (series) {
    sessionQueues.delete(id);
  } else {
    if (sessionQueues.size >= MAX_SESSIONS) {
      const oldest = [...sessionQueues.keys()].find((k) => k !== shownSession);
      sessionQueues.delete(oldest);
    }
    series = new TimeSeries({ capacity: 960, bucketMs: 250, dedup: true });
  }
  sessionQueues.set(id, series);
  series.push(now(), length);
  if (id === shownSession) {
    sessionChart.setSeries("queued", series);
    sessionChart.invalidate();
  }
}

/** The session ended: its history goes. */
export function forgetSession(id) {
  sessionQueues.delete(id);
  if (id === shownSession) sessionChart.setSeries("queued", null);
}

/** Shows `id`'s queue in the session chart (null: none). */
export function showSessionQueue(id) {
  shownSession = id;
  sessionChart.setSeries("queued", (id && sessionQueues.get(id)) || null);
}
