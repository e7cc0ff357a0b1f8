#!/usr/bin/env python3
"""Memory per idle MQTT connection and after a burst: the bridge beside mosquitto.

Starts the bridge (release build, `--data none`) and Debian's mosquitto on loopback ports,
then for each server in turn:

1. idle TCP: opens N MQTT connections over TCP (CONNECT, keep-alive 0, waits for CONNACK),
   samples the server's VmRSS from /proc before and after, prints KB per connection;
2. idle WS: the same over WebSocket (raw socket, hand-made HTTP upgrade with subprotocol
   `mqtt`, masked binary frames);
3. burst: P publishers each send M QoS 1 PUBLISHes of S bytes (a window of W unacknowledged
   each) to one QoS 1 subscriber of `burst/#`; then everyone disconnects, and after a pause
   the RSS is sampled again and compared with the RSS before the burst.

Python 3.11 standard library only. Linux only (/proc). Loopback only.

    python3 bench/idle_rss.py                    # 2000 idle connections, 200 x 1000 x 1 KB
    python3 bench/idle_rss.py --idle 500 --publishers 50 --messages 200
    python3 bench/idle_rss.py --only bridge      # skip mosquitto

The bridge binary defaults to target/release/bridge (build it with
`cargo build --release -p bridge`); mosquitto to /usr/sbin/mosquitto
(`apt-get install -y mosquitto`). Run as root, mosquitto drops privileges to its own user;
its websockets listener may bind all interfaces (a Debian/libwebsockets limitation).
"""

from __future__ import annotations

import argparse
import base64
import os
import resource
import selectors
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

# ---------------------------------------------------------------------------------------
# MQTT 3.1.1 packets, just the few this script needs


def remaining_length(n: int) -> bytes:
    out = bytearray()
    while True:
        byte = n % 128
        n //= 128
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def utf8(s: str) -> bytes:
    b = s.encode()
    return struct.pack("!H", len(b)) + b


def connect_packet(client_id: str, keep_alive: int = 0) -> bytes:
    body = utf8("MQTT") + bytes([4, 0x02]) + struct.pack("!H", keep_alive) + utf8(client_id)
    return b"\x10" + remaining_length(len(body)) + body


def subscribe_packet(packet_id: int, topic: str, qos: int) -> bytes:
    body = struct.pack("!H", packet_id) + utf8(topic) + bytes([qos])
    return b"\x82" + remaining_length(len(body)) + body


def publish_packet(topic: str, packet_id: int, payload: bytes) -> bytes:
    body = utf8(topic) + struct.pack("!H", packet_id) + payload
    return b"\x32" + remaining_length(len(body)) + body


DISCONNECT = b"\xe0\x00"


def parse_packets(buf: bytearray) -> list[tuple[int, bytes]]:
    """Takes whole packets off the front of `buf`: (first byte, body)."""
    packets = []
    while True:
        if len(buf) < 2:
            return packets
        length, multiplier, i = 0, 1, 1
        while True:
            if i >= len(buf):
                return packets
            byte = buf[i]
            length += (byte & 0x7F) * multiplier
            multiplier *= 128
            i += 1
            if not byte & 0x80:
                break
        if len(buf) < i + length:
            return packets
        packets.append((buf[0], bytes(buf[i : i + length])))
        del buf[: i + length]


# ---------------------------------------------------------------------------------------
# Blocking helpers for the idle connections


def recv_exact(sock: socket.socket, n: int) -> bytes:
    data = bytearray()
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise ConnectionError("closed by the server")
        data += chunk
    return bytes(data)


def expect_connack(data: bytes) -> None:
    if len(data) < 4 or data[0] != 0x20 or data[3] != 0:
        raise ConnectionError(f"no CONNACK 0: {data!r}")


def open_tcp(port: int, client_id: str) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(connect_packet(client_id))
    expect_connack(recv_exact(sock, 4))
    return sock


def ws_frame(payload: bytes, opcode: int = 0x2) -> bytes:
    """A masked client frame."""
    mask = os.urandom(4)
    n = len(payload)
    if n < 126:
        header = bytes([0x80 | opcode, 0x80 | n])
    elif n < 65536:
        header = bytes([0x80 | opcode, 0x80 | 126]) + struct.pack("!H", n)
    else:
        header = bytes([0x80 | opcode, 0x80 | 127]) + struct.pack("!Q", n)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return header + mask + masked


