#!/usr/bin/env bash
# Cluster mode beside one node: what running two bridges through a 3-node NATS JetStream
# cluster (replicas 3) costs, against one bridge alone. Prints a markdown report (the section
# "Cluster mode (NATS JetStream) beside one node" of BENCHMARKS.md) on stdout; progress,
# and where the logs are, on stderr. Exits 1 if a run failed, a check failed (a QoS 1 message
# lost, a session not present), a process died, or a bridge logged an error.
#
#   bench/cluster.sh                   # full run: release builds, then 3 rounds (~5 min)
#   bench/cluster.sh --rounds 1 --only takeover --out /tmp/c.md
#   bench/cluster.sh --smoke           # each scenario once, tiny counts (~20 s)
#   bench/cluster.sh --no-build ...    # use the binaries already in target/release/
#
# What it measures, each in every round (the median of the rounds is reported, with the
# lowest and highest), on four set-ups:
#   one      one bridge, --data none (memory only)
#   one-dir  one bridge, --data DIR (the embedded SQLite store, durability "always")
#   local    the cluster, publishers and subscribers on bridge a
#   cluster  the cluster, publishers on bridge a, subscribers on bridge b
# 1. throughput: `mqtt-bench fanin` fan-in (4 publishers -> 1 subscriber; at QoS 1 also 16 -> 1
#    with the same messages) and fan-out (1 publisher -> 50 subscribers) at QoS 0 and 1,
#    messages/s delivered; with the CPU time each process (and the engine thread of each
#    bridge) used during the run, from /proc, and the messages each bridge dropped (its
#    /metrics);
# 2. 10 000 persistent sessions (`mqtt-bench sessions`, created on bridge a): time to create
#    them, RSS of every process before and after, JetStream's streams, consumers and bytes
#    (nats-server's /jsz), the SQLite file's size;
# 3. takeover: `mqtt-bench takeover`, one persistent session moving a -> b (or back to the same
#    bridge) 50 times, CONNECT -> CONNACK median and p99, with its old connection open (the
#    broker must close it) or after DISCONNECT.
#
# The cluster: 3 nats-server (JetStream, file store in a temporary directory) on loopback,
# client ports CLUSTER_BENCH_NATS_PORT.. (default 14322-14324), routes +2000 (16322-16324),
# monitoring +4000 (18322-18324), so that it never meets the tests' or the demo's servers;
# each bridge joins with `[cluster] nats_url = <the 3 URLs>, node = "a" / "b", namespace =
# "bench", replicas = 3`. Everything it starts it stops (the bridges first), also on Ctrl-C.
# Needs nats-server (Debian's 2.9.10: `apt-get install nats-server`).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

build=1
for arg in "$@"; do
    case "$arg" in
        --no-build) build=0 ;;
        -h|--help) build=0 ;;
    esac
done
if [ "$build" -eq 1 ]; then
    cargo build --release -p bridge -p mqtt-bench >&2
fi
# 10 000 sessions are created 32 at a time, but the fan-out and the bridges' NATS clients
# want descriptors too: the hard limit, as bench/compare.sh.
ulimit -n "$(ulimit -Hn)"

# The Python below does the work, as a job of its own (`set -m`: its own process group, with
# SIGINT not ignored) so that a signal to this script reaches it however `python3` is
# wrapped (a pyenv shim is a process of its own): it stops what it started, then exits.
set -m
python3 - "$@" <<'PYTHON' &
import argparse
import datetime
import json
import os
import platform
import re
import selectors
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path.cwd()
BRIDGE = ROOT / "target/release/bridge"
BENCH = ROOT / "target/release/mqtt-bench"
NATS = shutil.which("nats-server") or "/usr/sbin/nats-server"
NATS_PORT = int(os.environ.get("CLUSTER_BENCH_NATS_PORT", "14322"))
ROUTE_PORT, MONITOR_PORT = NATS_PORT + 2000, NATS_PORT + 4000
NAMESPACE = "bench"
TICK = os.sysconf("SC_CLK_TCK")
START_TIMEOUT_S = 60.0
# The bridges' logs: warnings and errors, and the cluster's notes on sessions changing hands
# ("session record taken by another node", "holder ... did not answer", adoptions).
RUST_LOG = "warn,cluster=info,broker::engine::cluster=info"
# Lines of the logs the report lists: the bridges' warnings and errors, their notes on a
# session lost to another node, and nats-server's errors (but for the routes not yet up while
# the three servers start together).
NOTABLE = {"bridge": re.compile(r"\b(WARN|ERROR)\b|taken by another node|did not answer|adopted"),
           "nats": re.compile(r"\[(ERR|FTL)\]")}
BENIGN = re.compile(r"Error trying to connect to route")
RUN_TIMEOUT_S = 600.0

SETUPS = {
    "one": "one bridge, `--data none`",
    "one-dir": "one bridge, SQLite store",
    "local": "cluster, all on bridge a",
    "cluster": "cluster, a → b",
}


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="bench/cluster.sh",
                                description="cluster mode beside one node (see the header)")
    p.add_argument("--rounds", type=int, default=None, help="rounds (default 3; --smoke 1)")
    p.add_argument("--smoke", action="store_true", help="tiny counts, one round")
    p.add_argument("--no-build", action="store_true", help="(read by the shell part)")
    p.add_argument("--only", default="throughput,sessions,takeover",
                   help="comma-separated: throughput, sessions, takeover")
    p.add_argument("--out", type=Path, help="also write the report to this file")
    args = p.parse_args(sys.argv[1:])
    if args.rounds is None:
        args.rounds = 1 if args.smoke else 3
    args.only = set(args.only.split(","))
    return args


ARGS = parse_args()
if ARGS.smoke:
    COUNTS = dict(fanin=500, fanout_subs=10, fanout=100, sessions=200, takeover=5, settle=1.0)
