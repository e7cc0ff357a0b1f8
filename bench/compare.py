#!/usr/bin/env python3
"""The side-by-side benchmark of issue 13: the bridge beside mosquitto, written to BENCHMARKS.md.

Run it through `bench/compare.sh` (which builds the binaries and raises the open-files
limit first). For every scenario below, every case runs in rounds; in each round every
broker configuration runs it once, on a fresh process, the order alternating from one round
to the next (bridge, mosquitto; then mosquitto, bridge; ...), so that both share the
machine's noise. The report gives the median of the rounds, their range, and the ratio
bridge / mosquitto.

Scenarios (`--only` takes these names):
  fanin    fan-in QoS 1: 4 publishers x 20 000 x 64 B -> 1 subscriber, TCP and WS
  fanout   fan-out QoS 1: 1 publisher -> 50, 1 000 and 10 000 subscribers, TCP and WS
  qos0     fan-in QoS 0 burst, 4 x 20 000 x 64 B -> 1 subscriber: lost %, delivered msg/s
  latency  QoS 1 at a fixed offered rate (8 000 and 40 000 msg/s): p50 / p99 / p99.9
  memory   RSS per idle connection (TCP, WS), per idle offline session, after a burst
  offline  1 publisher (window 20) -> 100 offline persistent sessions, QoS 1, by store
  payload  fan-in QoS 2 (64 B); QoS 1 with 1 KB and 64 KB payloads
  seed     1 000 persistent sessions x 100 queued QoS 1 messages: queue, time to drain
  browser  (only with --browser) node bench/browser/run.mjs: wasm client vs MQTT.js

`--smoke` runs each scenario once with tiny counts on the debug builds and writes the
report to a temporary file (or --out): it checks that the script, mqtt-bench and both
brokers work together, in seconds. It is a step of scripts/test.sh; the full run is not.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
# No __pycache__ beside the sources.
sys.dont_write_bytecode = True

import compare_report  # noqa: E402
import idle_rss  # noqa: E402
from compare_servers import Broker, Server, start  # noqa: E402

BRIDGE = Broker("bridge", "bridge")
MOSQUITTO = Broker("mosquitto", "mosquitto")
BRIDGE_STORES = [
    Broker('bridge, data DIR, durability "always"', "bridge", "always"),
    Broker('bridge, data DIR, durability "interval"', "bridge", "interval"),
    Broker('bridge, data DIR, durability "none"', "bridge", "none"),
    Broker("bridge, --data none", "bridge"),
]
SEED_BRIDGES = [Broker("bridge, --data none", "bridge"),
                Broker('bridge, data DIR, durability "always"', "bridge", "always")]


@dataclass(frozen=True)
class Counts:
    """How much each scenario does: the full run, or the smoke run."""

    fanin_messages: int          # per publisher, 4 publishers
    fanout_subscribers: tuple    # the fan-out sizes
    fanout_deliveries: int       # messages x subscribers per fan-out run
    rates: tuple                 # offered msg/s of the latency runs
    rate_secs: float             # seconds of messages at each rate
    idle: int                    # idle connections per transport
    sessions: int                # idle offline sessions
    burst: tuple                 # publishers, messages each, payload bytes (QoS 1)
    settle_s: float              # seconds before an RSS sample (the bridge's jemalloc
                                 # returns freed pages over ~10 s)
    offline_sessions: int
    offline_messages: int
    payload_messages: dict       # payload bytes -> transport -> messages per publisher
    qos2_messages: int
    seed_sessions: int
    seed_queued: int
    drain_idle: float            # mqtt-bench --drain-idle: a QoS 1 run ends as soon as
                                 # everything arrived, so this only bounds a pause of the
                                 # broker (a loaded machine), and how long QoS 0 waits
    timeout_s: float             # one mqtt-bench run at most


FULL = Counts(
    fanin_messages=20_000, fanout_subscribers=(50, 1_000, 10_000), fanout_deliveries=200_000,
    rates=(8_000, 40_000), rate_secs=4.0, idle=2_000, sessions=5_000, burst=(100, 500, 1024),
    settle_s=12.0, offline_sessions=100, offline_messages=10_000,
    payload_messages={1024: {"tcp": 20_000, "ws": 20_000}, 65536: {"tcp": 1_000, "ws": 5}},
    qos2_messages=20_000,
    seed_sessions=1_000, seed_queued=100, drain_idle=3.0, timeout_s=300.0,
)
SMOKE = Counts(
    fanin_messages=200, fanout_subscribers=(5, 20, 50), fanout_deliveries=500,
    rates=(400, 2_000), rate_secs=0.25, idle=10, sessions=10, burst=(4, 20, 1024),
    settle_s=0.2, offline_sessions=5, offline_messages=50,
    payload_messages={1024: {"tcp": 50, "ws": 50}, 65536: {"tcp": 5, "ws": 1}},
    qos2_messages=100,
    seed_sessions=10, seed_queued=5, drain_idle=3.0, timeout_s=60.0,
)

TRANSPORTS = ("tcp", "ws")

# Descriptors the bridge may hold per MQTT connection over TCP: one, and a duplicate while a
# write waits for room (bridge/src/tcp.rs says why), which every subscriber of a fan-out can
# be doing at once. A fan-out whose subscribers would not fit under the open-files hard
# limit at that worst case is not run on the bridge, and the report says so.
BRIDGE_FDS_PER_TCP_CONNECTION = 2


def num(n: int) -> str:
    """12 345: thousands set apart with a space, as the report writes them."""
    return f"{n:,}".replace(",", " ")


NAMES = {"tcp": "TCP", "ws": "WS"}


@dataclass
class Case:
    """One row group of the report: the same load on every broker configuration."""

    scenario: str
    label: str
    brokers: list
    # mqtt-bench invocations, each a list of arguments; `{url}` and `{url_tcp}` are
    # replaced by the server's (transport's) address. Figures come from the last one's JSON.
    commands: list
    transport: str = "tcp"
    metrics: list = field(default_factory=list)
    # mqtt-bench fanin --drain-idle for this case, if not the counts' own.
    drain_idle: float | None = None
    # Broker name -> why this case is not run on it.
    skip: dict = field(default_factory=dict)


def fanin_args(qos: int, messages: int, size: int = 64, publishers: int = 4,
               subscribers: int = 1, extra: tuple = ()) -> list:
    return ["fanin", "--url", "{url}", "--qos", str(qos), "--publishers", str(publishers),
            "--subscribers", str(subscribers), "--messages", str(messages), "--size", str(size),
            *extra]


def cases(c: Counts, only: set, open_files: int) -> list:
    """Every case of the scenarios asked for, in report order."""
    out = []
    rate = ("received msg/s", "received_per_s", "higher", "rate")
    if "fanin" in only:
        for t in TRANSPORTS:
            out.append(Case("fanin", NAMES[t], [BRIDGE, MOSQUITTO],
                            [fanin_args(1, c.fanin_messages)], t,
                            [rate, ("published msg/s (acknowledged)", "published_per_s",
                                    "higher", "rate")]))
    if "fanout" in only:
        for n in c.fanout_subscribers:
            per = max(1, c.fanout_deliveries // n)
            for t in TRANSPORTS:
                skip = {}
                if t == "tcp" and n * BRIDGE_FDS_PER_TCP_CONNECTION + 500 > open_files:
                    skip[BRIDGE.name] = (
                        f"the bridge may hold {BRIDGE_FDS_PER_TCP_CONNECTION} descriptors per TCP "
                        f"connection, and the open-files hard limit here ({num(open_files)}) "
                        f"cannot hold {num(n)} of them")
                out.append(Case("fanout", f"{num(n)} subscribers, {num(per)} messages, "
                                f"{NAMES[t]}", [BRIDGE, MOSQUITTO],
                                [fanin_args(1, per, publishers=1, subscribers=n,
                                            extra=("--connect-concurrency", "32"))], t,
                                [("deliveries/s", "received_per_s", "higher", "rate")],
                                skip=skip))
    if "qos0" in only:
        for t in TRANSPORTS:
            out.append(Case("qos0", NAMES[t], [BRIDGE, MOSQUITTO],
                            [fanin_args(0, c.fanin_messages)], t,
                            [("lost %", "lost_pct", "lower", "pct"), rate]))
    if "latency" in only:
        for r in c.rates:
            per = max(1, round(r * c.rate_secs / 4))
            for t in TRANSPORTS:
                out.append(Case("latency", f"{num(r)} msg/s, {NAMES[t]}",
                                [BRIDGE, MOSQUITTO],
                                [fanin_args(1, per, extra=("--rate", str(r)))], t,
                                [("p50", "latency_us.p50", "lower", "us"),
                                 ("p99", "latency_us.p99", "lower", "us"),
                                 ("p99.9", "latency_us.p999", "lower", "us"),
                                 ("publishers' lag behind schedule, max", "max_lag_us", "lower",
                                  "us"),
                                 ("received msg/s", "received_per_s", "higher", "rate")]))
    if "offline" in only:
        out.append(Case("offline", f"{c.offline_sessions} sessions × {num(c.offline_messages)} "
                        "messages", [*BRIDGE_STORES, MOSQUITTO],
                        [["sessions", "--url", "{url}", "--count", str(c.offline_sessions),
                          "--queued-per-session", str(c.offline_messages), "--common-topic",
                          "--publishers", "1", "--inflight", "20"]], "tcp",
                        [("msg/s acknowledged", "published_per_s", "higher", "rate")]))
    if "payload" in only:
        for t in TRANSPORTS:
            out.append(Case("payload", f"QoS 2, 64 B, {NAMES[t]}", [BRIDGE, MOSQUITTO],
                            [fanin_args(2, c.qos2_messages)], t, [rate]))
        for size, by_transport in c.payload_messages.items():
            for t in TRANSPORTS:
                n = by_transport[t]
                out.append(Case("payload", f"QoS 1, {size // 1024} KB × 4 × {num(n)}, {NAMES[t]}",
                                [BRIDGE, MOSQUITTO], [fanin_args(1, n, size=size)], t,
                                [rate, ("received MB/s", "received_mb_s", "higher", "mb")],
                                # mosquitto's WebSocket listener sends a 64 KB message about
                                # once a second (see BENCHMARKS.md): wait that long for it.
                                drain_idle=5.0 if size > 16384 and t == "ws" else None))
    if "seed" in only:
        common = ["--url", "{url}", "--count", str(c.seed_sessions)]
        out.append(Case("seed", f"{num(c.seed_sessions)} sessions × {c.seed_queued} messages",
                        [*SEED_BRIDGES, MOSQUITTO],
                        [["sessions", *common, "--queued-per-session", str(c.seed_queued)],
                         ["sessions", *common, "--queued-per-session", str(c.seed_queued),
                          "--drain"]], "tcp",
                        [("time to drain", "drain_secs", "lower", "s"),
                         ("queueing, msg/s acknowledged", "published_per_s", "higher",
                          "rate")]))
    return out


class Runner:
    """Runs cases, keeps every result, and the log of every command."""

    def __init__(self, args: argparse.Namespace, counts: Counts, log_dir: Path):
        self.args, self.counts, self.log_dir = args, counts, log_dir
        self.binaries = {"bridge": str(args.bridge), "mosquitto": args.mosquitto,
                         "bench": str(args.bench)}
        # (scenario, case label, broker name) -> [figures of each round]
        self.results: dict = {}
        # Runs that failed or whose check failed: sentences for the report.
        self.problems: list = []
        self.log = open(log_dir / "runs.log", "a")

    def note(self, text: str) -> None:
        print(text, flush=True)
        self.log.write(text + "\n")
        self.log.flush()

    def bench(self, argv: list, server: Server, transport: str,
              drain_idle: float | None = None) -> dict:
        """One mqtt-bench run; its JSON summary."""
        argv = [a.replace("{url}", server.url(transport)) for a in argv]
        if argv[0] == "fanin":
            argv += ["--drain-idle", str(drain_idle or self.counts.drain_idle)]
        cmd = [self.binaries["bench"], *argv, "--json"]
        self.log.write("$ " + " ".join(cmd) + "\n")
        self.log.flush()
        try:
            done = subprocess.run(cmd, capture_output=True, text=True,
                                  timeout=self.counts.timeout_s)
        except subprocess.TimeoutExpired as e:
            raise RuntimeError(f"mqtt-bench ran over {self.counts.timeout_s:.0f} s") from e
        self.log.write(done.stdout + done.stderr)
        summary = next((json.loads(line) for line in reversed(done.stdout.splitlines())
                        if line.startswith("{")), None)
        if summary is None:
            # anyhow's report: "Error: ...", "Caused by:", the causes, maybe a backtrace.
            lines = done.stderr.split("Stack backtrace:")[0].split()
            why = " ".join(lines) or "no output"
            raise RuntimeError(f"mqtt-bench exited with {done.returncode}: {why}")
        if "received_per_s" in summary and summary.get("size"):
            summary["received_mb_s"] = summary["received_per_s"] * summary["size"] / 1e6
        return summary

    def record(self, case_key: tuple, broker: str, figures: dict) -> None:
        self.results.setdefault((*case_key, broker), []).append(figures)

    def run_case(self, case: Case, rnd: int) -> None:
        order = case.brokers if rnd % 2 == 0 else list(reversed(case.brokers))
        for broker in order:
            where = f"{case.scenario} / {case.label} / {broker.name} / round {rnd + 1}"
            if broker.name in case.skip:
                if rnd == 0:
                    self.note(f"not run: {where}: {case.skip[broker.name]}")
                continue
            log = self.log_dir / f"{broker.kind}.log"
            try:
                server = start(broker, self.binaries, log)
            except Exception as e:  # noqa: BLE001 - reported, the run goes on
                self.problems.append(f"{where}: {e}")
                self.note(f"FAILED {where}: {e}")
                continue
            try:
                figures = {}
                for argv in case.commands:
                    figures.update(self.bench(argv, server, case.transport, case.drain_idle))
                    if not figures.get("ok", False):
                        break
                if not server.alive():
                    raise RuntimeError(f"{broker.name} exited during the run (see {log})")
            except Exception as e:  # noqa: BLE001
                self.problems.append(f"{where}: {e}")
                self.note(f"FAILED {where}: {e}")
                continue
            finally:
                server.stop()
            if not figures.get("ok", False):
                lost = figures.get("lost", "?")
                self.problems.append(f"{where}: check failed ({lost} messages lost, "
                                     f"{figures.get('duplicates', 0)} duplicates)")
            self.record((case.scenario, case.label), broker.name, figures)
            self.note(f"{where}: " + ", ".join(
                f"{m[0]} {compare_report.lookup(figures, m[1])}" for m in case.metrics))


# ---------------------------------------------------------------------------------------
# Memory: RSS of both brokers, measured side by side (the waits are shared)


MEMORY_METRICS = [
    ("per idle TCP connection", "idle_tcp_kb", "lower", "kb"),
    ("per idle WS connection", "idle_ws_kb", "lower", "kb"),
    ("per idle offline session, 1 subscription", "session_kb", "lower", "kb"),
    ("RSS after start", "start_mb", "lower", "mb_rss"),
    ("peak RSS during the burst", "peak_mb", "lower", "mb_rss"),
    ("RSS after the burst / before", "after_ratio", "lower", "x"),
]


def memory_round(runner: Runner, rnd: int) -> None:
    c, brokers = runner.counts, [BRIDGE, MOSQUITTO]
    order = brokers if rnd % 2 == 0 else list(reversed(brokers))
    figures: dict = {b.name: {} for b in brokers}
    settle = lambda: time.sleep(c.settle_s)  # noqa: E731

    def phase(name: str, body) -> None:
        servers = []
        try:
            for b in order:
                servers.append(start(b, runner.binaries, runner.log_dir / f"{b.kind}.log"))
            body(servers)
        except Exception as e:  # noqa: BLE001
            where = f"memory / {name} / round {rnd + 1}"
            runner.problems.append(f"{where}: {e}")
            runner.note(f"FAILED {where}: {e}")
        finally:
            for s in servers:
                s.stop()

    def idle(transport: str):
        opener = idle_rss.open_tcp if transport == "tcp" else idle_rss.open_ws

        def body(servers):
            before = {s.name: s.rss_kb() for s in servers}
            socks = []
            try:
                for s in servers:
                    for i in range(c.idle):
                        socks.append(opener(s.port(transport), f"idle-{transport}-{i}"))
                settle()
                for s in servers:
                    figures[s.name][f"idle_{transport}_kb"] = (s.rss_kb() - before[s.name]) / c.idle
                    if transport == "tcp":
                        figures[s.name]["start_mb"] = before[s.name] / 1024
            finally:
                for sock in socks:
                    sock.close()
        return body

    def sessions(servers):
        before = {s.name: s.rss_kb() for s in servers}
        for s in servers:
            runner.bench(["sessions", "--url", "{url}", "--count", str(c.sessions)], s, "tcp")
        settle()
        for s in servers:
            figures[s.name]["session_kb"] = (s.rss_kb() - before[s.name]) / c.sessions

    def burst(servers):
        pubs, n, size = c.burst
        before = {s.name: s.rss_kb() for s in servers}
        for s in servers:
            peak = [before[s.name]]
            done = threading.Event()

            def sample(s=s, peak=peak, done=done):
                while not done.wait(0.05):
                    peak[0] = max(peak[0], s.rss_kb())
            sampler = threading.Thread(target=sample)
            sampler.start()
            try:
                result = runner.bench(fanin_args(1, n, size=size, publishers=pubs,
                                                 extra=("--inflight", "32")), s, "tcp")
            finally:
                done.set()
                sampler.join()
            figures[s.name]["peak_mb"] = max(peak[0], s.rss_kb()) / 1024
            if not result.get("ok"):
                runner.problems.append(f"memory / burst / {s.name}: {result.get('lost')} lost")
        settle()
        for s in servers:
            figures[s.name]["after_ratio"] = s.rss_kb() / before[s.name]

    phase("idle TCP", idle("tcp"))
    phase("idle WS", idle("ws"))
    phase("offline sessions", sessions)
    phase("burst", burst)
    for b in brokers:
        runner.record(("memory", "RSS"), b.name, figures[b.name])
        runner.note(f"memory / round {rnd + 1} / {b.name}: " + ", ".join(
            f"{k} {v:.2f}" for k, v in figures[b.name].items()))


# ---------------------------------------------------------------------------------------


def browser(runner: Runner) -> str | None:
    """Runs bench/browser/run.mjs; its output (the table is in it), or None if it failed."""
    cmd = ["node", str(HERE / "browser" / "run.mjs")] + (["--quick"] if runner.args.smoke else [])
    runner.note("$ " + " ".join(cmd))
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    runner.log.write(done.stdout + done.stderr)
    if done.returncode != 0:
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        runner.problems.append(f"browser: run.mjs exited with {done.returncode}: {tail}")
        return None
    return done.stdout


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=__doc__.split("\n\n", 1)[1])
    ap.add_argument("--smoke", action="store_true",
                    help="tiny counts, one round, debug builds, report to a temporary file")
    ap.add_argument("--rounds", type=int, help="rounds per case (default 3; smoke 1)")
    ap.add_argument("--only", help="comma-separated scenarios (default: all but browser)")
    ap.add_argument("--browser", action="store_true",
                    help="also run bench/browser/run.mjs (about 4 minutes more)")
    ap.add_argument("--out", type=Path, help="report path (default BENCHMARKS.md; smoke: a "
                    "temporary file)")
    ap.add_argument("--note", default="", help="a sentence for the report's header")
    ap.add_argument("--bridge", type=Path)
    ap.add_argument("--bench", type=Path, help="the mqtt-bench binary")
    ap.add_argument("--mosquitto", default=shutil.which("mosquitto") or "/usr/sbin/mosquitto")
    ap.add_argument("--no-build", action="store_true", help="(read by compare.sh)")
    ap.add_argument("--render", type=Path, metavar="RESULTS",
                    help="run nothing: write the report again from the results.json a run "
                    "left in its log directory (after a change to the report's text)")
    args = ap.parse_args()
    profile = "debug" if args.smoke else "release"
    args.bridge = args.bridge or ROOT / "target" / profile / "bridge"
    args.bench = args.bench or ROOT / "target" / profile / "mqtt-bench"
    args.rounds = args.rounds or (1 if args.smoke else 3)
    known = ["fanin", "fanout", "qos0", "latency", "memory", "offline", "payload", "seed",
             "browser"]
    only = set(args.only.split(",")) if args.only else set(known) - {"browser"}
    if args.browser:
        only.add("browser")
    if not only <= set(known):
        ap.error(f"--only takes some of {','.join(known)}")
    args.only = only
    return args


def stop_on_sigterm(signum, frame) -> None:
    # As for Ctrl-C: the `finally` blocks stop the brokers started so far.
    raise KeyboardInterrupt


def render_again(args: argparse.Namespace) -> int:
    """`--render`: the report from a saved run, nothing measured."""
    saved = json.loads(args.render.read_text())
    for key in ("smoke", "rounds", "bridge", "mosquitto"):
        setattr(args, key, saved["args"][key])
    args.note = args.note or saved["args"]["note"]
    counts = SMOKE if args.smoke else FULL
    all_cases = cases(counts, set(saved["only"]), saved["open_files"])
    results = {tuple(key): figures for key, figures in saved["results"]}
    out = args.out or ROOT / "BENCHMARKS.md"
    out.write_text(compare_report.render(args, counts, all_cases, MEMORY_METRICS, results,
                                         saved["problems"], saved["machine"],
                                         saved["browser"]))
    print(f"compare: report written to {out} from {args.render}")
    return 0


def main() -> int:
    signal.signal(signal.SIGTERM, stop_on_sigterm)
    args = parse_args()
    if args.render:
        return render_again(args)
    for what, path in (("bridge", args.bridge), ("mqtt-bench", args.bench),
                       ("mosquitto", Path(args.mosquitto))):
        if not path.is_file():
            print(f"compare: no {what} at {path} (bench/compare.sh builds it)", file=sys.stderr)
            return 2
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    counts = SMOKE if args.smoke else FULL
    out = args.out or (Path(tempfile.mkdtemp(prefix="compare-smoke-")) / "BENCHMARKS.md"
                       if args.smoke else ROOT / "BENCHMARKS.md")
    log_dir = Path(tempfile.mkdtemp(prefix="compare-logs-"))
    runner = Runner(args, counts, log_dir)
    machine = compare_report.machine(args)
    started = time.monotonic()
    runner.note(f"compare: logs in {log_dir}; {args.rounds} round(s); "
                f"load average before: {machine['load_before']}")
    open_files = hard if hard != resource.RLIM_INFINITY else 1 << 20
    all_cases = cases(counts, args.only, open_files)
    scenarios = list(dict.fromkeys(c.scenario for c in all_cases))
    for scenario in ["fanin", "fanout", "qos0", "latency", "memory", "offline", "payload",
                     "seed"]:
        for rnd in range(args.rounds):
            if scenario == "memory" and "memory" in args.only:
                memory_round(runner, rnd)
            elif scenario in scenarios:
                for case in (c for c in all_cases if c.scenario == scenario):
                    runner.run_case(case, rnd)
    browser_out = browser(runner) if "browser" in args.only else None
    machine["load_after"] = compare_report.loadavg()
    machine["minutes"] = (time.monotonic() - started) / 60
    report = compare_report.render(args, counts, all_cases, MEMORY_METRICS, runner.results,
                                   runner.problems, machine, browser_out)
    out.write_text(report)
    (log_dir / "results.json").write_text(json.dumps({
        "args": {"smoke": args.smoke, "rounds": args.rounds, "bridge": str(args.bridge),
                 "mosquitto": args.mosquitto, "note": args.note},
        "only": sorted(args.only), "open_files": open_files, "machine": machine,
        "results": [[list(key), figures] for key, figures in runner.results.items()],
        "problems": runner.problems, "browser": browser_out,
    }, indent=1))
    runner.note(f"compare: report written to {out} ({machine['minutes']:.1f} min)")
    runner.log.close()
    for p in runner.problems:
        print(f"problem: {p}", file=sys.stderr)
    if runner.problems:
        print(f"compare: the logs are in {log_dir}", file=sys.stderr)
        return 1
    if args.smoke and args.out is None:
        # A passing smoke run (the test command) leaves nothing behind.
        shutil.rmtree(log_dir, ignore_errors=True)
        shutil.rmtree(out.parent, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