def ws_read_frame(sock: socket.socket) -> tuple[int, bytes]:
    b0, b1 = recv_exact(sock, 2)
    n = b1 & 0x7F
    if n == 126:
        (n,) = struct.unpack("!H", recv_exact(sock, 2))
    elif n == 127:
        (n,) = struct.unpack("!Q", recv_exact(sock, 8))
    return b0 & 0x0F, recv_exact(sock, n)


def open_ws(port: int, client_id: str) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        (
            f"GET /mqtt HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: mqtt\r\n\r\n"
        ).encode()
    )
    head = bytearray()
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(1)
        if not chunk:
            raise ConnectionError("closed during the upgrade")
        head += chunk
    status = head.split(b"\r\n", 1)[0]
    if b" 101 " not in status:
        raise ConnectionError(f"upgrade refused: {status!r}")
    sock.sendall(ws_frame(connect_packet(client_id)))
    got = bytearray()
    while len(got) < 4:
        opcode, payload = ws_read_frame(sock)
        if opcode == 0x2:
            got += payload
    expect_connack(bytes(got))
    return sock


# ---------------------------------------------------------------------------------------
# Servers


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, proc: subprocess.Popen, what: str) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{what} did not listen on {port}")


@dataclass
class Server:
    name: str
    proc: subprocess.Popen
    tcp_port: int
    ws_port: int
    tmp: tempfile.TemporaryDirectory = field(repr=False)

    def rss(self) -> int:
        return rss_kb(self.proc.pid)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.tmp.cleanup()


