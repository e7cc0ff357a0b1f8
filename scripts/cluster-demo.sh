#!/usr/bin/env bash
# A local cluster demo: three nats-server processes with JetStream on loopback, and two
# bridges (nodes "a" and "b") that act as one broker through them: a message published on
# one bridge reaches the subscribers of the other, and a session follows its client.
#
# `CLUSTER_DEMO=1 scripts/run.sh` runs this after the usual setup (which then installs
# Debian's nats-server too) and release builds. Run on its own, it needs them done already:
# `scripts/setup.sh` (or `apt-get install nats-server`) and `cargo build --release -p bridge`.
#
#   NATS_CLIENT_PORT   first of the 3 NATS client ports            (default 4222: 4222-4224)
#   NATS_CLUSTER_PORT  first of the 3 NATS cluster (route) ports   (default 6222: 6222-6224)
#   NATS_MONITOR_PORT  first of the 3 NATS monitoring ports        (default 8222: 8222-8224)
#   A_HTTP_ADDR        bridge a: dashboard, WebSocket /mqtt, API   (default 127.0.0.1:8080)
#   A_MQTT_ADDR        bridge a: MQTT over TCP                     (default 127.0.0.1:1883)
#   B_HTTP_ADDR        bridge b: dashboard, WebSocket /mqtt, API   (default 127.0.0.1:8081)
#   B_MQTT_ADDR        bridge b: MQTT over TCP                     (default 127.0.0.1:1884)
#   CLUSTER_NAMESPACE  the [cluster] namespace of both bridges     (default mqtt)
#   CLUSTER_DEMO_DIR   the JetStream stores, the generated --config files and the NATS logs
#                      (default ./data/cluster-demo). Kept between runs, so retained messages
#                      and sessions survive a restart of the demo; delete it to start afresh.
#
# Any arguments are passed on to both bridges, after the ones above. The bridges log to this
# terminal (lines prefixed [a] and [b]); the NATS servers to files in CLUSTER_DEMO_DIR.
#
# Ctrl-C, SIGTERM or SIGHUP stops everything this started (the bridges first, then the NATS
# servers) and exits 0. If a NATS server or a bridge fails to start, or exits while the demo
# runs, the demo says which, stops the rest and exits 1.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# The bridges find the dashboard (web/) and the client package (client-wasm/pkg/) relative
# to the repository root.
cd "$root"

nats_client_port="${NATS_CLIENT_PORT:-4222}"
nats_cluster_port="${NATS_CLUSTER_PORT:-6222}"
nats_monitor_port="${NATS_MONITOR_PORT:-8222}"
a_http="${A_HTTP_ADDR:-127.0.0.1:8080}"
a_mqtt="${A_MQTT_ADDR:-127.0.0.1:1883}"
b_http="${B_HTTP_ADDR:-127.0.0.1:8081}"
b_mqtt="${B_MQTT_ADDR:-127.0.0.1:1884}"
namespace="${CLUSTER_NAMESPACE:-mqtt}"
demo_dir="${CLUSTER_DEMO_DIR:-./data/cluster-demo}"
bridge="${CARGO_TARGET_DIR:-target}/release/bridge"

# How long the NATS cluster may take to elect its JetStream leader, and a bridge to answer
# on its HTTP address (it connects to NATS and creates its streams first).
ready_timeout=60
# How long a process may take to stop after SIGTERM before it gets SIGKILL.
stop_timeout=15

die() {
    echo "error: $*" >&2
    exit 1
}

# --- What it needs ---------------------------------------------------------------------------

command -v nats-server >/dev/null ||
    die "nats-server not found: install Debian's with \`CLUSTER_DEMO=1 scripts/setup.sh run\`"
[ -x "$bridge" ] ||
    die "no release bridge at $bridge: \`cargo build --release -p bridge\` first"

# An address HOST:PORT ([IPV6]:PORT too) split into its host, without brackets, and port.
addr_host() {
    local host="${1%:*}"
    host="${host#[}"
    echo "${host%]}"
}
addr_port() { echo "${1##*:}"; }

# Something answers on HOST PORT (a TCP connection succeeds within a second).
port_in_use() {
    timeout 1 bash -c 'exec 3<>"/dev/tcp/$1/$2"' _ "$1" "$2" 2>/dev/null
}

# http_get HOST PORT PATH: the raw response (status line, headers, body); empty when nothing
# answers. Bash's /dev/tcp, so that the demo needs no curl.
http_get() {
    timeout 3 bash -c '
        exec 3<>"/dev/tcp/$1/$2" || exit 0
        printf "GET %s HTTP/1.0\r\nHost: %s:%s\r\nConnection: close\r\n\r\n" "$3" "$1" "$2" >&3
        cat <&3
    ' _ "$@" 2>/dev/null || true
}

