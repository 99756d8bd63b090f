// Runs a wasm32-wasip1 test binary under Node's WASI: `cargo test --target wasm32-wasip1` uses it
// as the target runner, so the filter's core is tested in WebAssembly as well as natively.
import { readFile } from 'node:fs/promises';
import { WASI } from 'node:wasi';
import process from 'node:process';

const [, , wasmPath, ...args] = process.argv;
const wasi = new WASI({
  version: 'preview1',
  args: [wasmPath, ...args],
  env: {},
  returnOnExit: true,
});
const module = await WebAssembly.compile(await readFile(wasmPath));
const instance = await WebAssembly.instantiate(module, wasi.getImportObject());
process.exitCode = wasi.start(instance);