def start_bridge(binary: Path, connections: int, extra_broker_config: str = "") -> Server:
    tmp = tempfile.TemporaryDirectory(prefix="idle-rss-bridge-")
    config = Path(tmp.name) / "bridge.toml"
    # Every test connection comes from 127.0.0.1: lift the per-address limit above N.
    config.write_text(
        "[broker]\n"
        f"max_connections_per_address = {connections + 100}\n"
        f"max_connections = {connections + 1000}\n" + extra_broker_config
    )
    proc = subprocess.Popen(
        [str(binary), "--http", "127.0.0.1:0", "--mqtt", "127.0.0.1:0", "--data", "none",
         "--config", str(config)],
        stdout=subprocess.PIPE,
        stderr=open(os.environ["BRIDGE_LOG"], "w") if "BRIDGE_LOG" in os.environ else subprocess.DEVNULL,
        text=True,
        env={**os.environ, "RUST_LOG": os.environ.get("RUST_LOG", "warn")},
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.startswith("bridge listening:"):
        proc.kill()
        raise RuntimeError(f"bridge did not start: {line!r}")
    parts = dict(p.split("=", 1) for p in line.split()[2:])
    ws_port = int(parts["ws"].rsplit(":", 1)[1].split("/")[0])
    tcp_port = int(parts["mqtt"].rsplit(":", 1)[1])
    return Server("bridge", proc, tcp_port, ws_port, tmp)


def start_mosquitto(binary: str) -> Server:
    tmp = tempfile.TemporaryDirectory(prefix="idle-rss-mosquitto-")
    os.chmod(tmp.name, 0o755)
    tcp_port, ws_port = free_port(), free_port()
    config = Path(tmp.name) / "mosquitto.conf"
    config.write_text(
        f"listener {tcp_port} 127.0.0.1\n"
        f"listener {ws_port}\nprotocol websockets\n"
        "allow_anonymous true\nmax_queued_messages 0\npersistence false\n"
        "log_dest none\n"
    )
    os.chmod(config, 0o644)
    proc = subprocess.Popen(
        [binary, "-c", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    wait_port(tcp_port, proc, "mosquitto")
    wait_port(ws_port, proc, "mosquitto")
    return Server("mosquitto", proc, tcp_port, ws_port, tmp)


# ---------------------------------------------------------------------------------------
# Measurements


# Seconds between opening (or closing) the idle connections and sampling the RSS: longer
# than jemalloc's 10 s decay, so memory used only while connecting (the HTTP upgrade
# request, hyper's buffers) and already freed is not counted as the idle connections'.
SETTLE_S = 12.0


def settle() -> None:
    time.sleep(SETTLE_S)


def idle(server: Server, transport: str, n: int) -> dict:
    opener = open_tcp if transport == "tcp" else open_ws
    port = server.tcp_port if transport == "tcp" else server.ws_port
    before = server.rss()
    socks = []
    start = time.monotonic()
    try:
        for i in range(n):
            socks.append(opener(port, f"idle-{transport}-{i}"))
        took = time.monotonic() - start
        settle()
        during = server.rss()
    finally:
        for s in socks:
            try:
                s.close()
            except OSError:
                pass
    settle()
    after = server.rss()
    return {
        "before": before,
        "during": during,
        "after": after,
        "per_conn_kb": (during - before) / n,
        "open_s": took,
    }


class Peer:
    """One non-blocking MQTT client for the burst."""

    def __init__(self, port: int, client_id: str):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.sock.sendall(connect_packet(client_id))
        expect_connack(recv_exact(self.sock, 4))
        self.sock.setblocking(False)
        self.inbuf = bytearray()
        self.outbuf = bytearray()

    def flush(self) -> None:
        while self.outbuf:
            try:
                n = self.sock.send(self.outbuf)
            except BlockingIOError:
                return
            del self.outbuf[:n]

    def read(self) -> list[tuple[int, bytes]]:
        while True:
            try:
                chunk = self.sock.recv(65536)
            except BlockingIOError:
                break
            if not chunk:
                raise ConnectionError("closed by the server")
            self.inbuf += chunk
            if len(chunk) < 65536:
                break
        return parse_packets(self.inbuf)


def burst(server: Server, publishers: int, messages: int, size: int, window: int,
          limit_s: float) -> dict:
    before = server.rss()
    peak = before
    sub = Peer(server.tcp_port, "burst-sub")
    sub.sock.setblocking(True)
    sub.sock.sendall(subscribe_packet(1, "burst/#", 1))
    while True:
        got = parse_packets(sub.inbuf) if sub.inbuf else []
        if any(first >> 4 == 9 for first, _ in got):
            break
        sub.inbuf += sub.sock.recv(4096)
    sub.sock.setblocking(False)

    pubs = [Peer(server.tcp_port, f"burst-pub-{i}") for i in range(publishers)]
    sent = [0] * publishers
    acked = [0] * publishers
    payload = b"x" * size
    received = 0
    sel = selectors.DefaultSelector()
    sel.register(sub.sock, selectors.EVENT_READ, -1)
    for i, p in enumerate(pubs):
        sel.register(p.sock, selectors.EVENT_READ, i)
    start = time.monotonic()
    next_sample = start
    total = publishers * messages
    while sum(acked) < total and time.monotonic() - start < limit_s:
        for i, p in enumerate(pubs):
            while sent[i] < messages and sent[i] - acked[i] < window:
                sent[i] += 1
                p.outbuf += publish_packet(f"burst/{i}", (sent[i] % 65535) + 1, payload)
            p.flush()
        for key, _ in sel.select(timeout=0.05):
            i = key.data
            if i == -1:
                for first, body in sub.read():
                    if first >> 4 == 3:
                        received += 1
                        (tlen,) = struct.unpack("!H", body[:2])
                        if (first >> 1) & 3:
                            sub.outbuf += b"\x40\x02" + body[2 + tlen : 4 + tlen]
                sub.flush()
            else:
                for first, _ in pubs[i].read():
                    if first >> 4 == 4:
                        acked[i] += 1
        now = time.monotonic()
        if now >= next_sample:
            peak = max(peak, server.rss())
            next_sample = now + 0.25
    took = time.monotonic() - start
    peak = max(peak, server.rss())
    # Let the subscriber drain a moment more, then everyone leaves.
    drain_until = time.monotonic() + 2
    while time.monotonic() < drain_until:
        for key, _ in sel.select(timeout=0.05):
            if key.data == -1:
                for first, body in sub.read():
                    if first >> 4 == 3:
                        received += 1
                        (tlen,) = struct.unpack("!H", body[:2])
                        sub.outbuf += b"\x40\x02" + body[2 + tlen : 4 + tlen]
                sub.flush()
            else:
                pubs[key.data].read()
    for p in [*pubs, sub]:
        try:
            p.sock.setblocking(True)
            p.sock.sendall(DISCONNECT)
            p.sock.close()
        except OSError:
            pass
    sel.close()
    samples = []
    for _ in range(5):
        time.sleep(1)
        samples.append(server.rss())
    return {
        "before": before,
        "peak": peak,
        "after_1s": samples[0],
        "after_5s": samples[-1],
        "acked": sum(acked),
        "total": total,
        "received": received,
        "took_s": took,
    }


def warm_up(server: Server) -> None:
    socks = [open_tcp(server.tcp_port, f"warm-tcp-{i}") for i in range(20)]
    socks += [open_ws(server.ws_port, f"warm-ws-{i}") for i in range(20)]
    for s in socks:
        s.close()
    time.sleep(2)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--idle", type=int, default=2000, help="idle connections per transport")
    ap.add_argument("--publishers", type=int, default=200)
    ap.add_argument("--messages", type=int, default=1000, help="per publisher")
    ap.add_argument("--size", type=int, default=1024, help="payload bytes")
    ap.add_argument("--window", type=int, default=32, help="unacked PUBLISHes per publisher")
    ap.add_argument("--burst-limit", type=float, default=180.0, help="seconds at most")
    ap.add_argument("--after", type=float, default=15.0,
                    help="seconds to wait after the burst before the last RSS sample")
    ap.add_argument("--bridge", type=Path, default=REPO / "target" / "release" / "bridge")
    ap.add_argument("--mosquitto", default=shutil.which("mosquitto") or "/usr/sbin/mosquitto")
    ap.add_argument("--only", choices=["bridge", "mosquitto"])
    ap.add_argument("--settle", type=float, default=SETTLE_S,
                    help="seconds between opening the idle connections and sampling RSS")
    args = ap.parse_args()
    globals()["SETTLE_S"] = args.settle

    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = args.idle + args.publishers + 200
    if hard != resource.RLIM_INFINITY and hard < want:
        print(f"open-files hard limit {hard} < {want}: lower --idle", file=sys.stderr)
        return 2
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

    starters = {}
    if args.only != "mosquitto":
        if not args.bridge.is_file():
            print(f"no bridge at {args.bridge}: cargo build --release -p bridge",
                  file=sys.stderr)
            return 2
        conns = max(args.idle, args.publishers)
        starters["bridge"] = lambda: start_bridge(args.bridge, conns)
    if args.only != "bridge":
        if not Path(args.mosquitto).is_file():
            print("no mosquitto: apt-get install -y mosquitto", file=sys.stderr)
            return 2
        starters["mosquitto"] = lambda: start_mosquitto(args.mosquitto)

    def fresh(name: str) -> Server:
        # Each measurement on a new process after the same warm-up, so that memory freed
        # by an earlier phase (and kept by the allocator) does not hide the next one's.
        server = starters[name]()
        try:
            warm_up(server)
        except BaseException:
            server.stop()
            raise
        return server

    results = {}
    for name in starters:
        server = fresh(name)
        try:
            start_rss = server.rss()
            print(f"{name}: RSS {start_rss} KB after start and warm-up", flush=True)
            tcp = idle(server, "tcp", args.idle)
        finally:
            server.stop()
        print(f"  idle tcp x{args.idle}: {tcp['before']} -> {tcp['during']} KB "
              f"({tcp['per_conn_kb']:.2f} KB/conn), {tcp['after']} KB {SETTLE_S:.0f} s after close",
              flush=True)
        server = fresh(name)
        try:
            ws = idle(server, "ws", args.idle)
        finally:
            server.stop()
        print(f"  idle ws  x{args.idle}: {ws['before']} -> {ws['during']} KB "
              f"({ws['per_conn_kb']:.2f} KB/conn), {ws['after']} KB {SETTLE_S:.0f} s after close",
              flush=True)
        server = fresh(name)
        try:
            b = burst(server, args.publishers, args.messages, args.size, args.window,
                      args.burst_limit)
            time.sleep(max(0.0, args.after - 5))
            b["after_long"] = server.rss()
        finally:
            server.stop()
        print(f"  burst {args.publishers}x{args.messages}x{args.size} B QoS 1: "
              f"{b['acked']}/{b['total']} acked, {b['received']} delivered in "
              f"{b['took_s']:.1f} s; RSS {b['before']} -> peak {b['peak']} -> "
              f"{b['after_5s']} (5 s after) -> {b['after_long']} KB ({args.after:.0f} s after)",
              flush=True)
        results[name] = (start_rss, tcp, ws, b)

    print()
    print("| server | RSS after start | per idle TCP conn | per idle WS conn "
          f"| RSS before burst | peak | 5 s after | {args.after:.0f} s after | after/before |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, (start_rss, tcp, ws, b) in results.items():
        print(f"| {name} | {start_rss / 1024:.1f} MB | {tcp['per_conn_kb']:.1f} KB "
              f"| {ws['per_conn_kb']:.1f} KB | {b['before'] / 1024:.1f} MB "
              f"| {b['peak'] / 1024:.1f} MB | {b['after_5s'] / 1024:.1f} MB "
              f"| {b['after_long'] / 1024:.1f} MB | {b['after_long'] / b['before']:.2f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
