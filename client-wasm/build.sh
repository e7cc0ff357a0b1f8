#!/usr/bin/env bash
# Builds the npm package client-wasm/pkg/ (ES module for `--target web`) and checks the size
# budget: everything a page downloads, each file gzip -9: _bg.wasm + JS glue + the JS snippet
# of `#[wasm_bindgen(module = ...)]` (pkg/snippets/**), at most 59 KB. Fails on any error or
# over budget. 61 300 B before issue 13's work on the branch `wasm` (wasm 54 351, glue 4 091,
# snippet 2 858); 59 396 B after it (wasm 53 754, glue 3 218, snippet 2 424); 59 862 B once
# merged with the branch `memory` (wasm 54 220: the protocol crate's VecMap/VecSet, public now
# and used by the client's state machine as by the broker's sessions).
#
#   client-wasm/build.sh               build, report the size, fail over budget
#   client-wasm/build.sh --no-budget   build and report the size only
#
# Where the bytes go (measured at 57.9 KB: commit 2cd506d plus this script; rustc 1.95,
# wasm-bindgen 0.2.130, npm binaryen wasm-opt; names kept by wasm-bindgen without
# --remove-name-section and `wasm-opt -g`, sized per function): the wasm is 54.2 KB gzip
# (129 KB raw: code 117 KB, data 9.5 KB, imports 1.3 KB), the JS glue 3.7 KB. Of the wasm:
# client_wasm's own code with the client state machine inlined into it ~34% (each exported
# method carries its own copy of `run`: ~1.5 KB gzip to gain by one non-generic body), the
# packet decoders ~12% (those of CONNECT, SUBSCRIBE, UNSUBSCRIBE go once the client decodes
# with `decode_from_server`: ~2 KB gzip), MQTT 5.0 properties ~7%, strings ~7% (error
# messages, reason code names, JS keys, panic locations), dlmalloc ~6% (talc: ~2-3 KB gzip
# less), alloc collections ~6%, core::fmt with the panic machinery ~5% (std's panic hook
# formats, so it stays; the errors' Display impls add ~2% more, and a fmt-free message path
# measured only ~0.3 KB less), packet encoding ~3%, wasm-bindgen/js-sys/web-sys ~3%.
# shrink-glue.mjs takes ~2.5 KB gzip off the glue (import names, JSDoc, indentation).
# Measured since (issue 13, at ~61.2 KB): JavaScript ships unminified, so moving work out of
# Rust pays only where the bindings were heavy (the option checks: -0.5 KB; session() and
# received properties built in JS: +0.2 KB, not done); one snippet file instead of three:
# -0.3 KB; every error message stubbed out (no Display reachable): only -1.8 KB, as std's
# panic handler keeps core::fmt on stable (FormatStringPayload). What remains to get near
# 50 KB is outside this crate: a JS minifier for glue and snippet, or nightly build-std
# with panic_immediate_abort.
# Issue 13, measured on the branch `wasm` (rustc 1.95, wasm-bindgen 0.2.130, esbuild 0.28):
# - esbuild's minifier on glue and snippet (below): -1 305 B (glue -873, snippet -434).
# - no_std + alloc (`--no-default-features`, protocol's `std` feature off, a panic handler
#   that traps): -597 B. Small alone: the error messages still go through core::fmt
#   (thiserror's Display, `format!`), which keeps Formatter, pad, pad_integral and fmt::write.
# - Those messages stubbed out on top of no_std (an experiment, not shipped): wasm 53 754 ->
#   47 950 B, core::fmt gone entirely (no fmt function left in a named build): -5.8 KB, of
#   which the message texts are a part that would come back as JavaScript or fmt-free Rust
#   (~2 KB?). So the next step to 50 KB: the ~66 error messages (protocol's DecodeError,
#   ClientError, TopicError, ReasonCode's Display, client-wasm's Error) written without
#   core::fmt (str pieces and a small integer writer, tested equal to the Display texts on
#   the host), then the client-only decoders (`decode_from_server`, ~2 KB, above).
#
# wasm-opt is npm binaryen's (node_modules/.bin), never Debian's: Debian's wasm-opt 108
# mixes up the externref and funcref tables and the output fails in Chromium (TOOLCHAIN.md).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
pkg="client-wasm/pkg"
budget=$((59 * 1024))
enforce_budget=1
if [ "${1:-}" = "--no-budget" ]; then
    enforce_budget=0
fi

# Without std (no_std + alloc, its own panic handler: see client-wasm/Cargo.toml).
cargo build -p client-wasm --no-default-features --target wasm32-unknown-unknown --profile wasm-release

