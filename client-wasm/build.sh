#!/usr/bin/env bash
# Builds the npm package client-wasm/pkg/ (ES module for `--target web`) and checks the size
# budget: _bg.wasm + JS glue, gzip -9, at most 60 KB. Fails on any error or over budget.
#
#   client-wasm/build.sh               build, report the size, fail over budget
#   client-wasm/build.sh --no-budget   build and report the size only
#
# Size seen: 61 121 B of 61 440 B (wasm 55 511 B + JS glue 5 610 B, gzip -9). Most of it is
# the protocol crate as linked into the client (the decoder, the client state machine),
# the allocator and core::fmt; protocol/src/vecmap.rs keeps the client's maps small.
#
# wasm-opt is npm binaryen's (node_modules/.bin), never Debian's: Debian's wasm-opt 108
# mixes up the externref and funcref tables and the output fails in Chromium (TOOLCHAIN.md).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
pkg="client-wasm/pkg"
budget=$((60 * 1024))
enforce_budget=1
if [ "${1:-}" = "--no-budget" ]; then
    enforce_budget=0
fi

cargo build -p client-wasm --target wasm32-unknown-unknown --profile wasm-release

rm -rf "$pkg"
wasm-bindgen target/wasm32-unknown-unknown/wasm-release/client_wasm.wasm \
    --target web --out-dir "$pkg" --out-name client_wasm \
    --remove-name-section --remove-producers-section

wasm_opt="node_modules/.bin/wasm-opt"
if [ ! -x "$wasm_opt" ]; then
    echo "build.sh: $wasm_opt is missing: run 'npm ci' at the repository root" >&2
    exit 1
fi
# The features rustc enables by default for wasm32-unknown-unknown; wasm-opt must accept them.
"$wasm_opt" -Oz \
    --enable-bulk-memory --enable-reference-types --enable-nontrapping-float-to-int \
    --enable-sign-ext --enable-mutable-globals --enable-multivalue \
    "$pkg/client_wasm_bg.wasm" -o "$pkg/client_wasm_bg.opt.wasm"
mv "$pkg/client_wasm_bg.opt.wasm" "$pkg/client_wasm_bg.wasm"

version="$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n1)"
cat > "$pkg/package.json" <<JSON
{
  "name": "mqtt-bridge-client",
  "version": "${version}",
  "description": "MQTT 3.1.1 and 5.0 over WebSocket for browsers: the mqtt-bridge client compiled to WebAssembly",
  "license": "MIT OR Apache-2.0",
  "type": "module",
  "main": "client_wasm.js",
  "module": "client_wasm.js",
  "types": "client_wasm.d.ts",
  "files": ["README.md", "client_wasm.js", "client_wasm.d.ts", "client_wasm_bg.wasm", "client_wasm_bg.wasm.d.ts"],
  "sideEffects": false
}
JSON

cat > "$pkg/README.md" <<'MD'
# mqtt-bridge-client

MQTT 3.1.1 and 5.0 over WebSocket for browsers, compiled to WebAssembly from the same codec and
client state machine as the mqtt-bridge broker. Auto-reconnect with backoff, promises that
resolve on PUBACK / PUBCOMP, and `client.session()` to see the session. Types: `client_wasm.d.ts`.

```js
import init, { connect } from "mqtt-bridge-client";
await init();
const client = await connect("ws://127.0.0.1:8080/mqtt", { clientId: "page-1", clean: false, protocolVersion: 5, sessionExpiryInterval: 3600 });
client.on("message", (topic, payload) => console.log(topic, new TextDecoder().decode(payload)));
await client.subscribe("sensors/#", { qos: 1 });
await client.publish("sensors/door", "open", { qos: 2 }); // resolved at PUBCOMP
console.log(client.session());
await client.end();
```
MD

gz() { gzip -9 -c "$1" | wc -c; }
wasm_raw=$(wc -c < "$pkg/client_wasm_bg.wasm")
js_raw=$(wc -c < "$pkg/client_wasm.js")
wasm_gz=$(gz "$pkg/client_wasm_bg.wasm")
js_gz=$(gz "$pkg/client_wasm.js")
total=$((wasm_gz + js_gz))
echo "client-wasm/pkg: client_wasm_bg.wasm ${wasm_raw} B (gzip -9 ${wasm_gz} B)," \
    "client_wasm.js ${js_raw} B (gzip -9 ${js_gz} B); total gzip -9 ${total} B of ${budget} B"
if [ "$total" -gt "$budget" ] && [ "$enforce_budget" -eq 1 ]; then
    echo "build.sh: over the size budget: ${total} B > ${budget} B (60 KB)" >&2
    exit 1
fi