else:
    # The counts of bench/compare.py's sections 1 and 2, so that the one-bridge figures can be
    # set beside BENCHMARKS.md's.
    COUNTS = dict(fanin=20_000, fanout_subs=50, fanout=4_000, sessions=10_000, takeover=50,
                  settle=3.0)
WORK = Path(tempfile.mkdtemp(prefix="cluster-bench-"))
PROBLEMS: list = []


# --- processes -----------------------------------------------------------------------------

class Proc:
    """A process this script started: a bridge or a nats-server."""
    running: list = []

    def __init__(self, name: str, argv: list, logfile: Path, env=None, stdout_pipe=False):
        self.name, self.log = name, logfile
        with open(logfile, "ab") as err:
            self.popen = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE if stdout_pipe else err, stderr=err,
                env={**os.environ, **(env or {})}, start_new_session=True)
        self.pid = self.popen.pid
        Proc.running.append(self)

    def alive(self) -> bool:
        return self.popen.poll() is None

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(timeout=15)
            except subprocess.TimeoutExpired:
                log(f"    {self.name} did not stop within 15 s: SIGKILL")
                self.popen.kill()
                self.popen.wait()
        if self in Proc.running:
            Proc.running.remove(self)

    def rss_kb(self) -> int:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        return 0


def stop_everything() -> None:
    # The bridges first, while NATS still takes what they write as they stop.
    for p in sorted(list(Proc.running), key=lambda p: not p.name.startswith("bridge")):
        p.stop()


def on_signal(signum, frame):
    raise SystemExit(130)


signal.signal(signal.SIGTERM, on_signal)
signal.signal(signal.SIGHUP, on_signal)
# Also when started in the background, where the shell leaves SIGINT ignored.
signal.signal(signal.SIGINT, signal.default_int_handler)


def first_line(proc: subprocess.Popen, timeout: float) -> str:
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        if not sel.select(timeout):
            return ""
    return proc.stdout.readline().decode().strip()


class Bridge(Proc):
    def __init__(self, name: str, data: str, cluster_node: str | None = None):
        tmp = Path(tempfile.mkdtemp(prefix=f"{name.replace(' ', '-')}-", dir=WORK))
        config = tmp / "bridge.toml"
        text = "[broker]\nmax_connections_per_address = 20000\n"
        if cluster_node is not None:
            urls = ",".join(f"nats://127.0.0.1:{NATS_PORT + i}" for i in range(3))
            text += (f'\n[cluster]\nnats_url = "{urls}"\nnode = "{cluster_node}"\n'
                     f'namespace = "{NAMESPACE}"\nreplicas = 3\n')
        config.write_text(text)
        self.data_dir = None if data == "none" else tmp / "data"
        super().__init__(
            name, [str(BRIDGE), "--http", "127.0.0.1:0", "--mqtt", "127.0.0.1:0",
                   "--data", "none" if self.data_dir is None else str(self.data_dir),
                   "--config", str(config)],
            WORK / f"{name.replace(' ', '-')}.log", env={"RUST_LOG": RUST_LOG}, stdout_pipe=True)
        line = first_line(self.popen, START_TIMEOUT_S)
        if not line.startswith("bridge listening:"):
            self.stop()
            raise RuntimeError(f"{name} did not start (log {self.log}): {line!r}")
        parts = dict(p.split("=", 1) for p in line.split()[2:] if "=" in p)
        self.url = f"mqtt://{parts['mqtt']}"
        self.http = parts["http"]

    def dropped(self) -> dict:
        """`mqtt_bridge_messages_dropped_total` by reason, from its `/metrics`."""
        with urllib.request.urlopen(self.http + "metrics", timeout=5) as r:
            text = r.read().decode()
        out = {}
        for m in re.finditer(r'^mqtt_bridge_messages_dropped_total\{reason="([^"]+)"\} (\S+)$',
                             text, re.M):
            out[m.group(1)] = float(m.group(2))
        return out

    def threads(self) -> dict:
        """CPU ticks of each thread, summed by thread name."""
        out: dict = {}
        for task in Path(f"/proc/{self.pid}/task").iterdir():
            try:
                stat = (task / "stat").read_text()
            except OSError:
                continue
            comm = stat[stat.index("(") + 1:stat.rindex(")")]
            fields = stat[stat.rindex(")") + 2:].split()
            out[comm] = out.get(comm, 0) + int(fields[11]) + int(fields[12])
        return out


def port_in_use(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0


def http_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=5) as r:
        return json.loads(r.read())


class Nats:
    """Three nats-server with JetStream, routed to each other, fresh stores."""

    def __init__(self, tag: str):
        self.dir = Path(tempfile.mkdtemp(prefix=f"nats-{tag}-", dir=WORK))
        self.servers = []
        try:
            self._start()
        except BaseException:
            self.stop()
            raise

    def _start(self) -> None:
        for i in range(3):
            store = self.dir / f"n{i + 1}"
            store.mkdir(parents=True)
            routes = ",".join(f"nats://127.0.0.1:{ROUTE_PORT + j}" for j in range(3) if j != i)
            self.servers.append(Proc(
                f"nats n{i + 1}",
                [NATS, "-a", "127.0.0.1", "-p", str(NATS_PORT + i), "-n", f"n{i + 1}", "-js",
                 "-sd", str(store), "--cluster_name", "cluster-bench", "--cluster",
                 f"nats://127.0.0.1:{ROUTE_PORT + i}", "--routes", routes,
                 "-m", str(MONITOR_PORT + i)],
                self.dir / f"n{i + 1}.log"))
        deadline = time.monotonic() + START_TIMEOUT_S
        for i, s in enumerate(self.servers):
            while True:
                try:
                    if http_json(f"http://127.0.0.1:{MONITOR_PORT + i}/healthz").get(
                            "status") == "ok":
                        break
                except Exception:  # noqa: BLE001 - not up yet
                    pass
                if not s.alive():
                    raise RuntimeError(f"{s.name} exited while starting (log {s.log})")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{s.name} not healthy within {START_TIMEOUT_S:.0f} s")
                time.sleep(0.2)

    def jsz(self, i: int) -> dict:
        return http_json(f"http://127.0.0.1:{MONITOR_PORT + i}/jsz?accounts=true&streams=true"
                         "&consumers=true")

    def store_bytes(self, i: int) -> int:
        return sum(f.stat().st_size for f in (self.dir / f"n{i + 1}").rglob("*") if f.is_file())

    def stop(self) -> None:
        for s in self.servers:
            s.stop()


