// Shrinks what wasm-bindgen writes into the package, without changing what it does. Run by
// client-wasm/build.sh after wasm-opt:
//
//   node client-wasm/shrink-glue.mjs <pkg dir> <out-name>     (client-wasm/pkg client_wasm)
//
// 1. Import names. wasm-bindgen names every import it generates `__wbg_<name>_<16 hex digits>`
//    and spells each name twice: in the wasm import section and as a key of the JS glue's
//    import object. The hex digits do not compress; renaming the imports to one or two
//    letters in both files saves about 1.7 KB of the gzip total (measured with
//    wasm-bindgen 0.2.130). Only imports of the glue's own module are renamed: a snippet's
//    (`#[wasm_bindgen(module = ...)]`) functions keep the names its JS exports.
// 2. Comments and indentation, in the glue and in the snippets (<pkg>/snippets/**/*.js). The
//    glue repeats each exported item's Rust doc comment as JSDoc; the package's documentation
//    is the hand-written client_wasm.d.ts. Whole-line comments and indentation go (about
//    1.2 KB gzip for the glue, half of each snippet); the `/* @ts-self-types=... */`
//    directive stays. A file with a template literal over several lines is left as it is
//    (its text would change).
//
// Every rename is checked (each key found exactly once, no old name left behind) and every JS
// file is parsed afterwards, so a future wasm-bindgen that writes its glue differently fails
// the build here instead of shipping a package that cannot load.
import { readFileSync, writeFileSync, mkdtempSync, rmSync, readdirSync, existsSync } from "node:fs";
import { execFileSync } from "node:child_process";
import { tmpdir } from "node:os";
import { join } from "node:path";

const [pkg, outName] = process.argv.slice(2);
if (!pkg || !outName) {
  console.error("usage: shrink-glue.mjs <pkg dir> <out-name>");
  process.exit(2);
}
const wasmPath = join(pkg, `${outName}_bg.wasm`);
const jsPath = join(pkg, `${outName}.js`);
// The module the glue's imports come from, as wasm-bindgen --target web names it.
const GLUE_MODULE = `./${outName}_bg.js`;

function fail(message) {
  console.error(`shrink-glue.mjs: ${message}`);
  process.exit(1);
}

// ---- LEB128 ----
function readU32(buf, at) {
  let value = 0;
  let shift = 0;
  for (;;) {
    const byte = buf[at++];
    if (byte === undefined) fail("truncated wasm");
    value += (byte & 0x7f) * 2 ** shift;
    shift += 7;
    if (byte < 0x80) return [value, at];
  }
}
function writeU32(value) {
  const out = [];
  do {
    let byte = value & 0x7f;
    value = Math.floor(value / 128);
    if (value > 0) byte |= 0x80;
    out.push(byte);
  } while (value > 0);
  return out;
}

// Short names: a, b, ..., Z, aa, ab, ... (each a valid key of an object literal, where even a
// reserved word such as `do` or `if` may stand).
function shortName(n) {
  const letters = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
  let name = "";
  for (;;) {
    name = letters[n % 52] + name;
    n = Math.floor(n / 52);
    if (n === 0) return name;
    n -= 1;
  }
}

const wasm = readFileSync(wasmPath);
if (wasm.readUInt32LE(0) !== 0x6d736100 || wasm.readUInt32LE(4) !== 1) fail(`${wasmPath} is not a wasm module`);
const decoder = new TextDecoder("utf-8", { fatal: true });
const encoder = new TextEncoder();

