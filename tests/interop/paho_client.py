#!/usr/bin/env python3
"""paho-mqtt 2.x as a third-party client for the interop tests (tests/interop.rs).

One run is one client connection playing one role:

    python3 tests/interop/paho_client.py URL ROLE [options] [QOS:RETAIN:PAYLOAD ...]

URL is ``mqtt://host:port`` (transport "tcp") or ``ws://host:port/path`` (transport
"websockets", subprotocol ``mqtt``, the path given, e.g. ``/mqtt``).

Roles:
  sub   connect, subscribe to --topic at --qos (unless --no-subscribe), print READY, print
        every message; with --count N end after N messages (and --linger seconds more), else
        end after --wait seconds; end with DISCONNECT, or with --end abrupt by shutting the
        socket down under paho (a network loss: the broker must publish the will).
  pub   connect, publish each QOS:RETAIN:PAYLOAD to --topic in order, each one waited for
        (PUBACK / PUBCOMP), then DISCONNECT.

Options: --mqtt 4|5 (MQTTv311 or MQTTv5), --id ID, --clean 0|1, --expiry SECS (5.0 Session
Expiry Interval), --will-topic T --will-payload P --will-qos Q --will-retain 0|1.

Output, one line each, for the Rust side to check:
  CONNACK session_present=0|1 code=N
  SUBACK G...            (granted QoS or reason code per filter)
  READY
  MSG QOS RETAIN TOPIC PAYLOAD
  PUBLISHED QOS PAYLOAD
  DISCONNECTED | ABRUPT
Exit codes: 0 done, 2 usage or connection failure, 3 timed out waiting for messages.
"""

import argparse
import os
import queue
import socket
import sys
import time
from urllib.parse import urlparse

try:
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties
except ImportError as e:  # pragma: no cover - a set-up problem, said plainly
    sys.stderr.write(
        f"paho_client: paho-mqtt 2.x is not installed ({e}); run scripts/setup.sh "
        "(it installs tests/requirements.txt)\n"
    )
    sys.exit(2)


def out(line):
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def fail(code, why):
    sys.stdout.flush()
    sys.stderr.write(f"paho_client: {why}\n")
    sys.stderr.flush()
    # os._exit: no interpreter shutdown, so paho's thread cannot do anything more.
    os._exit(code)


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("url")
    p.add_argument("role", choices=["sub", "pub"])
    p.add_argument("--mqtt", type=int, choices=[4, 5], default=4)
    p.add_argument("--id", default="")
    p.add_argument("--clean", choices=["0", "1"], default="1")
    p.add_argument("--expiry", type=int)
    p.add_argument("--topic")
    p.add_argument("--qos", type=int, default=0)
    p.add_argument("--no-subscribe", dest="subscribe", action="store_false")
    p.add_argument("--count", type=int, default=0)
    p.add_argument("--wait", type=float, default=5.0)
    p.add_argument("--linger", type=float, default=0.0)
    p.add_argument("--end", choices=["disconnect", "abrupt"], default="disconnect")
    p.add_argument("--will-topic")
    p.add_argument("--will-payload", default="")
    p.add_argument("--will-qos", type=int, default=0)
    p.add_argument("--will-retain", choices=["0", "1"], default="0")
    p.add_argument("messages", nargs="*")
    args = p.parse_intermixed_args()
    if args.topic is None and (args.role == "pub" or args.subscribe):
        p.error("--topic is required")
    return args