# Every port the demo listens on must be free: a clear message now rather than a server that
# dies on "address already in use" (often a demo, or a single bridge, still running).
ports=()
for i in 0 1 2; do
    ports+=("127.0.0.1:$((nats_client_port + i))" "127.0.0.1:$((nats_cluster_port + i))"
        "127.0.0.1:$((nats_monitor_port + i))")
done
ports+=("$a_http" "$a_mqtt" "$b_http" "$b_mqtt")
for addr in "${ports[@]}"; do
    if port_in_use "$(addr_host "$addr")" "$(addr_port "$addr")"; then
        die "$addr is already in use (an earlier demo or a bridge still running?):" \
            "stop it, or choose other ports (see the top of scripts/cluster-demo.sh)"
    fi
done

mkdir -p "$demo_dir"
demo_dir="$(cd "$demo_dir" && pwd)"

# --- Stopping what was started ---------------------------------------------------------------
# Every process this starts, in start order (NATS servers, then bridges), with its name.

pids=()
names=()

# The process is still running (not gone, not a zombie waiting to be reaped).
alive() {
    local state
    state="$(sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f1)" || return 1
    [ -n "$state" ] && [ "$state" != Z ]
}

# stop_all INDEX...: SIGTERM to those processes, then wait for them; SIGKILL after
# stop_timeout seconds.
stop_all() {
    local i deadline=$((SECONDS + stop_timeout)) waiting
    for i in "$@"; do
        alive "${pids[i]}" && kill -TERM "${pids[i]}" 2>/dev/null || true
    done
    while :; do
        waiting=()
        for i in "$@"; do alive "${pids[i]}" && waiting+=("$i"); done
        [ "${#waiting[@]}" -eq 0 ] && break
        if [ "$SECONDS" -ge "$deadline" ]; then
            for i in "${waiting[@]}"; do
                echo "    ${names[i]} did not stop within ${stop_timeout}s: SIGKILL" >&2
                kill -KILL "${pids[i]}" 2>/dev/null || true
            done
            break
        fi
        sleep 0.1
    done
    for i in "$@"; do wait "${pids[i]}" 2>/dev/null || true; done
}

cleanup() {
    # Once: a second Ctrl-C does not cut the stopping short (SIGKILL comes after a timeout).
    trap - EXIT
    trap '' INT TERM HUP
    [ "${#pids[@]}" -eq 0 ] && return
    echo "==> stopping the cluster demo"
    # The bridges first, while NATS still takes what they hand over as they stop.
    local i bridges=() servers=()
    for i in "${!pids[@]}"; do
        case "${names[i]}" in
            bridge*) bridges+=("$i") ;;
            *) servers+=("$i") ;;
        esac
    done
    [ "${#bridges[@]}" -eq 0 ] || stop_all "${bridges[@]}"
    [ "${#servers[@]}" -eq 0 ] || stop_all "${servers[@]}"
    local IFS=,
    echo "==> stopped: ${names[*]}"
}
trap cleanup EXIT
# A requested stop is a success; the EXIT trap does the stopping.
trap 'exit 0' INT TERM HUP

# start NAME OUTPUT COMMAND...: starts it in the background, in a process group of its own so
# that Ctrl-C reaches only this script (which then stops everything in order). Its output goes
# to the file OUTPUT, or with OUTPUT "prefix:TEXT" to this terminal, each line prefixed TEXT.
start() {
    local name="$1" out="$2"
    shift 2
    set -m
    if [[ "$out" == prefix:* ]]; then
        "$@" </dev/null > >(sed -u "s/^/${out#prefix:}/") 2>&1 &
    else
        "$@" </dev/null >"$out" 2>&1 &
    fi
    pids+=("$!")
    set +m
    names+=("$name")
}

# fail_start INDEX [LOG]: process INDEX has exited while starting; says so with its status
# and the end of LOG, and ends the demo.
fail_start() {
    local status
    wait "${pids[$1]}" && status=0 || status=$?
    echo "error: ${names[$1]} exited (status $status) while starting" >&2
    if [ -n "${2:-}" ]; then
        echo "--- last lines of $2:" >&2
        tail -n 20 "$2" >&2
    fi
    exit 1
}

# --- The NATS cluster ------------------------------------------------------------------------

