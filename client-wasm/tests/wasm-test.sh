#!/usr/bin/env bash
# The wasm client's Rust tests (client-wasm/tests/*.rs, wasm-bindgen-test) in headless
# Chromium against real bridges:
#
#   client-wasm/tests/wasm-test.sh [cargo test args...]   e.g. -- connect_ (a name filter)
#
# Needs target/debug/bridge (`cargo build -p bridge`; BRIDGE_BIN overrides),
# wasm-bindgen-test-runner at the wasm-bindgen version of Cargo.lock and chromedriver
# (scripts/setup.sh installs both). The runner comes from .cargo/config.toml.
#
# It starts two bridges on 127.0.0.1:0 (--data none): the one the tests talk to, and one with
# `retain_available = false` that refuses a retained will by CONNACK. The runner serves the test
# page from an address chosen here (WASM_BINDGEN_TEST_ADDRESS), and both bridges allow that
# origin as an operator allows an app served from elsewhere: `[server] allowed_origins` for its
# WebSockets, `[api] cors_origins` for the kicks the tests send to the admin API. The bridges'
# addresses reach the tests at compile time (option_env!): the tests run inside the browser,
# which has no environment to read. The ports differ on every run, so cargo rebuilds the test
# crate (only it, a few seconds) each time. That beats fixed ports, which would collide with
# anything else on the machine, another run of this script included; it needs no file written
# into the source tree for the runner to serve, either.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root"
bridge_bin="${BRIDGE_BIN:-$root/target/debug/bridge}"
if [ ! -x "$bridge_bin" ]; then
    echo "wasm-test.sh: $bridge_bin is missing: run 'cargo build -p bridge' first" >&2
    exit 1
fi

work="$(mktemp -d)"
pids=()
cleanup() {
    local status=$?
    for pid in "${pids[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${pids[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    if [ "$status" -ne 0 ]; then
        for log in "$work"/*.log; do
            [ -s "$log" ] || continue
            echo "--- $(basename "$log") (last 20 lines)" >&2
            tail -n 20 "$log" >&2
        done
    fi
    rm -rf "$work"
}
trap cleanup EXIT

# start_bridge NAME [bridge args...]: starts a bridge on 127.0.0.1:0 and waits (15 s at most)
# for its `bridge listening: http=… ws=… mqtt=…` line, left in "$work/NAME.addr".
start_bridge() {
    local name="$1"
    shift
    RUST_LOG="${RUST_LOG:-warn}" "$bridge_bin" --http 127.0.0.1:0 --mqtt 127.0.0.1:0 \
        --data none "$@" >"$work/$name.out" 2>"$work/$name.log" &
    local pid=$!
    pids+=("$pid")
    local waited=0
    until grep -q '^bridge listening: ' "$work/$name.out"; do
        if ! kill -0 "$pid" 2>/dev/null; then
            echo "wasm-test.sh: the $name bridge exited before listening" >&2
            exit 1
        fi
        if [ "$waited" -ge 150 ]; then
            echo "wasm-test.sh: the $name bridge is not listening after 15 s" >&2
            exit 1
        fi
        sleep 0.1
        waited=$((waited + 1))
    done
    grep -m1 '^bridge listening: ' "$work/$name.out" >"$work/$name.addr"
}

# field NAME KEY: the value of KEY=… in the bridge's listening line.
field() {
    sed -n "s/.* $2=\([^ ]*\).*/\1/p" "$work/$1.addr"
}

# free_port: a port the kernel just gave out and took back.
free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

export WASM_BINDGEN_TEST_ADDRESS
WASM_BINDGEN_TEST_ADDRESS="127.0.0.1:$(free_port)"
runner_origin="http://$WASM_BINDGEN_TEST_ADDRESS"
printf '[server]\nallowed_origins = ["%s"]\n[api]\ncors_origins = ["%s"]\n' \
    "$runner_origin" "$runner_origin" >"$work/main.toml"
start_bridge main --config "$work/main.toml"
printf '[broker]\nretain_available = false\n' | cat "$work/main.toml" - >"$work/no-retain.toml"
start_bridge no-retain --config "$work/no-retain.toml"

export BRIDGE_WS_URL BRIDGE_HTTP_URL NO_RETAIN_BRIDGE_WS_URL REFUSED_WS_URL
BRIDGE_WS_URL="$(field main ws)"
BRIDGE_HTTP_URL="$(field main http)"
NO_RETAIN_BRIDGE_WS_URL="$(field no-retain ws)"
# A port nothing listens on.
REFUSED_WS_URL="ws://127.0.0.1:$(free_port)/mqtt"
for v in BRIDGE_WS_URL BRIDGE_HTTP_URL NO_RETAIN_BRIDGE_WS_URL; do
    if [ -z "${!v}" ]; then
        echo "wasm-test.sh: cannot read $v from the bridge's listening line" >&2
        exit 1
    fi
done

# The runner's limit is for the whole test binary; the tests take seconds.
export WASM_BINDGEN_TEST_TIMEOUT="${WASM_BINDGEN_TEST_TIMEOUT:-60}"
# The runner serves its page cross-origin isolated (COEP require-corp) by default, which
# blocks the tests' requests to the bridge's API (another origin, no CORS headers).
export WASM_BINDGEN_TEST_NO_ORIGIN_ISOLATION=1
if [ -z "${CHROMEDRIVER:-}" ] && [ -x /usr/bin/chromedriver ]; then
    export CHROMEDRIVER=/usr/bin/chromedriver
fi

echo "wasm-test.sh: bridge $BRIDGE_WS_URL, refusing bridge $NO_RETAIN_BRIDGE_WS_URL"
# Every tests/*.rs; not the library's own unit-test harness (it has no browser tests). Cargo
# runs the runner in client-wasm/, where it finds webdriver.json (Chromium's extra flags).
cargo test -p client-wasm --target wasm32-unknown-unknown --test '*' "$@"
