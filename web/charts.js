// Small line charts in plain SVG for the dashboard: a bounded time series (a ring buffer), a
// rate derived from a counter, and a chart that draws one or more series over the last minutes.
//
// Why plain SVG and no charting library: the dashboard draws four small charts of a few hundred
// points each; this file is a few kilobytes, has no dependency to vendor or update, fetches
// nothing, and its text is real text (selectable, styled by style.css, read by screen readers).
//
// Nothing here touches the page when imported (the series and the rate are plain objects, which
// tests/charts.mjs checks in Node). Every chart redraws at most once per animation frame,
// however often its data changes: `invalidate()` only marks it. Each chart registers itself in
// `window.__charts` by name, so a test can read exactly what is drawn.

/** What a chart shows: the last 15 minutes. */
export const WINDOW_MS = 15 * 60 * 1000;

/** Milliseconds on a clock that never goes back (unlike Date.now), in Unix time. */
export function now() {
  return performance.timeOrigin + performance.now();
}

/**
 * A series of (time, value) points in a fixed-size ring buffer, at most one per `bucketMs`
 * (a newer point in the same bucket replaces the last one; with `dedup`, at most two a bucket),
 * and only as old as `windowMs`
 * (one older point stays, so a step line can start at the left edge). A null value is a break
 * in the line. With `dedup`, a point equal to the last one is not kept (for a step line the
 * last value holds until it changes).
 */
export class TimeSeries {
  constructor({ capacity = 1024, windowMs = WINDOW_MS, bucketMs = 1000, dedup = false } = {}) {
    this.capacity = capacity;
    this.windowMs = windowMs;
    this.bucketMs = bucketMs;
    this.dedup = dedup;
    this.ts = new Float64Array(capacity);
    this.vs = new Float64Array(capacity);
    /** Index of the oldest point, and how many there are. */
    this.start = 0;
    this.length = 0;
  }

  at(i) {
    const j = (this.start + i) % this.capacity;
    return [this.ts[j], Number.isNaN(this.vs[j]) ? null : this.vs[j]];
  }

  latest() {
    return this.length ? this.at(this.length - 1) : null;
  }

  push(t, v) {
    if (!Number.isFinite(t) || (v !== null && !Number.isFinite(v))) return;
    const last = this.latest();
    if (last && t < last[0]) return;
    if (last && this.dedup && last[1] === v) return;
    const val = v === null ? NaN : v;
    const bucket = (tt) => Math.floor(tt / this.bucketMs);
    // A step line keeps the first change in a bucket (where the value before it ends) and
    // replaces only the ones after it.
    const replace = last && bucket(t) === bucket(last[0]) && (!this.dedup || (this.length > 1 && bucket(this.at(this.length - 2)[0]) === bucket(t)));
    if (replace) {
      const j = (this.start + this.length - 1) % this.capacity;
      this.ts[j] = t;
      this.vs[j] = val;
    } else {
      if (this.length === this.capacity) {
        this.start = (this.start + 1) % this.capacity;
        this.length--;
      }
      const j = (this.start + this.length) % this.capacity;
      this.ts[j] = t;
      this.vs[j] = val;
      this.length++;
    }
    // Older than the window, but for the last such point.
    while (this.length > 1 && this.at(1)[0] <= t - this.windowMs) {
      this.start = (this.start + 1) % this.capacity;
      this.length--;
    }
  }

  /** The points, oldest first, as [t, v] pairs. */
  points() {
    const out = new Array(this.length);
    for (let i = 0; i < this.length; i++) out[i] = this.at(i);
    return out;
  }

  clear() {
    this.start = 0;
    this.length = 0;
  }
}

/**
 * A rate per second from successive readings of a counter. `sample` answers the rate over the
 * time since the last reading it measured from, once at least `minGapMs` has passed (readings
 * closer together only wait); `reset` when the counter went down (the bridge restarted: what
 * it counted since is not a rate over a known time, so the next reading starts afresh); null
 * otherwise.
 */
export class RateMeter {
  constructor(minGapMs = 1000) {
    this.minGapMs = minGapMs;
    this.base = null;
  }

  sample(t, count) {
    if (!Number.isFinite(t) || !Number.isFinite(count) || count < 0) return null;
    const base = this.base;
    if (!base || count < base.count) {
      this.base = { t, count };
      return base ? { reset: true } : null;
    }
    const dt = t - base.t;
    if (dt < this.minGapMs) return null;
    this.base = { t, count };
    return { rate: ((count - base.count) * 1000) / dt };
  }
}

