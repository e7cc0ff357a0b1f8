#!/usr/bin/env bash
# Soak run of the hostile-client suite (tests/hostile.rs) at the sizes issue 10 measured,
# against the RELEASE bridge. Minutes, not seconds, so it is not part of scripts/test.sh
# (which runs the same tests at small sizes against the debug build).
#
# What changes from the test command (each a HOSTILE_* variable the tests read; set one
# yourself to override it):
#   HOSTILE_RETAINED=100000        retained messages before one SUBSCRIBE of 1 000 filters
#                                  (the bystander's round trip must stay under 500 ms)
#   HOSTILE_GROUPS=100000          $share/gN/x/N groups (QoS 1 rate after >= half of before)
#   HOSTILE_IDLE=2000              idle TCP and idle WebSocket connections each (release
#                                  bounds: 4 KiB per TCP, 16 KiB per WebSocket connection)
#   HOSTILE_FLOOD_SECS=30          WebSocket ping flood: at most this long, and at most
#   HOSTILE_FLOOD_MB=2048          this much per connection (RSS < start + 64 MiB)
#   HOSTILE_BURST_PUBLISHERS=50    publishers in the burst (RSS back within 2x afterwards)
#   HOSTILE_BURST_MESSAGES=4000    1 KiB QoS 1 messages per publisher
# Tests run one at a time (--test-threads=1) so each has the machine to itself and the
# RSS figures are the bridge's alone.
#
# Usage: scripts/soak.sh [test name filter] [-- extra libtest args]
#   scripts/soak.sh                       every hostile test at soak sizes
#   scripts/soak.sh shared_subscription   one of them
# Needs: prlimit (util-linux), ~3 GB of free memory for a bridge that fails the bounds.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

export HOSTILE_RETAINED="${HOSTILE_RETAINED:-100000}"
export HOSTILE_GROUPS="${HOSTILE_GROUPS:-100000}"
export HOSTILE_IDLE="${HOSTILE_IDLE:-2000}"
export HOSTILE_FLOOD_SECS="${HOSTILE_FLOOD_SECS:-30}"
export HOSTILE_FLOOD_MB="${HOSTILE_FLOOD_MB:-2048}"
export HOSTILE_BURST_PUBLISHERS="${HOSTILE_BURST_PUBLISHERS:-50}"
export HOSTILE_BURST_MESSAGES="${HOSTILE_BURST_MESSAGES:-4000}"

# 2 000 + 2 000 connections on both ends, plus the bridge's own.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

echo "==> building the release bridge"
cargo build --release -p bridge
export BRIDGE_BIN="$root/target/release/bridge"

echo "==> hostile suite at soak sizes against $BRIDGE_BIN"
started=$SECONDS
cargo test -p e2e --test hostile -- --test-threads=1 --nocapture "$@"
echo "==> soak passed in $((SECONDS - started))s"
