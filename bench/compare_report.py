"""BENCHMARKS.md as `bench/compare.py` writes it: the machine, the versions, how each figure
was made, and one table per scenario with medians, ranges and bridge / mosquitto ratios."""

from __future__ import annotations

import datetime
import json
import os
import platform
import statistics
import subprocess
from pathlib import Path

from compare_servers import (MAX_CONNECTIONS_PER_ADDRESS, bridge_config,
                             mosquitto_config)

ROOT = Path(__file__).resolve().parent.parent

# What each scenario is, in the report's order: (heading, what it measures).
SCENARIOS = {
    "fanin": ("1. Fan-in, QoS 1",
              "4 publishers (topics `bench/0` .. `bench/3`) each publish {fanin} numbered 64 B "
              "QoS 1 messages, 64 unacknowledged at most, to 1 subscriber of `bench/#` (QoS 1). "
              "Received msg/s: every message over the time from the first publication to the "
              "last delivery; published: acknowledgements over the time to the last one."),
    "fanout": ("2. Fan-out, QoS 1",
               "1 publisher (window 64) to N subscribers of `bench/#`, each message to all of "
               "them; the messages are chosen so that every run makes about {deliveries} "
               "deliveries. Deliveries/s over the time from the first publication to the last "
               "delivery. The subscribers connect 32 at a time before the clock starts. "
               "mqtt-bench gives up when a publisher with messages in flight hears nothing "
               "for 30 s: mosquitto's WebSocket listener, slow to write to many clients (see "
               "7), can take that long at 10 000 WebSocket subscribers; such runs show as "
               "failed and are listed under Problems."),
    "qos0": ("3. Fan-in burst, QoS 0",
             "4 publishers × {fanin} × 64 B at QoS 0 (written 64 per write, as fast as the "
             "socket takes them) to 1 subscriber that keeps reading. Lost: copies that never "
             "arrived (the run ends once nothing has arrived for {drain_idle} s), in percent; "
             "received msg/s over the time to the last delivery."),
    "latency": ("4. Latency at a fixed offered rate, QoS 1",
                "4 publishers share the offered rate: publisher i of 4 sends message k at "
                "(4k + i) / rate seconds, {rate_secs} s of messages in all, to 1 subscriber. "
                "Latency runs from the time a message was written (stamped in its payload) to "
                "its arrival at the subscriber. The schedule is kept to tokio's 1 ms timer, so "
                "messages due in the same millisecond go out in one write (at 40 000 msg/s, "
                "about 10 per publisher). \"Lag\" is how far the publishers fell behind their "
                "schedule at worst (a full window, a busy machine): when it is large, the rate "
                "was not really offered. The generator and the broker share the machine's "
                "cores."),
    "memory": ("5. Memory",
               "RSS (`VmRSS`) of the broker process, the bridge's and mosquitto's measured side "
               "by side (both running, the same operations on each, one wait for both), each "
               "phase on fresh processes. Idle connections: {idle} per transport (CONNECT, "
               "keep-alive 0, CONNACK read; `bench/idle_rss.py`'s openers), RSS growth "
               "{settle} s later divided by {idle}. Idle offline sessions: `mqtt-bench sessions "
               "--count {sessions}` (clean session 0, one QoS 1 subscription each, then "
               "disconnect), RSS growth {settle} s later divided by {sessions}. Burst: "
               "{burst_p} publishers × {burst_n} × {burst_s} B QoS 1 (window 32) to 1 "
               "subscriber; peak sampled every 50 ms; the ratio is RSS {settle} s after the "
               "burst over RSS before it."),
    "offline": ("6. Persistent sessions offline, QoS 1, by store",
                "`mqtt-bench sessions --common-topic`: {offline_sessions} persistent sessions "
                "(clean session 0) subscribe to `bench/s/all` at QoS 1 and disconnect; then 1 "
                "publisher (window 20) publishes {offline_messages} messages to that topic: "
                "each is stored for every session before its PUBACK. Msg/s acknowledged. The "
                "bridge with a data directory and each durability, and in memory "
                "(`--data none`); mosquitto keeps everything in memory (`persistence false`)."),
    "payload": ("7. QoS 2 and large payloads (fan-in)",
                "4 publishers → 1 subscriber as in 1: QoS 2 with 64 B payloads (PUBREC / "
                "PUBREL / PUBCOMP both ways); QoS 1 with 1 KB and 64 KB payloads. 64 KB over "
                "WebSocket uses only a few messages: mosquitto 2.0.11's WebSocket listener "
                "(libwebsockets) delivers a 64 KB message about once a second on this machine "
                "(20 messages took 24 s; a known problem, "
                "eclipse-mosquitto/mosquitto#2252 and #2060), so a run of thousands would take "
                "an hour; those runs wait up to 5 s for the next message instead of "
                "{drain_idle} s."),
    "seed": ("8. Queued messages at scale: drain",
             "`mqtt-bench sessions`: {seed_sessions} persistent sessions, one subscription "
             "each, disconnect; 4 publishers queue {seed_queued} QoS 1 messages for each "
             "session (window 64); then `--drain` reconnects every session (32 at a time), "
             "takes and acknowledges its messages and checks that all arrived."),
    "browser": ("9. Browser clients: wasm vs MQTT.js",
                "`node bench/browser/run.mjs`: our wasm client and MQTT.js in the same headless "
                "Chromium against the release bridge (`--data none`); see the script's header "
                "and docs/benchmarks.md for the method. Its table, as printed:"),
}


def loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "unknown"


def _run(cmd: list) -> str:
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=30, cwd=ROOT)
        return (done.stdout + done.stderr).strip()
    except (OSError, subprocess.TimeoutExpired):
        return ""


def machine(args) -> dict:
    """The machine, the versions, the load: the report's header."""
    cpu = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem_kb = next((int(line.split()[1]) for line in Path("/proc/meminfo").read_text()
                   .splitlines() if line.startswith("MemTotal:")), 0)
    commit = _run(["git", "rev-parse", "--short=12", "HEAD"]) or "unknown"
    if _run(["git", "status", "--porcelain", "--untracked-files=no"]):
        commit += " (with uncommitted changes)"
    chromium = next((line for line in _run(["chromium", "--version"]).splitlines()
                     if "Chromium" in line), "not found")
    try:
        mqttjs = json.loads((ROOT / "node_modules" / "mqtt" / "package.json").read_text())[
            "version"]
    except (OSError, ValueError, KeyError):
        mqttjs = "not found"
    mosquitto = next((line for line in _run([args.mosquitto, "-h"]).splitlines()
                      if "version" in line), "unknown")
    return {
        "cpu": cpu, "cores": os.cpu_count(), "kernel": platform.release(),
        "memory_gb": mem_kb / 1024 / 1024, "rustc": _run(["rustc", "-V"]),
        "commit": commit, "mosquitto": mosquitto, "chromium": chromium, "mqttjs": mqttjs,
        "load_before": loadavg(), "date": datetime.datetime.now(datetime.timezone.utc)
        .strftime("%Y-%m-%d %H:%M UTC"),
    }


def lookup(figures: dict, key: str):
    """`figures["a"]["b"]` for key `a.b`; None if missing."""
    value = figures
    for part in key.split("."):
        if not isinstance(value, dict) or value.get(part) is None:
            return None
        value = value[part]
    return value


def fmt(value, kind: str) -> str:
    if value is None:
        return "–"
    if kind == "rate":
        return f"{value:,.0f}".replace(",", " ")
    if kind == "pct":
        return f"{value:.2f} %"
    if kind == "us":
        return f"{value / 1000:.2f} ms"
    if kind == "kb":
        return f"{value:.2f} KB"
    if kind == "mb":
        return f"{value:,.1f}".replace(",", " ")
    if kind == "mb_rss":
        return f"{value:.1f} MB"
    if kind == "s":
        return f"{value:.2f} s"
    if kind == "x":
        return f"{value:.2f}×"
    return str(value)


def cell(values: list, kind: str) -> str:
    """The median, and the range when there were several rounds."""
    values = [v for v in values if v is not None]
    if not values:
        return "failed"
    med = statistics.median(values)
    if len(values) == 1:
        return fmt(med, kind)
    return f"**{fmt(med, kind)}** ({fmt(min(values), kind)} – {fmt(max(values), kind)})"


