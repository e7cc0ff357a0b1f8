#!/usr/bin/env bash
# Installs everything the project needs on a fresh Debian 12 machine, and nothing twice.
#
#   scripts/setup.sh         everything: what running needs plus what the tests need
#   scripts/setup.sh run     only what `scripts/run.sh` needs (Rust targets, wasm-bindgen, npm)
#
# CLUSTER_DEMO=1 scripts/setup.sh run  also installs Debian's nats-server, which the local
# cluster demo (`CLUSTER_DEMO=1 scripts/run.sh`, scripts/cluster-demo.sh) needs.
#
# Every step checks first and skips when its tool is already there, so a second run takes
# seconds. Each step prints one line: "ok: ..." when present, "installing: ..." when not.
# The only network this needs is the package registries: crates.io, npm, PyPI and Debian's apt.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

mode="${1:-all}"
case "$mode" in
    all | run) ;;
    *)
        echo "usage: scripts/setup.sh [run]" >&2
        exit 64
        ;;
esac

# Nothing here may download a browser: Chromium comes from Debian (/usr/bin/chromium).
export PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1

ok() { echo "ok: $*"; }
installing() { echo "installing: $*"; }

# sudo only when not already root (CI and these machines run as root).
if [ "$(id -u)" -eq 0 ]; then
    as_root() { "$@"; }
else
    as_root() { sudo "$@"; }
fi

# --- Rust: wasm target and components -----------------------------------------------------

setup_rust() {
    if rustup target list --installed | grep -qx 'wasm32-unknown-unknown'; then
        ok "rust target wasm32-unknown-unknown present"
    else
        installing "rust target wasm32-unknown-unknown"
        rustup target add wasm32-unknown-unknown
    fi

    local installed missing=()
    installed="$(rustup component list --installed)"
    for component in rustfmt clippy; do
        grep -q "^${component}\(-\|$\)" <<<"$installed" || missing+=("$component")
    done
    if [ "${#missing[@]}" -eq 0 ]; then
        ok "rust components rustfmt clippy present"
    else
        installing "rust components ${missing[*]}"
        rustup component add "${missing[@]}"
    fi
}

# --- wasm-bindgen-cli, at exactly the wasm-bindgen version in Cargo.lock -------------------
# The CLI and the library must agree to the patch version, or wasm-bindgen refuses the wasm.

