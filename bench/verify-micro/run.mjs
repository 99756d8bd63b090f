// Runs the wasm32-wasip1 build of the microbenchmark under Node's WASI. The filter's library
// brings its proxy-wasm imports (module "env") along; they are never called here, so each is a
// stub that throws, and its `_initialize` export (proxy-wasm's) is hidden from WASI's `start`.
import { readFile } from 'node:fs/promises';
import { WASI } from 'node:wasi';
import process from 'node:process';

const [, , wasmPath, ...args] = process.argv;
const wasi = new WASI({ version: 'preview1', args: [wasmPath, ...args], env: {}, returnOnExit: true });
const module = await WebAssembly.compile(await readFile(wasmPath));
const imports = wasi.getImportObject();
for (const { module: from, name, kind } of WebAssembly.Module.imports(module)) {
  if (from in imports && name in imports[from]) continue;
  if (kind !== 'function') throw new Error(`cannot stub ${from}.${name} (${kind})`);
  imports[from] ??= {};
  imports[from][name] = () => { throw new Error(`${from}.${name} called`); };
}
const { exports } = await WebAssembly.instantiate(module, imports);
process.exitCode = wasi.start({ exports: { memory: exports.memory, _start: exports._start } });