echo "==> starting 3 nats-server with JetStream (stores and logs in $demo_dir/)"
routes_of() {
    local self="$1" i routes=()
    for i in 0 1 2; do
        [ "$i" = "$self" ] || routes+=("nats://127.0.0.1:$((nats_cluster_port + i))")
    done
    local IFS=,
    echo "${routes[*]}"
}
nats_urls=()
for i in 0 1 2; do
    name="n$((i + 1))"
    mkdir -p "$demo_dir/nats/$name"
    log="$demo_dir/nats/$name.log"
    start "nats-server $name" "$log" \
        nats-server -a 127.0.0.1 -p "$((nats_client_port + i))" -n "$name" \
        -js -sd "$demo_dir/nats/$name" \
        --cluster_name cluster-demo --cluster "nats://127.0.0.1:$((nats_cluster_port + i))" \
        --routes "$(routes_of "$i")" -m "$((nats_monitor_port + i))"
    nats_urls+=("nats://127.0.0.1:$((nats_client_port + i))")
done

# Ready when every server's /healthz says ok: it runs, and JetStream has its meta leader.
deadline=$((SECONDS + ready_timeout))
for i in 0 1 2; do
    name="n$((i + 1))"
    while :; do
        body="$(http_get 127.0.0.1 "$((nats_monitor_port + i))" /healthz)"
        [[ "$body" == *'"ok"'* ]] && break
        alive "${pids[i]}" || fail_start "$i" "$demo_dir/nats/$name.log"
        if [ "$SECONDS" -ge "$deadline" ]; then
            die "nats-server $name not healthy within ${ready_timeout}s:" \
                "http://127.0.0.1:$((nats_monitor_port + i))/healthz says '$body'" \
                "(log: $demo_dir/nats/$name.log)"
        fi
        sleep 0.2
    done
    echo "    nats-server $name healthy: nats://127.0.0.1:$((nats_client_port + i))"
done
nats_url="$(IFS=,; echo "${nats_urls[*]}")"

# --- The bridges -----------------------------------------------------------------------------

# start_bridge NODE HTTP_ADDR MQTT_ADDR [BRIDGE ARGS...]: writes its --config file, starts it
# with its log lines prefixed "[NODE] ", and waits until its dashboard answers.
start_bridge() {
    local node="$1" http="$2" mqtt="$3"
    shift 3
    local config="$demo_dir/bridge-$node.toml"
    cat >"$config" <<EOF
# Written by scripts/cluster-demo.sh for bridge "$node"; rewritten at every start.
# node: unique per bridge; namespace: shared by all the bridges of one cluster.
[cluster]
nats_url = "$nats_url"
node = "$node"
namespace = "$namespace"
replicas = 3
EOF
    echo "==> starting bridge $node (http $http, mqtt $mqtt, config $config)"
    start "bridge $node" "prefix:[$node] " \
        "$bridge" --config "$config" --http "$http" --mqtt "$mqtt" "$@"

    local host port response deadline=$((SECONDS + ready_timeout))
    host="$(addr_host "$http")"
    port="$(addr_port "$http")"
    while :; do
        response="$(http_get "$host" "$port" /)"
        [[ "$response" == "HTTP/1."[01]" 200"* ]] && break
        alive "${pids[-1]}" || fail_start "$((${#pids[@]} - 1))"
        if [ "$SECONDS" -ge "$deadline" ]; then
            die "bridge $node does not answer at http://$http/ within ${ready_timeout}s"
        fi
        sleep 0.2
    done
}

start_bridge a "$a_http" "$a_mqtt" "$@"
start_bridge b "$b_http" "$b_mqtt" "$@"

# --- Running ---------------------------------------------------------------------------------

a_mqtt_host="$(addr_host "$a_mqtt")"
b_mqtt_host="$(addr_host "$b_mqtt")"
cat <<EOF
==> cluster demo running: two bridges, one broker (Ctrl-C stops everything)
    nats:      $nats_url   (JetStream, monitoring at http://127.0.0.1:$nats_monitor_port/)
    bridge a:  dashboard http://$a_http/   ws ws://$a_http/mqtt   mqtt $a_mqtt
    bridge b:  dashboard http://$b_http/   ws ws://$b_http/mqtt   mqtt $b_mqtt
    files:     $demo_dir/   (bridge configs, JetStream stores, nats-server logs)
    try it (subscribe on b, publish on a):
      mosquitto_sub -h $b_mqtt_host -p $(addr_port "$b_mqtt") -t 'demo/#' -v -C 1 & sleep 1; mosquitto_pub -h $a_mqtt_host -p $(addr_port "$a_mqtt") -t demo/hello -m 'hello from a' -q 1; wait
EOF

# Until a signal (the traps above), or until one of them exits by itself, which ends the demo.
while :; do
    wait -n || true
    for i in "${!pids[@]}"; do
        if ! alive "${pids[i]}"; then
            wait "${pids[i]}" && status=0 || status=$?
            die "${names[i]} exited (status $status); stopping the demo"
        fi
    done
done
