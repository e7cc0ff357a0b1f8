#!/usr/bin/env bash
# The one run command: sets up what running needs, builds the bridge in release and runs it
# with the dashboard on the embedded default store. Its exit code is the bridge's.
#
#   HTTP_ADDR  dashboard, WebSocket /mqtt and HTTP API   (default 127.0.0.1:8080)
#   MQTT_ADDR  MQTT over TCP                              (default 127.0.0.1:1883)
#   DATA_DIR   the embedded store's directory             (default ./data)
#
# Any arguments are passed on to the bridge after these.
#
# CLUSTER_DEMO=1 runs the local cluster demo (scripts/cluster-demo.sh) instead of the one
# bridge, after the same setup (which then also installs Debian's nats-server) and builds:
# 3 nats-server with JetStream and two bridges acting as one broker, "a" at
# http://127.0.0.1:8080/ (mqtt 127.0.0.1:1883) and "b" at http://127.0.0.1:8081/ (mqtt
# 127.0.0.1:1884). HTTP_ADDR, MQTT_ADDR and DATA_DIR do not apply to it: its own settings are
# at the top of scripts/cluster-demo.sh. Arguments go to both bridges; Ctrl-C or SIGTERM
# stops everything it started.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

http_addr="${HTTP_ADDR:-127.0.0.1:8080}"
mqtt_addr="${MQTT_ADDR:-127.0.0.1:1883}"
data_dir="${DATA_DIR:-./data}"

scripts/setup.sh run

echo "==> building the bridge (release)"
cargo build --release -p bridge
# The browser client's package (client-wasm/pkg/), which the bridge serves at /pkg/ for the
# dashboard's playground. The size budget is the test command's business, not a reason to
# refuse to run: --no-budget.
echo "==> building the browser client package (client-wasm/pkg)"
client-wasm/build.sh --no-budget

bridge="${CARGO_TARGET_DIR:-$root/target}/release/bridge"

if [ "${CLUSTER_DEMO:-}" = 1 ]; then
    # exec: Ctrl-C and SIGTERM reach the demo, which stops what it started.
    echo "==> starting the cluster demo (scripts/cluster-demo.sh)"
    exec scripts/cluster-demo.sh "$@"
fi

echo "==> starting the bridge"
echo "    dashboard: http://${http_addr}/   (playground included; client package at /pkg/)"
echo "    http:      ${http_addr}   (WebSocket MQTT at ws://${http_addr}/mqtt)"
echo "    mqtt:      ${mqtt_addr}"
echo "    data:      ${data_dir}"
exec "$bridge" --http "$http_addr" --mqtt "$mqtt_addr" --data "$data_dir" "$@"