def ratio(ours: list, theirs: list) -> str:
    ours = [v for v in ours if v is not None]
    theirs = [v for v in theirs if v is not None]
    if not ours or not theirs:
        return "–"
    a, b = statistics.median(ours), statistics.median(theirs)
    if b == 0:
        return "–" if a == 0 else "∞"
    return f"{a / b:.2f}"


def table(label: str, metrics: list, results: dict, key: tuple, bridges: list,
          skip: dict | None = None) -> list:
    """Rows for one case: per bridge configuration and figure, beside mosquitto's."""
    rows = []
    skip = skip or {}
    theirs = results.get((*key, "mosquitto"), [])
    for bridge in bridges:
        ours = results.get((*key, bridge), [])
        for name, path, better, kind in metrics:
            a = [lookup(f, path) for f in ours]
            b = [lookup(f, path) for f in theirs]
            first = label if len(bridges) == 1 else f"{label}: {bridge}"
            ours_cell = "not run (below)" if bridge in skip else cell(a, kind)
            theirs_cell = "not run (below)" if "mosquitto" in skip else cell(b, kind)
            rows.append(f"| {first} | {name} ({better} is better) | {ours_cell} | "
                        f"{theirs_cell} | {ratio(a, b)} |")
    return rows


def shown(argv: list, drain_idle: float) -> str:
    text = " ".join(a.replace("{url}", "URL") for a in argv)
    if argv[0] == "fanin":
        text += f" --drain-idle {drain_idle:g}"
    return f"mqtt-bench {text} --json"