class Env:
    """What one set-up runs: the processes, where publishers and subscribers connect."""

    def __init__(self, setup: str, tag: str, nats: "Nats | None" = None,
                 bridges: "list | None" = None):
        self.setup, self.nats = setup, nats
        if bridges is not None:
            self.bridges = bridges
        elif setup == "one":
            self.bridges = [Bridge(f"bridge one {tag}", "none")]
        elif setup == "one-dir":
            self.bridges = [Bridge(f"bridge one-dir {tag}", "dir")]
        self.pub_url = self.bridges[0].url
        self.sub_url = self.bridges[-1].url if setup == "cluster" else self.pub_url

    def procs(self) -> list:
        return [*self.bridges, *(self.nats.servers if self.nats else [])]

    def check_alive(self) -> None:
        for p in self.procs():
            if not p.alive():
                raise RuntimeError(f"{p.name} exited (status {p.popen.returncode}, log {p.log})")


def start_cluster(tag: str) -> tuple:
    """Three NATS servers and bridges a and b joined through them."""
    nats, bridges = Nats(tag), []
    try:
        for node in "ab":
            bridges.append(Bridge(f"bridge {node} {tag}", "none", cluster_node=node))
    except BaseException:
        stop_env(nats, bridges)
        raise
    return nats, bridges


def stop_env(nats, bridges) -> None:
    for b in bridges:
        b.stop()
    if nats:
        nats.stop()


# --- measuring -----------------------------------------------------------------------------

def proc_ticks(pid: int) -> int:
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2:].split()
    return int(fields[11]) + int(fields[12])


def machine_ticks() -> tuple:
    cpu = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    values = [int(v) for v in cpu]
    return sum(values), values[3] + values[4]  # total, idle + iowait


def snapshot(env: Env) -> dict:
    snap = {"machine": machine_ticks()}
    for p in env.procs():
        snap[p.name] = proc_ticks(p.pid)
        if isinstance(p, Bridge):
            snap[p.name + " threads"] = p.threads()
    return snap


def cpu_use(env: Env, before: dict, after: dict, wall: float, bench_s: float) -> dict:
    """Percent of one core each process (and each bridge's engine thread) used."""
    out = {"mqtt-bench": 100 * bench_s / wall}
    for p in env.procs():
        key = short(p.name)
        out[key] = 100 * (after[p.name] - before[p.name]) / TICK / wall
        if isinstance(p, Bridge):
            tb, ta = before[p.name + " threads"], after[p.name + " threads"]
            engine = ta.get("broker-engine", 0) - tb.get("broker-engine", 0)
            out[key + " engine"] = 100 * engine / TICK / wall
    total = after["machine"][0] - before["machine"][0]
    idle = after["machine"][1] - before["machine"][1]
    out["machine busy"] = 100 * (1 - idle / total) if total else 0.0
    return out


def short(name: str) -> str:
    """`bridge a r1` -> `bridge a`; `nats n2` stays."""
    parts = name.split()
    if parts[0] == "bridge":
        return "bridge" if parts[1] in ("one", "one-dir") else f"bridge {parts[1]}"
    return name


class Sampler(threading.Thread):
    """Snapshots of every process's CPU time, every 100 ms, while a run goes on."""

    def __init__(self, env: Env):
        super().__init__(daemon=True)
        self.env, self.samples, self.done = env, [], threading.Event()

    def run(self) -> None:
        while not self.done.wait(0.1):
            try:
                self.samples.append((time.monotonic(), snapshot(self.env)))
            except OSError:  # a process gone: the run will say so
                pass


def bench(argv: list, env: Env | None = None) -> dict:
    """One mqtt-bench run: its JSON summary and the CPU use of every process during it.

    The CPU figures cover the run up to its last delivery: a `fanin` run short of its count
    ends after `--drain-idle` seconds without a message, and those seconds (the processes
    idle, the machine busy with whatever else runs) are cut off, using the snapshot taken
    just before they began."""
    cmd = [str(BENCH), *argv, "--json"]
    out_path = WORK / "bench.out"
    with open(WORK / "runs.log", "a") as runs:
        runs.write("$ " + " ".join(cmd) + "\n")
    before = snapshot(env) if env else None
    bridges = [b for b in (env.bridges if env else [])]
    dropped_before = {short(b.name): b.dropped() for b in bridges}
    sampler = Sampler(env) if env else None
    started = time.monotonic()
    with open(out_path, "wb") as out:
        p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
    if sampler:
        sampler.start()
    timer = threading.Timer(RUN_TIMEOUT_S, p.kill)
    timer.start()
    try:
        _, status, usage = os.wait4(p.pid, 0)
    finally:
        timer.cancel()
        if sampler:
            sampler.done.set()
            sampler.join()
    p.returncode = os.waitstatus_to_exitcode(status)
    ended = time.monotonic()
    after = snapshot(env) if env else None
    text = out_path.read_text()
    with open(WORK / "runs.log", "a") as runs:
        runs.write(text)
    summary = next((json.loads(line) for line in reversed(text.splitlines())
                    if line.startswith("{")), None)
    if summary is None:
        why = " ".join(text.split("Stack backtrace:")[0].split()[-40:]) or "no output"
        raise RuntimeError(f"mqtt-bench exited with {p.returncode}: {why}")
    wall = ended - started
    if env:
        env.check_alive()
        if summary.get("command") == "fanin" and summary["received"] < summary["expected"]:
            idle = float(argv[argv.index("--drain-idle") + 1])
            earlier = [(t, snap) for t, snap in sampler.samples if t <= ended - idle]
            if earlier:
                at, after = earlier[-1]
                wall = at - started
        summary["cpu"] = cpu_use(env, before, after, wall, usage.ru_utime + usage.ru_stime)
        # Messages the bridges' engines dropped during the run (QoS 0 to a full connection:
        # `slow_qos0`), by bridge; what a QoS 0 run lost beyond these was lost before reaching
        # an engine.
        summary["dropped"] = {}
        for b in bridges:
            now, was = b.dropped(), dropped_before[short(b.name)]
            summary["dropped"][short(b.name)] = sum(now.values()) - sum(was.values())
            summary["dropped"][short(b.name) + " by reason"] = {
                k: v - was.get(k, 0) for k, v in now.items() if v - was.get(k, 0)}
    summary["wall_s"] = wall
    return summary


