#!/usr/bin/env bash
# The side-by-side benchmark: the bridge beside mosquitto, every scenario of issue 13, in
# alternating rounds; writes BENCHMARKS.md. See bench/compare.py for the scenarios.
#
#   bench/compare.sh                  # full run (~15 min): release builds, 3 rounds
#   bench/compare.sh --browser        # also the browser clients (bench/browser/run.mjs)
#   bench/compare.sh --only fanin,qos0 --rounds 1 --out /tmp/b.md
#   bench/compare.sh --smoke          # each scenario once, tiny counts, debug builds, a few
#                                     # seconds; report to a temporary file (scripts/test.sh)
#   bench/compare.sh --no-build ...   # use the binaries already in target/
#
# It builds what it runs, so that a re-run after a merge never measures stale binaries.
# The fan-out's 10 000 subscribers need 10 000 descriptors in mqtt-bench and in the broker:
# the open-files limit is raised to the hard limit here, and every process inherits it.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

release="--release"
build=1
for arg in "$@"; do
    case "$arg" in
        --smoke) release="" ;;
        --no-build) build=0 ;;
        -h|--help) exec python3 bench/compare.py --help ;;
    esac
done

if [ "$build" -eq 1 ]; then
    cargo build $release -p bridge -p mqtt-bench
fi
ulimit -n "$(ulimit -Hn)"
exec python3 bench/compare.py "$@"