def main():
    args = parse_args()
    url = urlparse(args.url)
    if url.scheme not in ("mqtt", "ws"):
        fail(2, f"unsupported URL scheme in {args.url}")
    v5 = args.mqtt == 5
    clean = args.clean == "1"

    client = mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id=args.id,
        protocol=mqtt.MQTTv5 if v5 else mqtt.MQTTv311,
        transport="websockets" if url.scheme == "ws" else "tcp",
        # 3.1.1 takes clean session here; 5.0 takes clean start in connect().
        clean_session=None if v5 else clean,
    )
    if url.scheme == "ws":
        client.ws_set_options(path=url.path or "/mqtt")
    if args.will_topic is not None:
        client.will_set(
            args.will_topic, args.will_payload, args.will_qos, args.will_retain == "1"
        )

    # Callbacks run on paho's network thread; the main thread reads this queue.
    events = queue.Queue()
    client.on_connect = lambda c, u, flags, rc, props: events.put(
        ("connack", flags.session_present, rc)
    )
    client.on_subscribe = lambda c, u, mid, rcs, props: events.put(("suback", rcs))
    client.on_message = lambda c, u, m: events.put(
        ("msg", m.qos, m.retain, m.topic, m.payload.decode("utf-8", "replace"))
    )
    client.on_disconnect = lambda c, u, flags, rc, props: events.put(("closed", rc))

    deadline = time.monotonic() + args.wait + args.linger + 10

    def next_event(until):
        left = until - time.monotonic()
        if left <= 0:
            return None
        try:
            return events.get(timeout=left)
        except queue.Empty:
            return None

    def expect(kind):
        while True:
            ev = next_event(deadline)
            if ev is None:
                fail(2, f"no {kind} in time")
            if ev[0] == kind:
                return ev
            if ev[0] == "closed":
                fail(2, f"the connection closed while waiting for {kind}: {ev[1]}")
            handle(ev)

    received = 0

    def handle(ev):
        nonlocal received
        if ev[0] == "msg":
            _, qos, retain, topic, payload = ev
            out(f"MSG {qos} {int(bool(retain))} {topic} {payload}")
            received += 1
        elif ev[0] == "closed":
            fail(2, f"the connection closed unexpectedly: {ev[1]}")

    connect_kwargs = {"keepalive": 30}
    if v5:
        connect_kwargs["clean_start"] = clean
        if args.expiry is not None:
            props = Properties(PacketTypes.CONNECT)
            props.SessionExpiryInterval = args.expiry
            connect_kwargs["properties"] = props
    try:
        client.connect(url.hostname, url.port, **connect_kwargs)
    except OSError as e:
        fail(2, f"cannot connect to {args.url}: {e}")
    client.loop_start()

    _, session_present, rc = expect("connack")
    out(f"CONNACK session_present={int(bool(session_present))} code={rc.value}")
    if rc.is_failure:
        fail(2, f"connection refused: {rc}")

    if args.role == "pub":
        for m in args.messages:
            qos, retain, payload = m.split(":", 2)
            info = client.publish(args.topic, payload, int(qos), retain == "1")
            try:
                info.wait_for_publish(timeout=max(deadline - time.monotonic(), 0.1))
            except (RuntimeError, ValueError) as e:
                fail(2, f"publish of {payload} failed: {e}")
            if not info.is_published():
                fail(2, f"publish of {payload} was not acknowledged in time")
            out(f"PUBLISHED {qos} {payload}")
        finish(client, "disconnect", events)
        return

    if args.subscribe:
        client.subscribe(args.topic, args.qos)
        _, rcs = expect("suback")
        out("SUBACK " + " ".join(str(rc.value) for rc in rcs))
    out("READY")

    if args.count == 0:
        until = time.monotonic() + args.wait
        while (ev := next_event(until)) is not None:
            handle(ev)
    else:
        until = time.monotonic() + args.wait
        while received < args.count:
            ev = next_event(until)
            if ev is None:
                fail(3, f"timed out: {received} of {args.count} messages within {args.wait} s")
            handle(ev)
        until = time.monotonic() + args.linger
        while (ev := next_event(until)) is not None:
            handle(ev)
    finish(client, args.end, events)


def finish(client, how, events):
    if how == "abrupt":
        # A network loss, as the broker sees it: no DISCONNECT, the socket shut down under
        # paho (for WebSocket, the TCP socket inside paho's wrapper: no close frame either).
        sock = client.socket()
        raw = getattr(sock, "_socket", sock)
        try:
            raw.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        raw.close()
        out("ABRUPT")
        os._exit(0)
    client.disconnect()
    while True:
        try:
            ev = events.get(timeout=5)
        except queue.Empty:
            fail(2, "DISCONNECT did not complete")
        if ev[0] == "closed":
            break
    client.loop_stop()
    out("DISCONNECTED")
    sys.exit(0)


if __name__ == "__main__":
    main()