def render(args, counts, cases, memory_metrics, results, problems, machine, browser_out):
    c = counts
    fields = {
        "fanin": f"{c.fanin_messages:,}".replace(",", " "),
        "deliveries": f"{c.fanout_deliveries:,}".replace(",", " "),
        "drain_idle": c.drain_idle, "rate_secs": c.rate_secs, "idle": c.idle,
        "settle": f"{c.settle_s:g}", "sessions": c.sessions, "burst_p": c.burst[0],
        "burst_n": c.burst[1], "burst_s": c.burst[2], "offline_sessions": c.offline_sessions,
        "offline_messages": f"{c.offline_messages:,}".replace(",", " "),
        "seed_sessions": c.seed_sessions, "seed_queued": c.seed_queued,
    }
    m = machine
    load_1 = float(m["load_before"].split()[0]) if m["load_before"][0].isdigit() else 0.0
    out = ["# Benchmarks: the bridge beside mosquitto", ""]
    out.append(f"Written by `bench/compare.sh` on {m['date']} ({m['minutes']:.1f} minutes"
               f"{', SMOKE run: tiny counts, debug builds, figures meaningless' if args.smoke else ''}). "
               "Re-run it to refresh this file; every figure here comes from that run. Older "
               "figures (the codec, fuzzing, earlier broker measurements and the browser "
               "client's history) are in [docs/benchmarks.md](docs/benchmarks.md).")
    out.append("")
    if load_1 >= 0.5:
        out += [f"**The machine was loaded**: load average {m['load_before']} (1, 5, 15 min) "
                "before the run, from other work sharing its cores; absolute figures are low "
                "and noisy. The bridge and mosquitto shared the same noise (alternating "
                "runs), but not equally: Linux shares a busy CPU between threads, and the "
                "bridge keeps several busy (the connections' thread, the engine's) where "
                "mosquitto has one, so against other load the bridge gets the larger share. "
                "Read the ratios of a loaded run as favouring the bridge; re-run on an idle "
                "machine for figures to quote.", ""]
    if args.note:
        out += [args.note, ""]
    out += [
        "## Machine and versions", "",
        f"- CPU: {m['cpu']}, {m['cores']} cores; kernel {m['kernel']}; "
        f"{m['memory_gb']:.0f} GB RAM",
        f"- Load average (1, 5, 15 min) before: {m['load_before']}; after: {m['load_after']}",
        f"- {m['rustc']}; bridge at commit {m['commit']}, "
        f"{'debug' if args.smoke else 'release'} build",
        f"- {m['mosquitto']} (Debian)",
        f"- {m['chromium']}; MQTT.js {m['mqttjs']}",
        "",
        "## How", "",
        f"`bench/compare.sh{' --smoke' if args.smoke else ''}` builds the binaries "
        f"(`cargo build {'' if args.smoke else '--release '}-p bridge -p mqtt-bench`), raises "
        "the open-files limit to the hard limit, and runs `bench/compare.py`. Every case runs "
        f"in {args.rounds} round(s); in each, every broker configuration runs it once, on a "
        "fresh process, the order alternating from one round to the next. Cells show the "
        "median and, in parentheses, the lowest and highest round; the last column is the "
        "bridge's median over mosquitto's. Everything runs on loopback, the load generator "
        "(`mqtt-bench`, this repository's `bench/`: MQTT 3.1.1 through the `protocol` codec, "
        "little work per message) on the same cores as the broker, so each figure is "
        "\"broker + generator\" on this machine. Every QoS 1 and 2 run also checks that "
        "every acknowledged message arrived (QoS 2: exactly once); failures are listed at "
        "the end.",
        "",
        "The bridge (`" + _bin(args.bridge) + "`): `bridge --http 127.0.0.1:0 --mqtt "
        "127.0.0.1:0 --data none --config bridge.toml`, or `--data DIR` where a durability is "
        "named, with this `bridge.toml` (everything else at its defaults: `max_inflight = "
        "256`, `max_queued_messages = 10000`, `[server] worker_threads = 1`, ...):",
        "", "```toml", bridge_config("always").rstrip()
        + "   # only with --data DIR: always, interval or none", "```", "",
        f"`max_connections_per_address` is raised to {MAX_CONNECTIONS_PER_ADDRESS} because "
        "every client comes from 127.0.0.1 (default 1 000).",
        "", f"mosquitto: `{args.mosquitto} -c mosquitto.conf` with:", "", "```",
        mosquitto_config(1883, 8083).rstrip(), "```", "",
        "Counts of this run: " + ", ".join(f"{k} {v}" for k, v in fields.items()) + ".",
        "",
    ]
    for scenario, (title, what) in SCENARIOS.items():
        scenario_cases = [x for x in cases if x.scenario == scenario]
        if scenario == "memory" and any(k[0] == "memory" for k in results):
            out += [f"## {title}", "", what.format(**fields), ""]
            out += ["| case | figure | bridge | mosquitto | bridge / mosquitto |",
                    "|---|---|---|---|---|"]
            out += table("RSS", memory_metrics, results, ("memory", "RSS"), ["bridge"])
            out += ["", "Commands (besides the idle connections, which Python opens):", "",
                    "```sh",
                    f"mqtt-bench sessions --url URL --count {c.sessions} --json",
                    f"mqtt-bench fanin --url URL --qos 1 --publishers {c.burst[0]} "
                    f"--subscribers 1 --messages {c.burst[1]} --size {c.burst[2]} --inflight 32 "
                    f"--drain-idle {c.drain_idle:g} --json",
                    "```", ""]
            continue
        if scenario == "browser":
            out += [f"## {title}", ""]
            if browser_out is None:
                out += ["Not run this time (`bench/compare.sh --browser` runs it, about 4 "
                        "minutes more; or `node bench/browser/run.mjs` alone). The last "
                        "figures are in docs/benchmarks.md.", ""]
            else:
                out += [what, "", "```", browser_out.strip(), "```", ""]
            continue
        if not scenario_cases:
            continue
        out += [f"## {title}", "", what.format(**fields), ""]
        out += ["| case | figure | bridge | mosquitto | bridge / mosquitto |",
                "|---|---|---|---|---|"]
        for case in scenario_cases:
            bridges = [b.name for b in case.brokers if b.kind == "bridge"]
            out += table(case.label, case.metrics, results, (scenario, case.label), bridges,
                         case.skip)
        out.append("")
        out += [f"- Not run: {case.label}, {who}: {why}." for case in scenario_cases
                for who, why in case.skip.items()]
        out += ["", "Commands (URL: `mqtt://127.0.0.1:PORT` or `ws://127.0.0.1:PORT/mqtt`):", ""]
        commands = dict.fromkeys(shown(argv, case.drain_idle or c.drain_idle)
                                 for case in scenario_cases for argv in case.commands)
        out += ["```sh", *commands, "```", ""]
    out += ["## Problems", ""]
    out += [f"- {p}" for p in problems] or ["None: every run completed and passed its check."]
    out.append("")
    return "\n".join(out)


def _bin(path) -> str:
    try:
        return str(Path(path).resolve().relative_to(ROOT))
    except ValueError:
        return str(path)