setup_wasm_bindgen() {
    local want have
    want="$(awk '
        $0 == "name = \"wasm-bindgen\"" { found = 1; next }
        found && /^version = / { gsub(/"/, "", $3); print $3; exit }
        /^\[\[package\]\]/ { found = 0 }
    ' Cargo.lock)"
    if [ -z "$want" ]; then
        echo "error: no wasm-bindgen in Cargo.lock" >&2
        exit 1
    fi
    have="$(wasm-bindgen --version 2>/dev/null | awk '{ print $2 }' || true)"
    if [ "$have" = "$want" ]; then
        ok "wasm-bindgen $want present"
    else
        installing "wasm-bindgen-cli $want (found: ${have:-none}; takes ~5-6 minutes)"
        # No --locked: the CLI's own lock names a crate version the registry here lacks.
        cargo install wasm-bindgen-cli --version "$want"
    fi
}

# --- npm: MQTT.js, playwright-core, binaryen (see package.json) ----------------------------

setup_npm() {
    local stamp=node_modules/.setup-stamp
    if [ -f "$stamp" ] && [ ! package-lock.json -nt "$stamp" ] && [ ! package.json -nt "$stamp" ]; then
        ok "npm packages present (node_modules up to date with package-lock.json)"
    else
        installing "npm packages (npm ci)"
        npm ci --no-audit --no-fund
        touch "$stamp"
    fi
}

# --- Debian packages: Chromium + driver (browser tests), mosquitto (interop, baseline),
# nats-server (the cluster tests and the local cluster demo) -------------------------------

apt_packages=(chromium chromium-driver mosquitto-clients mosquitto nats-server)

# setup_apt [PACKAGE...]: installs those of the packages (default: all of apt_packages) that
# are missing, with one apt-get run; nothing, not even apt-get update, when none is.
setup_apt() {
    local wanted=("$@") missing=()
    [ "${#wanted[@]}" -gt 0 ] || wanted=("${apt_packages[@]}")
    for pkg in "${wanted[@]}"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' ||
            missing+=("$pkg")
    done
    if [ "${#missing[@]}" -eq 0 ]; then
        ok "debian packages ${wanted[*]} present"
    else
        installing "debian packages ${missing[*]}"
        # apt is chatty: keep its output in a log and show it only if it fails.
        local log
        log="$(mktemp)"
        if ! {
            as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq &&
                as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
                    --no-install-recommends "${missing[@]}"
        } >"$log" 2>&1; then
            cat "$log" >&2
            rm -f "$log"
            echo "error: apt-get install ${missing[*]} failed" >&2
            exit 1
        fi
        rm -f "$log"
    fi
}

# Debian's mosquitto package enables a system broker on port 1883 and, where services may
# start (systemd running, no policy-rc.d forbidding it), starts it at once. Our tests start
# their own brokers on ports they choose, so none may be left running or enabled.
stop_system_mosquitto() {
    [ -e /lib/systemd/system/mosquitto.service ] || [ -e /etc/init.d/mosquitto ] || return 0
    local done_what=()
    if [ -d /run/systemd/system ]; then
        if systemctl is-active --quiet mosquitto || systemctl is-enabled --quiet mosquitto 2>/dev/null; then
            as_root systemctl disable --now --quiet mosquitto
            done_what+=("stopped and disabled the mosquitto service")
        fi
    else
        # No systemd running: still remove the boot links the package made (systemctl edits
        # them offline), and stop a broker the init script may have started, by its pid file.
        if systemctl is-enabled --quiet mosquitto 2>/dev/null; then
            as_root systemctl disable --quiet mosquitto >/dev/null 2>&1 || true
            done_what+=("disabled the mosquitto service")
        fi
        local pidfile pid
        pidfile="$(awk '$1 == "pid_file" { print $2 }' /etc/mosquitto/mosquitto.conf 2>/dev/null | tail -n 1)"
        pid="$(cat "${pidfile:-/run/mosquitto/mosquitto.pid}" 2>/dev/null || true)"
        if [ -n "$pid" ] && [ "$(cat "/proc/$pid/comm" 2>/dev/null || true)" = "mosquitto" ]; then
            as_root kill "$pid"
            done_what+=("stopped the system mosquitto (pid $pid)")
        fi
    fi
    if [ "${#done_what[@]}" -eq 0 ]; then
        ok "system mosquitto service neither running nor enabled"
    else
        local what
        for what in "${done_what[@]}"; do echo "fixed: $what (port 1883 stays free)"; done
    fi
}

# --- Python: paho-mqtt and friends (tests/requirements.txt) --------------------------------

python_requirements_met() {
    python3 - tests/requirements.txt <<'PY'
import sys
from importlib.metadata import PackageNotFoundError, version

from pip._vendor.packaging.requirements import Requirement

for line in open(sys.argv[1], encoding="utf-8"):
    line = line.split("#", 1)[0].strip()
    if not line:
        continue
    req = Requirement(line)
    try:
        if not req.specifier.contains(version(req.name), prereleases=True):
            sys.exit(1)
    except PackageNotFoundError:
        sys.exit(1)
PY
}

setup_python() {
    if python_requirements_met 2>/dev/null; then
        ok "python packages from tests/requirements.txt present"
    else
        installing "python packages from tests/requirements.txt"
        python3 -m pip install --quiet --root-user-action=ignore -r tests/requirements.txt
    fi
}

# --- Run the steps ---------------------------------------------------------------------------

setup_rust
setup_wasm_bindgen
setup_npm
if [ "$mode" = all ]; then
    setup_apt
    stop_system_mosquitto
    setup_python
elif [ "${CLUSTER_DEMO:-}" = 1 ]; then
    # `run` for the cluster demo: its NATS servers (`all` has nats-server in apt_packages).
    setup_apt nats-server
fi
# Later steps that every mode needs go above this line; test-only steps inside the `if`.