rm -rf "$pkg"
wasm-bindgen target/wasm32-unknown-unknown/wasm-release/client_wasm.wasm \
    --target web --out-dir "$pkg" --out-name client_wasm \
    --remove-name-section --remove-producers-section

wasm_opt="node_modules/.bin/wasm-opt"
if [ ! -x "$wasm_opt" ]; then
    echo "build.sh: $wasm_opt is missing: run 'npm ci' at the repository root" >&2
    exit 1
fi
# -Oz twice: the second pass still takes ~100 B (gzip) off; a third, --converge or -Os gain
# nothing more (measured). The target_features section only tells build tools what the module
# uses (wasm-bindgen needed it above); browsers ignore it (~0.1 KB). The --enable-* flags are
# the features rustc enables by default for wasm32-unknown-unknown: wasm-opt must accept them.
"$wasm_opt" -Oz -Oz --strip-target-features \
    --enable-bulk-memory --enable-reference-types --enable-nontrapping-float-to-int \
    --enable-sign-ext --enable-mutable-globals --enable-multivalue \
    "$pkg/client_wasm_bg.wasm" -o "$pkg/client_wasm_bg.opt.wasm"
mv "$pkg/client_wasm_bg.opt.wasm" "$pkg/client_wasm_bg.wasm"

# Import names, comments and indentation out of the glue and the snippets (see
# shrink-glue.mjs for why, and for what it checks).
node client-wasm/shrink-glue.mjs "$pkg" client_wasm

# Then every JS file through esbuild's minifier (npm devDependency; ~1.3 KB of the gzip total:
# local names, syntax). Transform mode (stdin, no --format): top-level names stay as they are,
# so the exports, `class MqttClient` (its `.name`) and the snippet's exported functions keep
# their names; --format=esm would rename them (`class A`) for only 0.1 KB more. esbuild drops
# the glue's `/* @ts-self-types=... */` directive (the types for Deno): it is put back.
esbuild="node_modules/.bin/esbuild"
if [ ! -x "$esbuild" ]; then
    echo "build.sh: $esbuild is missing: run 'npm ci' at the repository root" >&2
    exit 1
fi
while IFS= read -r -d '' f; do
    directive="$(head -n1 "$f" | grep -E '^/\* @ts-self-types=.* \*/$' || true)"
    {
        if [ -n "$directive" ]; then
            echo "$directive"
        fi
        # wasm-bindgen repeats the snippet module as a key of the import object (once per
        # import): harmless, the same value each time.
        "$esbuild" --minify --log-level=warning --log-override:duplicate-object-key=silent < "$f"
    } > "$f.min"
    mv "$f.min" "$f"
done < <(find "$pkg" -name '*.js' -type f -print0)

# The snippets wasm-bindgen copied for `#[wasm_bindgen(module = "/js/...")]` (if any): the glue
# imports them, so they ship in the package and count toward the budget.
snippets=""
if [ -d "$pkg/snippets" ]; then
    snippets=', "snippets/"'
fi

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
  "files": ["README.md", "client_wasm.js", "client_wasm.d.ts", "client_wasm_bg.wasm", "client_wasm_bg.wasm.d.ts"${snippets}],
  "sideEffects": false
}
JSON

cat > "$pkg/README.md" <<'MD'
# mqtt-bridge-client

MQTT 3.1.1 and 5.0 over WebSocket for browsers, compiled to WebAssembly from the same codec and
client state machine as the mqtt-bridge broker. Auto-reconnect with backoff, promises that
resolve on PUBACK / PUBCOMP, and `client.session()` to see the session. Types: `client_wasm.d.ts`.
Short-lived tokens: `password` (and `username`) may be a function, called again before every
connection attempt, and `transformWsUrl(url)` gives the URL of each attempt.

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
snip_n=0
snip_raw=0
snip_gz=0
if [ -d "$pkg/snippets" ]; then
    while IFS= read -r -d '' f; do
        snip_n=$((snip_n + 1))
        snip_raw=$((snip_raw + $(wc -c < "$f")))
        snip_gz=$((snip_gz + $(gz "$f")))
    done < <(find "$pkg/snippets" -type f -print0)
fi
total=$((wasm_gz + js_gz + snip_gz))
echo "client-wasm/pkg: client_wasm_bg.wasm ${wasm_raw} B (gzip -9 ${wasm_gz} B)," \
    "client_wasm.js ${js_raw} B (gzip -9 ${js_gz} B)," \
    "snippets/ ${snip_n} files ${snip_raw} B (gzip -9 ${snip_gz} B);" \
    "total gzip -9 ${total} B of ${budget} B"
if [ "$total" -gt "$budget" ] && [ "$enforce_budget" -eq 1 ]; then
    echo "build.sh: over the size budget: ${total} B > ${budget} B (59 KB)" >&2
    exit 1
fi