RESULTS: dict = {}  # (section, case, setup) -> [figures of each round]


def record(section: str, case: str, setup: str, figures: dict) -> None:
    RESULTS.setdefault((section, case, setup), []).append(figures)


def attempt(where: str, body) -> None:
    try:
        body()
    except (KeyboardInterrupt, SystemExit):
        raise
    except Exception as e:  # noqa: BLE001 - reported, the run goes on
        PROBLEMS.append(f"{where}: {e}")
        log(f"FAILED {where}: {e}")


# --- the scenarios -------------------------------------------------------------------------

def throughput_cases() -> list:
    c = COUNTS
    fanin = ["--publishers", "4", "--subscribers", "1", "--messages", str(c["fanin"])]
    fanout = ["--publishers", "1", "--subscribers", str(c["fanout_subs"]), "--messages",
              str(c["fanout"]), "--connect-concurrency", "32"]
    return [
        (f"fan-in QoS 0: 4 publishers × {num(c['fanin'])} → 1 subscriber", ["--qos", "0", *fanin]),
        (f"fan-in QoS 1: 4 publishers × {num(c['fanin'])} → 1 subscriber", ["--qos", "1", *fanin]),
        # The same messages from 4 times as many publishers (4 times as many in flight): whether
        # the rate follows the window (a round-trip bound) or not (a CPU bound).
        (f"fan-in QoS 1: 16 publishers × {num(c['fanin'] // 4)} → 1 subscriber",
         ["--qos", "1", "--publishers", "16", "--subscribers", "1", "--messages",
          str(c["fanin"] // 4)]),
        (f"fan-out QoS 0: 1 publisher × {num(c['fanout'])} → {c['fanout_subs']} subscribers",
         ["--qos", "0", *fanout]),
        (f"fan-out QoS 1: 1 publisher × {num(c['fanout'])} → {c['fanout_subs']} subscribers",
         ["--qos", "1", *fanout]),
    ]


def short_case(case: str) -> str:
    """`fan-in QoS 1: 16 publishers × 5 000 → 1 subscriber` -> `fan-in QoS 1, 16 → 1`."""
    kind, rest = case.split(":", 1)
    counts = re.findall(r"(\d+) (?:publisher|subscriber)", rest)
    return f"{kind}, {counts[0]} → {counts[1]}" if len(counts) == 2 else kind


def fanin_argv(env: Env, extra: list) -> list:
    argv = ["fanin", "--url", env.pub_url, *extra, "--size", "64", "--drain-idle", "3"]
    if env.sub_url != env.pub_url:
        argv += ["--sub-url", env.sub_url]
    return argv


def throughput_round(rnd: int) -> None:
    order = list(SETUPS) if rnd % 2 == 0 else list(reversed(SETUPS))
    cluster = None
    try:
        for case, extra in throughput_cases():
            for setup in order:
                where = f"throughput / {case} / {setup} / round {rnd + 1}"

                def body(case=case, extra=extra, setup=setup, where=where):
                    nonlocal cluster
                    if setup in ("local", "cluster"):
                        if cluster is None:
                            cluster = start_cluster(f"r{rnd + 1}")
                        env = Env(setup, "", *cluster)
                        figures = bench(fanin_argv(env, extra), env)
                        figures["leaders"] = leaders(cluster[0])
                    else:
                        env = Env(setup, f"r{rnd + 1}")
                        try:
                            figures = bench(fanin_argv(env, extra), env)
                        finally:
                            stop_env(None, env.bridges)
                    record("throughput", case, setup, figures)
                    if not figures["ok"] or (figures["qos"] > 0 and figures["duplicates"]):
                        PROBLEMS.append(f"{where}: {figures['lost']} acknowledged messages "
                                        f"lost, {figures['duplicates']} duplicates")
                    log(f"{where}: {figures['received_per_s']:.0f} msg/s received, lost "
                        f"{figures['lost']}, duplicates {figures['duplicates']}; CPU % of a core: "
                        + ", ".join(f"{k} {v:.0f}" for k, v in figures["cpu"].items()))

                attempt(where, body)
    finally:
        if cluster:
            stop_env(*cluster)


def rss_all(env: Env) -> dict:
    return {short(p.name): p.rss_kb() for p in env.procs()}


def jsz_summary(nats: Nats) -> dict:
    out = {"servers": []}
    for i in range(3):
        j = nats.jsz(i)
        streams = []
        for account in j.get("account_details") or []:
            for s in account.get("stream_detail") or []:
                state = s.get("state", {})
                streams.append({"name": s["name"], "messages": state.get("messages", 0),
                                "bytes": state.get("bytes", 0),
                                "last_seq": state.get("last_seq", 0),
                                "consumers": state.get("consumer_count", 0),
                                "leader": (s.get("cluster") or {}).get("leader")})
        out["servers"].append({"streams": j.get("streams", 0), "consumers": j.get("consumers", 0),
                               "messages": j.get("messages", 0), "bytes": j.get("bytes", 0),
                               "storage": j.get("storage", 0), "memory": j.get("memory", 0),
                               "disk": nats.store_bytes(i), "stream_detail": streams})
    return out


def leaders(nats: Nats) -> dict:
    """The server leading each stream, as n1 sees it."""
    return {s["name"]: s["leader"] for s in jsz_summary(nats)["servers"][0]["stream_detail"]}


def sessions_round(rnd: int) -> None:
    order = ["one", "one-dir", "cluster"]
    if rnd % 2:
        order.reverse()
    n = COUNTS["sessions"]
    for setup in order:
        where = f"sessions / {setup} / round {rnd + 1}"

        def body(setup=setup, where=where):
            nats, bridges = None, None
            if setup == "cluster":
                nats, bridges = start_cluster(f"s{rnd + 1}")
                env = Env("cluster", "", nats, bridges)
            else:
                env = Env(setup, f"s{rnd + 1}")
            try:
                time.sleep(COUNTS["settle"])
                before = {"rss": rss_all(env)}
                if nats:
                    before["jsz"] = jsz_summary(nats)
                figures = bench(["sessions", "--url", env.pub_url, "--count", str(n)], env)
                time.sleep(COUNTS["settle"])
                env.check_alive()
                after = {"rss": rss_all(env)}
                if nats:
                    after["jsz"] = jsz_summary(nats)
                dir_ = env.bridges[0].data_dir
                if dir_ is not None:
                    after["sqlite_bytes"] = sum(f.stat().st_size for f in dir_.rglob("*")
                                                if f.is_file())
                figures.update(before=before, after=after)
                if nats:
                    figures["leaders"] = leaders(nats)
                record("sessions", "sessions", setup, figures)
                log(f"{where}: created {n} in {figures['create_secs']:.2f} s; RSS kB before "
                    f"{before['rss']}, after {after['rss']}")
            finally:
                stop_env(nats, env.bridges)

        attempt(where, body)


def takeover_round(rnd: int) -> None:
    order = ["one", "one-dir", "local", "cluster"]
    if rnd % 2:
        order.reverse()
    cluster = None
    try:
        for setup in order:
            for disconnect_first in (False, True):
                mode = "disconnect" if disconnect_first else "open"
                where = f"takeover / {setup} / {mode} / round {rnd + 1}"

                def body(setup=setup, disconnect_first=disconnect_first, mode=mode,
                         where=where):
                    nonlocal cluster
                    if setup in ("local", "cluster"):
                        if cluster is None:
                            cluster = start_cluster(f"t{rnd + 1}")
                        env = Env(setup, "", *cluster)
                    else:
                        env = Env(setup, f"t{rnd + 1}")
                    try:
                        argv = ["takeover", "--url", env.pub_url, "--to", env.sub_url,
                                "--runs", str(COUNTS["takeover"]), "--client-id",
                                f"bench-takeover-{setup}-{mode}"]
                        if disconnect_first:
                            argv.append("--disconnect-first")
                        figures = bench(argv, env)
                    finally:
                        if setup not in ("local", "cluster"):
                            stop_env(None, env.bridges)
                    record("takeover", mode, setup, figures)
                    if not figures["ok"]:
                        PROBLEMS.append(f"{where}: {figures['not_present']} CONNACKs without "
                                        f"session present, {figures['left_open']} old "
                                        "connections left open")
                    log(f"{where}: there {figures['there_us']}, back {figures['back_us']}")

                attempt(where, body)
    finally:
        if cluster:
            stop_env(*cluster)


# --- the report ----------------------------------------------------------------------------

def num(n: float) -> str:
    return f"{n:,.0f}".replace(",", " ")


def lookup(d: dict, path: str):
    for part in path.split("."):
        if not isinstance(d, dict) or part not in d:
            return None
        d = d[part]
    return d


def values(section: str, case: str, setup: str, path: str) -> list:
    return [v for v in (lookup(f, path) for f in RESULTS.get((section, case, setup), []))
            if v is not None]


def med(vs: list):
    return statistics.median(vs) if vs else None


def cell(vs: list, fmt) -> str:
    if not vs:
        return "–"
    if len(vs) == 1:
        return f"**{fmt(vs[0])}**"
    return f"**{fmt(med(vs))}** ({fmt(min(vs))} – {fmt(max(vs))})"


def kb(v: float) -> str:
    return f"{v / 1024:.1f} MB" if v >= 1024 else f"{v:.0f} kB"


def size(v: float) -> str:
    return f"{v / 1e6:.1f} MB" if v >= 1e6 else f"{v / 1e3:.1f} kB"


def ms_us(v: float) -> str:
    return f"{v / 1000:.2f} ms"


def sh(cmd: list) -> str:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=30).stdout.strip()
    except Exception:  # noqa: BLE001
        return "?"


def machine() -> str:
    model = next((l.split(":", 1)[1].strip() for l in
                  Path("/proc/cpuinfo").read_text().splitlines() if l.startswith("model name")),
                 "?")
    mem = next((int(l.split()[1]) for l in Path("/proc/meminfo").read_text().splitlines()
                if l.startswith("MemTotal")), 0)
    return f"{model}, {os.cpu_count()} cores; kernel {platform.release()}; {mem / 2**20:.0f} GB RAM"


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


CPU_NOTE = (
    "Percent of one core used over each run (from the start of the load generator to the last "
    "delivery: a QoS 0 run that lost messages waits 3 s for stragglers, which are left out), "
    "median of the rounds (the machine has 2 cores: 200 %): the load generator's own CPU time from `wait4`, every other process's from "
    "`/proc/PID/stat`, the bridges' engine thread (`broker-engine`, included in its bridge's "
    "figure) from `/proc/PID/task/*/stat`. \"machine\" is the busy share of the whole machine "
    "from `/proc/stat` (100 % = both cores busy), other people's work included. \"CPU per "
    "delivery\": the CPU time of the brokers' processes (bridges and nats-servers, not the load "
    "generator) over the messages delivered (the sessions created, in the sessions section). \"MSGS leader\": the server leading the message stream (`BENCH_MSGS`, where every QoS 1 "
    "message is stored) in each round, and the KV bucket's leader after the slash.")
CPU_KEYS = ["mqtt-bench", "bridge", "bridge engine", "bridge a", "bridge a engine", "bridge b",
            "bridge b engine", "nats n1", "nats n2", "nats n3", "machine busy"]


def brokers_cpu_s(figures: dict) -> float:
    """CPU seconds of the bridges and nats-servers (engine threads counted in their bridge)."""
    percent = sum(v for k, v in figures["cpu"].items()
                  if k.startswith(("bridge", "nats")) and not k.endswith("engine"))
    return percent / 100 * figures["wall_s"]


def cpu_table(rows: list) -> list:
    """rows: (label, section, case); one line per set-up that ran it."""
    out = ["| case | set-up | " + " | ".join(CPU_KEYS) + " | CPU per delivery | MSGS leader |",
           "|---|---|" + "---|" * (len(CPU_KEYS) + 2)]
    for label, section, case in rows:
        for s in SETUPS:
            cells = []
            for k in CPU_KEYS:
                v = med(values(section, case, s, f"cpu.{k}"))
                cells.append("" if v is None else f"{v:.0f} %")
            leaders = [f.get("leaders") for f in RESULTS.get((section, case, s), [])]
            leaders = ", ".join(f"{l.get('BENCH_MSGS', '?')}/{l.get('KV_BENCH_SESSIONS', '?')}"
                                for l in leaders if l)
            per_msg = med([brokers_cpu_s(f) / (f.get("received") or f["count"]) * 1e6
                           for f in RESULTS.get((section, case, s), [])
                           if f.get("received") or f.get("count")])
            if any(cells):
                out.append(f"| {label} | {s} | " + " | ".join(cells)
                           + f" | {'' if per_msg is None else f'{per_msg:.1f} µs'} | {leaders} |")
    return out


def render(started: datetime.datetime, minutes: float, load_before: str, load_during: list,
           log_problems: list) -> str:
    c, rounds = COUNTS, ARGS.rounds
    commit = sh(["git", "rev-parse", "--short=12", "HEAD"])
    dirty = " (with uncommitted changes in the working tree)" if sh(
        ["git", "status", "--porcelain", "--untracked-files=no"]) else ""
    urls = ",".join(f"nats://127.0.0.1:{NATS_PORT + i}" for i in range(3))
    out = [
        "## Cluster mode (NATS JetStream) beside one node",
        "",
        f"Written by `bench/cluster.sh` on {started:%Y-%m-%d %H:%M} UTC ({minutes:.1f} minutes, "
        f"{rounds} round(s)). Every figure is the median of the rounds, with the lowest and "
        "highest in parentheses; set-ups alternate their order from one round to the next.",
        "",
        f"- Machine: {machine()}",
        f"- Load average (1, 5, 15 min) before: {load_before}; at the end of each round: "
        + "; ".join(load_during) + f"; after: {loadavg()}",
        f"- {sh(['rustc', '--version'])}; bridge at commit {commit}{dirty}, release build",
        f"- {sh([NATS, '--version'])} (3 servers, JetStream file store, loopback)",
        "",
        "Set-ups: **one** = one bridge, `--data none`; **one-dir** = one bridge with its "
        "embedded store (`--data DIR`, durability `always`); **local** = two bridges of the "
        "cluster, publishers and subscribers both on bridge a; **cluster** = publishers on "
        "bridge a, subscribers on bridge b. Every bridge: `bridge --http 127.0.0.1:0 --mqtt "
        "127.0.0.1:0 --data none|DIR --config bridge.toml` (`[broker] "
        "max_connections_per_address = 20000`, the rest at its defaults: one worker thread "
        "plus the engine thread); the cluster's add",
        "",
        "```toml",
        "[cluster]",
        f'nats_url = "{urls}"',
        'node = "a"            # "b" for the second bridge',
        f'namespace = "{NAMESPACE}"',
        "replicas = 3",
        "```",
        "",
        "and three `nats-server -js -sd DIR --cluster_name cluster-bench --cluster ... "
        "--routes ...` (fresh stores for each round). Everything, the load generator "
        "included, shares the machine's cores.",
        "",
    ]
    if "throughput" in ARGS.only:
        out += [
            "### Throughput: messages/s delivered",
            "",
            "`mqtt-bench fanin`, 64 B payloads, QoS 1 window 64 per publisher (QoS 0: written "
            "64 per write), clean sessions; received msg/s over the time from the first "
            "publication to the last delivery (fan-out: deliveries/s, every message to every "
            "subscriber). QoS 1 runs check that every acknowledged message arrived; QoS 0 runs "
            "end 3 s after the last delivery and count what never came; of what never came, "
            "what the bridges' engines dropped is counted from their `/metrics` "
            "(`mqtt_bridge_messages_dropped_total`, any reason), the rest was lost before "
            "reaching an engine.",
            "",
            "| case | " + " | ".join(f"**{k}**: {v}" for k, v in SETUPS.items())
            + " | cluster / one |",
            "|---|" + "---|" * (len(SETUPS) + 1),
        ]
        for case, _ in throughput_cases():
            rate = {s: values("throughput", case, s, "received_per_s") for s in SETUPS}
            ratio = (f"{med(rate['cluster']) / med(rate['one']):.2f}"
                     if rate["cluster"] and rate["one"] else "–")
            out.append(f"| {case} | " + " | ".join(cell(rate[s], num) for s in SETUPS)
                       + f" | {ratio} |")
            if case.startswith("fan-in QoS 0") or case.startswith("fan-out QoS 0"):
                lost = {s: values("throughput", case, s, "lost_pct") for s in SETUPS}
                out.append(f"| ↳ QoS 0 lost % | " + " | ".join(
                    cell(lost[s], lambda v: f"{v:.2f} %") for s in SETUPS) + " | |")
                engine = {s: [sum(v for k, v in f["dropped"].items() if not k.endswith("reason"))
                              for f in RESULTS.get(("throughput", case, s), [])]
                          for s in SETUPS}
                out.append(f"| ↳ of those, dropped by a bridge's engine (`slow_qos0`) | "
                           + " | ".join(cell(engine[s], num) for s in SETUPS) + " | |")
        out += [
            "",
            "Commands (`--sub-url` only for **cluster**; A, B: the bridges' MQTT addresses):",
            "",
            "```sh",
        ]
        for case, extra in throughput_cases():
            out.append("mqtt-bench fanin --url mqtt://A " + " ".join(extra)
                       + " --size 64 --drain-idle 3 [--sub-url mqtt://B] --json")
        out += ["```", "", "#### CPU during the throughput runs", "", CPU_NOTE, ""]
        out += cpu_table([(short_case(case), "throughput", case)
                          for case, _ in throughput_cases()])
        out.append("")
    if "sessions" in ARGS.only:
        n = c["sessions"]
        setups = ["one", "one-dir", "cluster"]
        out += [
            f"### {num(n)} persistent sessions",
            "",
            f"`mqtt-bench sessions --url mqtt://A --count {n}`: {num(n)} clients connect with "
            "clean session 0 (32 at a time), subscribe to `bench/s/<i>` at QoS 1 and "
            "disconnect; all of them on bridge a (**cluster**: bridge b holds none of them, but "
            "keeps an index of the cluster's sessions). RSS (VmRSS) of each process "
            f"{COUNTS['settle']:.0f} s before and after; JetStream figures from "
            f"`http://127.0.0.1:{MONITOR_PORT}/jsz?accounts=true&streams=true&consumers=true` "
            "(and its two peers); \"on disk\" is the size of the files in each server's store "
            "directory.",
            "",
            "| figure | " + " | ".join(f"**{s}**" for s in setups) + " |",
            "|---|" + "---|" * len(setups),
        ]
        get = lambda s, path: values("sessions", "sessions", s, path)  # noqa: E731
        out.append("| time to create (s) | " + " | ".join(
            cell(get(s, "create_secs"), lambda v: f"{v:.2f} s") for s in setups) + " |")
        out.append("| sessions created per second | " + " | ".join(
            cell([n / v for v in get(s, "create_secs")], num) for s in setups) + " |")
        for proc in ["bridge", "bridge a", "bridge b", "nats n1", "nats n2", "nats n3"]:
            b = {s: get(s, f"before.rss.{proc}") for s in setups}
            a = {s: get(s, f"after.rss.{proc}") for s in setups}
            if not any(a.values()):
                continue
            out.append(f"| RSS of {proc}, before → after | " + " | ".join(
                (f"{kb(med(b[s]))} → {cell(a[s], kb)}" if a[s] else "–") for s in setups) + " |")
            per = {s: [(x - y) * 1024 / n for x, y in zip(a[s], b[s])] for s in setups}
            out.append(f"| ↳ {proc}: growth per session | " + " | ".join(
                cell(per[s], lambda v: f"{v:.0f} B") for s in setups) + " |")
        total = {s: [sum(v for k, v in f["after"]["rss"].items()) -
                     sum(v for k, v in f["before"]["rss"].items())
                     for f in RESULTS.get(("sessions", "sessions", s), [])] for s in setups}
        out.append("| all processes: RSS growth per session | " + " | ".join(
            cell([v * 1024 / n for v in total[s]], lambda v: f"{v:.0f} B") for s in setups)
            + " |")
        out.append("| SQLite files after | " + " | ".join(
            cell(get(s, "after.sqlite_bytes"), size) for s in setups) + " |")
        out += ["", "CPU while the sessions were created (as in the throughput section):", ""]
        out += cpu_table([("sessions", "sessions", "sessions")])
        out.append("")
        cl = RESULTS.get(("sessions", "sessions", "cluster"), [])
        if cl:
            jsz = lambda f, when, key: [v[key] for v in f[when]["jsz"]["servers"]]  # noqa: E731
            rows = [("streams (each on all 3 servers)", "streams", max, num),
                    ("consumers (all servers)", "consumers", sum, num),
                    ("messages, per server", "messages", max, num),
                    ("stream bytes, per server", "bytes", max, size),
                    ("storage (jsz), per server", "storage", max, size),
                    ("files in the store directory, per server", "disk", max, size)]
            out += ["JetStream, cluster set-up, before and after creating the sessions (from "
                    "the three servers' `/jsz`; median of the rounds):", "",
                    "| figure | before | after | growth per session |", "|---|---|---|---|"]
            for label, key, fold, fmt in rows:
                b = med([fold(jsz(f, "before", key)) for f in cl])
                a = [fold(jsz(f, "after", key)) for f in cl]
                per = (cell([(x - fold(jsz(f, "before", key))) / n for x, f in zip(a, cl)],
                            lambda v: f"{v:.0f} B") if fmt is size else "")
                out.append(f"| {label} | {fmt(b)} | {cell(a, fmt)} | {per} |")
            out += ["", "Streams after (last round; messages and bytes as server n1 reports "
                    "them, consumers summed over the three servers: the bridges' consumers are "
                    "ephemeral ordered consumers, each held by one server):", "",
                    "| stream | messages | bytes | writes (last sequence) | consumers | leader |",
                    "|---|---|---|---|---|---|"]
            servers = cl[-1]["after"]["jsz"]["servers"]
            for s in sorted(servers[0]["stream_detail"], key=lambda s: s["name"]):
                consumers = sum(d["consumers"] for v in servers for d in v["stream_detail"]
                                if d["name"] == s["name"])
                out.append(f"| {s['name']} | {num(s['messages'])} | {size(s['bytes'])} | "
                           f"{num(s['last_seq'])} | {consumers} | {s['leader']} |")
            out.append("")
    if "takeover" in ARGS.only:
        out += [
            "### Takeover: a persistent session moving between bridges",
            "",
            f"`mqtt-bench takeover`: one client (clean session 0, one subscription) connects "
            f"to A, then {c['takeover']} times connects to B and back to A; each figure is the "
            "time from writing CONNECT on an open socket to reading CONNACK (TCP's handshake "
            "not included), moves to B only. **open**: the previous connection is still open "
            "and the broker must close it (a takeover); **disconnect**: the client sent "
            "DISCONNECT first. Every CONNACK is checked for session present = 1 and every "
            "connection taken over for being closed. For **one**, **one-dir** and **local**, "
            "A = B (the same bridge); for **cluster**, A = bridge a, B = bridge b.",
            "",
            "| set-up | old connection | median | p99 | max |",
            "|---|---|---|---|---|",
        ]
        for s in SETUPS:
            for mode in ("open", "disconnect"):
                vs = {k: values("takeover", mode, s, f"there_us.{k}") for k in ("p50", "p99",
                                                                                 "max")}
                if vs["p50"]:
                    out.append(f"| **{s}**: {SETUPS[s]} | {mode} | {cell(vs['p50'], ms_us)} | "
                               f"{cell(vs['p99'], ms_us)} | {cell(vs['max'], ms_us)} |")
        out += ["", "```sh",
                f"mqtt-bench takeover --url mqtt://A --to mqtt://B --runs {c['takeover']} "
                "[--disconnect-first] --json", "```", ""]
    out += ["### Problems", ""]
    if PROBLEMS or log_problems:
        out += [f"- {p}" for p in PROBLEMS + log_problems]
    else:
        out.append("None: every run completed, every check passed, no bridge logged a warning "
                   "or an error.")
    out.append("")
    return "\n".join(out)


def scan_logs() -> list:
    """The NOTABLE lines of every log: counted, a few shown."""
    found = []
    for path in sorted(WORK.rglob("*.log")):
        if path.name == "runs.log":
            continue
        pattern = NOTABLE["bridge" if path.name.startswith("bridge") else "nats"]
        hits = [l.strip() for l in path.read_text(errors="replace").splitlines()
                if pattern.search(l) and not BENIGN.search(l)]
        if hits:
            shown = "; ".join(f"`{h[:300]}`" for h in hits[:3])
            found.append(f"{path.relative_to(WORK)}: {len(hits)} line(s), e.g. {shown}")
    return found


def main() -> int:
    for binary in (BRIDGE, BENCH):
        if not binary.exists():
            log(f"error: {binary} missing: cargo build --release -p bridge -p mqtt-bench")
            return 1
    if not Path(NATS).exists():
        log("error: nats-server not found (apt-get install nats-server)")
        return 1
    busy = [port for i in range(3) for port in (NATS_PORT + i, ROUTE_PORT + i, MONITOR_PORT + i)
            if port_in_use(port)]
    if busy:
        log(f"error: port(s) {', '.join(map(str, busy))} in use (another NATS server?): choose "
            "others with CLUSTER_BENCH_NATS_PORT=FIRST (FIRST..FIRST+2, routes +2000, "
            "monitoring +4000)")
        return 1
    log(f"==> bench/cluster.sh: logs, stores (deleted at the end) and figures in {WORK}")
    started, t0 = datetime.datetime.now(datetime.timezone.utc), time.monotonic()
    load_before, load_during = loadavg(), []
    try:
        for rnd in range(ARGS.rounds):
            log(f"==> round {rnd + 1} of {ARGS.rounds} (load {loadavg()})")
            if "throughput" in ARGS.only:
                throughput_round(rnd)
            if "takeover" in ARGS.only:
                takeover_round(rnd)
            if "sessions" in ARGS.only:
                sessions_round(rnd)
            load_during.append(loadavg())
    finally:
        stop_everything()
    log_problems = scan_logs()
    report = render(started, (time.monotonic() - t0) / 60, load_before, load_during,
                    log_problems)
    print(report)
    if ARGS.out:
        ARGS.out.write_text(report + "\n")
    with open(WORK / "results.json", "w") as f:
        json.dump({" / ".join(k): v for k, v in RESULTS.items()}, f, indent=1)
    # The stores (hundreds of MB after a full run) go; the logs and figures stay.
    for store in [*WORK.glob("nats-*/n[123]"), *WORK.glob("bridge-*/data")]:
        shutil.rmtree(store, ignore_errors=True)
    log(f"==> raw figures: {WORK / 'results.json'}; logs: {WORK}")
    errors = [p for p in log_problems if "ERROR" in p or "[ERR]" in p or "[FTL]" in p]
    return 1 if PROBLEMS or errors else 0


try:
    sys.exit(main())
except KeyboardInterrupt:
    stop_everything()
    sys.exit(130)
PYTHON
job=$!
trap 'kill -TERM -- "-$job" 2>/dev/null' INT TERM HUP
while :; do
    status=0
    wait "$job" || status=$?
    # A trapped signal ends `wait` early (status > 128): wait again for the job's own end.
    kill -0 "$job" 2>/dev/null || exit "$status"
done