/** Tick values from 0 to a round top of at least `max`, about `count` of them. */
export function niceTicks(max, count = 4, integer = false) {
  if (!(max > 0)) return [0, 1];
  const raw = max / count;
  const mag = 10 ** Math.floor(Math.log10(raw));
  let step = [1, 2, 2.5, 5, 10].map((m) => m * mag).find((s) => s >= raw) ?? 10 * mag;
  if (integer) step = Math.max(1, Math.ceil(step));
  const top = Math.ceil(max / step - 1e-9) * step;
  const ticks = [];
  for (let v = 0; v <= top + step / 2; v += step) ticks.push(Number(v.toPrecision(12)));
  return ticks;
}

/** Compact numbers for axes and values: 0.5, 12, 1.2k, 3.4M. */
export function fmtValue(v, digits = 1) {
  if (v == null || !Number.isFinite(v)) return "–";
  const a = Math.abs(v);
  if (a >= 1e6) return `${(v / 1e6).toFixed(1)}M`;
  if (a >= 1e4) return `${Math.round(v / 1e3)}k`;
  if (a >= 1e3) return `${(v / 1e3).toFixed(1)}k`;
  if (Number.isInteger(v) || a >= 100) return String(Math.round(v));
  return v.toFixed(digits);
}

const X_STEPS_S = [5, 10, 15, 30, 60, 120, 300, 600];

function fmtAgo(s) {
  if (s === 0) return "now";
  return s < 60 ? `−${s} s` : `−${s / 60} min`;
}

// ---------------------------------------------------------------------------------------
// Drawing

const SVG = "http://www.w3.org/2000/svg";
const dirty = new Set();
let frame = 0;
let uid = 0;

function svgEl(tag, attrs = {}, text) {
  const e = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, String(v));
  if (text != null) e.textContent = text;
  return e;
}

function drawDirty() {
  frame = 0;
  const t = now();
  for (const chart of dirty) chart.draw(t);
  dirty.clear();
}

/** The charts by name, for tests: `window.__charts.get(name).series()`. */
const registry = new Map();
if (typeof window !== "undefined") window.__charts = registry;

/**
 * A chart in a <figure>: a caption with its title and each line's current value, and an SVG
 * (role img, its <title> the latest values) with a few labelled ticks on both axes.
 * `lines`: [{ key, label, cls, series }]. Options: `step` (a value holds until the next
 * point, and the last one until now), `gapMs` (a longer silence breaks the line), `integer`
 * (whole-number ticks), `unit` (after the values), `minSpanMs` (the shortest time axis).
 */
export class LineChart {
  constructor(host, name, { title, lines, step = false, gapMs = Infinity, integer = false, unit = "", minSpanMs = 60_000, height = 140 }) {
    this.name = name;
    this.title = title;
    this.lines = lines;
    this.opts = { step, gapMs, integer, unit, minSpanMs, height };
    const id = `chart-${name}-${++uid}`;
    this.clipId = `${id}-clip`;
    this.figure = document.createElement("figure");
    this.figure.className = "chart";
    this.figure.dataset.chart = name;
    const caption = document.createElement("figcaption");
    const heading = document.createElement("span");
    heading.className = "chart-title";
    heading.textContent = title;
    caption.append(heading);
    this.valueEls = new Map();
    for (const l of lines) {
      const v = document.createElement("span");
      v.className = `chart-value ${l.cls}`;
      v.dataset.key = l.key;
      this.valueEls.set(l.key, v);
      caption.append(v);
    }
    this.svg = svgEl("svg", { role: "img", class: "chart-svg", height, "aria-labelledby": `${id}-title` });
    this.svg.dataset.chart = name;
    this.titleEl = svgEl("title", { id: `${id}-title` }, `${title}: no data yet`);
    this.body = svgEl("g");
    this.svg.append(this.titleEl, this.body);
    this.figure.append(caption, this.svg);
    host.append(this.figure);
    registry.set(name, this);
    if (typeof ResizeObserver !== "undefined") new ResizeObserver(() => this.invalidate()).observe(this.svg);
    this.invalidate();
  }

  /** Swaps a line's series (the session chart shows another session's). */
  setSeries(key, series) {
    const l = this.lines.find((x) => x.key === key);
    if (l) l.series = series;
    this.invalidate();
  }

  /** Draws on the next animation frame (once, however many calls come before it). */
  invalidate() {
    dirty.add(this);
    if (!frame) frame = requestAnimationFrame(drawDirty);
  }

  /** What is drawn, for tests: each line's points and latest value. */
  series() {
    const out = {};
    for (const l of this.lines) out[l.key] = { points: l.series?.points() ?? [], latest: l.series?.latest()?.[1] ?? null };
    return out;
  }