// ---- rename the imports in the wasm import section ----
const renames = new Map();
let counter = 0;
const out = [wasm.subarray(0, 8)];
let at = 8;
while (at < wasm.length) {
  const id = wasm[at];
  const [size, bodyAt] = readU32(wasm, at + 1);
  const end = bodyAt + size;
  if (id !== 2) {
    out.push(wasm.subarray(at, end));
    at = end;
    continue;
  }
  const body = [];
  let [count, p] = readU32(wasm, bodyAt);
  body.push(...writeU32(count));
  for (let i = 0; i < count; i++) {
    let len;
    [len, p] = readU32(wasm, p);
    const module = decoder.decode(wasm.subarray(p, p + len));
    p += len;
    [len, p] = readU32(wasm, p);
    const field = decoder.decode(wasm.subarray(p, p + len));
    p += len;
    const descAt = p;
    const kind = wasm[p++];
    if (kind === 0) {
      [, p] = readU32(wasm, p); // function: type index
    } else if (kind === 1) {
      p += 1; // table: reference type, then limits
      let flags;
      [flags, p] = readU32(wasm, p);
      [, p] = readU32(wasm, p);
      if (flags & 1) [, p] = readU32(wasm, p);
    } else if (kind === 2) {
      let flags; // memory: limits
      [flags, p] = readU32(wasm, p);
      [, p] = readU32(wasm, p);
      if (flags & 1) [, p] = readU32(wasm, p);
    } else if (kind === 3) {
      p += 2; // global: value type, mutability
    } else {
      fail(`unknown import kind ${kind} (${module} ${field})`);
    }
    let name = field;
    if (module === GLUE_MODULE && kind === 0) {
      if (renames.has(field)) fail(`import ${field} appears twice`);
      name = shortName(counter++);
      renames.set(field, name);
    }
    const m = encoder.encode(module);
    const n = encoder.encode(name);
    body.push(...writeU32(m.length), ...m, ...writeU32(n.length), ...n, ...wasm.subarray(descAt, p));
  }
  if (p !== end) fail("import section not fully read");
  out.push(Buffer.from([2, ...writeU32(body.length), ...body]));
  at = end;
}
if (renames.size === 0) fail(`no import of module ${GLUE_MODULE}: is this wasm-bindgen output?`);

// ---- the same renames in the JS import object ----
let js = readFileSync(jsPath, "utf8");
for (const [old, name] of renames) {
  // wasm-bindgen 0.2 writes each import as `        <name>: function(` in `import0`.
  const key = new RegExp(`(\\n\\s+)${old}(: function\\()`, "g");
  const found = js.match(key)?.length ?? 0;
  if (found !== 1) fail(`import ${old}: ${found} keys in ${jsPath}, expected 1`);
  js = js.replace(key, `$1${name}$2`);
  if (new RegExp(`\\b${old}\\b`).test(js)) fail(`import ${old} is still referenced in ${jsPath}`);
}

// ---- whole-line comments and indentation ----
function strip(text, file) {
  const lines = text.split("\n");
  if (lines.some((line) => (line.match(/`/g)?.length ?? 0) % 2 === 1)) {
    return text; // a template literal spans lines: leave the file as it is
  }
  const kept = [];
  for (let i = 0; i < lines.length; i++) {
    let line = lines[i].trim();
    if (line.startsWith("/*") && !line.startsWith("/* @ts-")) {
      // A comment that opens the line: drop it up to its end, keep what follows that.
      let end = line.indexOf("*/", 2);
      while (end < 0) {
        i++;
        if (i === lines.length) fail(`${file}: unterminated comment`);
        line = lines[i].trim();
        end = line.indexOf("*/");
      }
      line = line.slice(end + 2).trim();
    }
    if (line === "" || line.startsWith("//")) continue;
    kept.push(line);
  }
  return kept.join("\n") + "\n";
}

// Every JS file must still parse, as the ES module it is (checked as a .mjs copy, so that
// the check does not depend on a package.json beside it).
const dir = mkdtempSync(join(tmpdir(), "shrink-glue-"));
function check(text, file) {
  const copy = join(dir, "check.mjs");
  writeFileSync(copy, text);
  try {
    execFileSync(process.execPath, ["--check", copy], { stdio: "pipe" });
  } catch (e) {
    rmSync(dir, { recursive: true, force: true });
    fail(`${file} no longer parses: ${e.stderr ?? e.message}`);
  }
}

function jsFiles(root) {
  if (!existsSync(root)) return [];
  return readdirSync(root, { recursive: true })
    .map((f) => join(root, String(f)))
    .filter((f) => f.endsWith(".js"));
}

js = strip(js, jsPath);
check(js, jsPath);
const snippets = jsFiles(join(pkg, "snippets")).map((file) => {
  const text = strip(readFileSync(file, "utf8"), file);
  check(text, file);
  return [file, text];
});
rmSync(dir, { recursive: true, force: true });

writeFileSync(wasmPath, Buffer.concat(out));
writeFileSync(jsPath, js);
for (const [file, text] of snippets) writeFileSync(file, text);
console.log(
  `shrink-glue.mjs: ${renames.size} imports renamed; comments and indentation out of ${jsPath}` +
    ` and ${snippets.length} snippet file(s)`,
);
