"""The two brokers of `bench/compare.py`: how each is started, configured and stopped.

Both run on loopback, each in a fresh process with its own temporary directory, so that no
run inherits sessions, queued messages or allocator state from the one before.

- The bridge: `BRIDGE --http 127.0.0.1:0 --mqtt 127.0.0.1:0 --data none|DIR --config FILE`;
  it prints `bridge listening: http=... ws=ws://ADDR/mqtt mqtt=ADDR` once bound, which gives
  the ports. FILE raises the one limit 10 000 connections from 127.0.0.1 would hit
  (`max_connections_per_address`, default 1 000) and, with a data directory, sets
  `durability`. Everything else is at its default.
- mosquitto: a TCP listener on 127.0.0.1 and a WebSocket listener (libwebsockets binds every
  interface), no persistence, no queue limit (`max_queued_messages 0`, so it never drops an
  acknowledged QoS 1 message), the bridge's in-flight window (`max_inflight_messages 256`),
  no connection limit, Nagle off like the bridge (`set_tcp_nodelay true`).
"""

from __future__ import annotations

import os
import selectors
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

# Connections from one address the bridge must accept: the fan-out's 10 000 subscribers and
# the publishers all come from 127.0.0.1.
MAX_CONNECTIONS_PER_ADDRESS = 20_000

# How long a broker may take to start listening.
START_TIMEOUT_S = 20.0


def bridge_config(durability: str | None) -> str:
    """The bridge's `--config` file: the `[broker]` keys this benchmark sets."""
    lines = ["[broker]", f"max_connections_per_address = {MAX_CONNECTIONS_PER_ADDRESS}"]
    if durability is not None:
        lines.append(f'durability = "{durability}"')
    return "\n".join(lines) + "\n"


def mosquitto_config(tcp_port: int, ws_port: int) -> str:
    """mosquitto's configuration file (see the module docs for why each line)."""
    return (
        f"listener {tcp_port} 127.0.0.1\n"
        "max_connections -1\n"
        f"listener {ws_port}\n"
        "protocol websockets\n"
        "max_connections -1\n"
        "allow_anonymous true\n"
        "persistence false\n"
        "max_queued_messages 0\n"
        "max_inflight_messages 256\n"
        "set_tcp_nodelay true\n"
        "log_dest stderr\n"
        "log_type error\n"
        "log_type warning\n"
    )


@dataclass
class Server:
    """A running broker."""

    # `bridge`, `bridge (always)`, ..., `mosquitto`: the column it goes in.
    name: str
    proc: subprocess.Popen
    # mqtt://127.0.0.1:PORT
    tcp_url: str
    # ws://127.0.0.1:PORT/mqtt
    ws_url: str
    tmp: tempfile.TemporaryDirectory = field(repr=False)

    def url(self, transport: str) -> str:
        return self.tcp_url if transport == "tcp" else self.ws_url

    def port(self, transport: str) -> int:
        return int(self.url(transport).split(":")[2].split("/")[0])

    def rss_kb(self) -> int:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise RuntimeError(f"{self.name}: no VmRSS in /proc/{self.proc.pid}/status")

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.tmp.cleanup()


@dataclass(frozen=True)
class Broker:
    """How to start one of the compared configurations."""

    # The column name: `bridge` (memory, `--data none`), `bridge (always)` etc., `mosquitto`.
    name: str
    # `bridge` or `mosquitto`.
    kind: str
    # For the bridge: None for `--data none`, else the `durability` with a data directory.
    durability: str | None = None

    def command_line(self, binary: str) -> str:
        """The start command as the report shows it."""
        if self.kind == "mosquitto":
            return f"{binary} -c mosquitto.conf"
        data = "none" if self.durability is None else "DIR"
        return (f"{binary} --http 127.0.0.1:0 --mqtt 127.0.0.1:0 --data {data} "
                "--config bridge.toml")


def start(broker: Broker, binaries: dict[str, str], log: Path) -> Server:
    if broker.kind == "mosquitto":
        return _start_mosquitto(broker, binaries["mosquitto"], log)
    return _start_bridge(broker, binaries["bridge"], log)


def _start_bridge(broker: Broker, binary: str, log: Path) -> Server:
    tmp = tempfile.TemporaryDirectory(prefix="compare-bridge-")
    config = Path(tmp.name) / "bridge.toml"
    config.write_text(bridge_config(broker.durability))
    data = "none" if broker.durability is None else str(Path(tmp.name) / "data")
    with open(log, "ab") as err:
        proc = subprocess.Popen(
            [binary, "--http", "127.0.0.1:0", "--mqtt", "127.0.0.1:0", "--data", data,
             "--config", str(config)],
            stdout=subprocess.PIPE, stderr=err, text=True,
            env={**os.environ, "RUST_LOG": os.environ.get("RUST_LOG", "warn")},
        )
    assert proc.stdout is not None
    line = _first_line(proc, START_TIMEOUT_S)
    if not line.startswith("bridge listening:"):
        proc.kill()
        proc.wait()
        tmp.cleanup()
        raise RuntimeError(f"the bridge did not start (see {log}): {line!r}")
    parts = dict(p.split("=", 1) for p in line.split()[2:] if "=" in p)
    return Server(broker.name, proc, f"mqtt://{parts['mqtt']}", parts["ws"], tmp)


def _first_line(proc: subprocess.Popen, timeout: float) -> str:
    """The process's first line of stdout, or '' if it exits or the time runs out."""
    assert proc.stdout is not None
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        if not sel.select(timeout):
            return ""
    return proc.stdout.readline().strip()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_port(port: int, proc: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"mosquitto exited with {proc.returncode} (see {log})")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.02)
    raise RuntimeError(f"mosquitto did not listen on {port} (see {log})")


def _start_mosquitto(broker: Broker, binary: str, log: Path) -> Server:
    tmp = tempfile.TemporaryDirectory(prefix="compare-mosquitto-")
    # Started as root, mosquitto reads its configuration and then runs as `mosquitto`.
    os.chmod(tmp.name, 0o755)
    tcp_port, ws_port = _free_port(), _free_port()
    config = Path(tmp.name) / "mosquitto.conf"
    config.write_text(mosquitto_config(tcp_port, ws_port))
    os.chmod(config, 0o644)
    with open(log, "ab") as err:
        proc = subprocess.Popen([binary, "-c", str(config)], stdout=subprocess.DEVNULL,
                                stderr=err)
    try:
        _wait_port(tcp_port, proc, log)
        _wait_port(ws_port, proc, log)
    except BaseException:
        proc.kill()
        proc.wait()
        tmp.cleanup()
        raise
    return Server(broker.name, proc, f"mqtt://127.0.0.1:{tcp_port}",
                  f"ws://127.0.0.1:{ws_port}/mqtt", tmp)