  draw(t) {
    const { step, gapMs, integer, unit, minSpanMs, height } = this.opts;
    const width = Math.max(160, Math.round(this.svg.clientWidth || 360));
    this.svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
    const m = { l: 40, r: 8, t: 8, b: 20 };
    const pw = width - m.l - m.r;
    const ph = height - m.t - m.b;
    const all = this.lines.map((l) => (l.series ? l.series.points() : []));
    let first = Infinity;
    let max = 0;
    for (const pts of all) {
      if (pts.length) first = Math.min(first, pts[0][0]);
      for (const [, v] of pts) if (v != null && v > max) max = v;
    }
    const t1 = t;
    const t0 = Math.min(t1 - minSpanMs, Math.max(t1 - WINDOW_MS, first));
    const ticks = niceTicks(max, 3, integer);
    const top = ticks[ticks.length - 1];
    const x = (tt) => m.l + ((tt - t0) / (t1 - t0)) * pw;
    const y = (v) => m.t + ph - (v / top) * ph;

    const kids = [];
    kids.push(svgEl("clipPath", { id: this.clipId }, null));
    kids[0].append(svgEl("rect", { x: m.l, y: m.t - 2, width: pw, height: ph + 4 }));
    for (const v of ticks) {
      kids.push(svgEl("line", { class: "chart-grid", x1: m.l, x2: m.l + pw, y1: y(v), y2: y(v) }));
      kids.push(svgEl("text", { class: "chart-tick", x: m.l - 5, y: y(v) + 4, "text-anchor": "end" }, fmtValue(v)));
    }
    const spanS = (t1 - t0) / 1000;
    const maxTicks = Math.max(2, Math.floor(pw / 70));
    const xs = X_STEPS_S.find((s) => spanS / s <= maxTicks) ?? X_STEPS_S[X_STEPS_S.length - 1];
    for (let s = 0; s <= spanS; s += xs) {
      const xx = x(t1 - s * 1000);
      kids.push(svgEl("line", { class: "chart-axis", x1: xx, x2: xx, y1: m.t + ph, y2: m.t + ph + 4 }));
      const anchor = s === 0 ? "end" : "middle";
      kids.push(svgEl("text", { class: "chart-tick", x: s === 0 ? xx + 2 : xx, y: height - 4, "text-anchor": anchor }, fmtAgo(s)));
    }
    kids.push(svgEl("line", { class: "chart-axis", x1: m.l, x2: m.l + pw, y1: m.t + ph, y2: m.t + ph }));

    const said = [];
    let any = false;
    this.lines.forEach((l, i) => {
      const pts = all[i];
      let d = "";
      let prev = null;
      // A lone point (the first rate, or one between breaks) is a dot: a path would not show.
      let lone = null;
      const endSegment = () => {
        if (lone) kids.push(svgEl("circle", { class: `chart-dot ${l.cls}`, cx: lone[0], cy: lone[1], r: 2.5, "clip-path": `url(#${this.clipId})` }));
        lone = null;
      };
      for (const [pt, v] of pts) {
        if (v == null) {
          endSegment();
          prev = null;
          continue;
        }
        const px = x(pt).toFixed(1);
        const py = y(v).toFixed(1);
        if (!prev || pt - prev[0] > gapMs) {
          endSegment();
          d += `M${px},${py}`;
          lone = [px, py];
        } else {
          d += step ? `H${px}V${py}` : `L${px},${py}`;
          lone = null;
        }
        prev = [pt, v];
      }
      if (step && prev && x(t1) - x(prev[0]) >= 1) {
        d += `H${x(t1).toFixed(1)}`;
        lone = null;
      }
      endSegment();
      if (d) {
        any = true;
        kids.push(svgEl("path", { class: `chart-line ${l.cls}`, d, "clip-path": `url(#${this.clipId})` }));
      }
      const latest = l.series?.latest()?.[1] ?? null;
      const text = latest == null ? "–" : `${fmtValue(latest)}${unit}`;
      const el = this.valueEls.get(l.key);
      el.textContent = this.lines.length > 1 ? `${l.label} ${text}` : text;
      this.svg.dataset[`latest${l.key[0].toUpperCase()}${l.key.slice(1)}`] = latest == null ? "" : String(latest);
      said.push(this.lines.length > 1 ? `${l.label} ${text}` : text);
    });
    if (!any) {
      kids.push(svgEl("text", { class: "chart-empty", x: m.l + pw / 2, y: m.t + ph / 2, "text-anchor": "middle" }, "waiting for data…"));
    }
    this.body.replaceChildren(...kids);
    const mins = Math.max(1, Math.round(spanS / 60));
    this.titleEl.textContent = `${this.title}, last ${mins} min; now ${said.join(", ")}`;
    this.svg.dataset.draws = String(Number(this.svg.dataset.draws ?? 0) + 1);
  }
}
