#!/usr/bin/env bash
# The `[profile.release]` comparison behind the README's "Lean module" table: the filter built at
# opt-level 3, "s" and "z" (lto, one codegen unit, panic=abort, strip as in Cargo.toml; only the
# opt-level is overridden), each also through binaryen's wasm-opt (pinned below),
# then bench/run.py with all of them side by side against native jwt_authn (warm tools/call,
# and a new token per request, start to /ready, RSS, module size; one Envoy worker by default).
#   bash bench/profiles.sh
# PROFILES_SRC  the source tree to build (default: this checkout; a `git worktree` snapshot keeps
#               it still while others edit filter/src)
# PROFILES_OUT  where the builds go (default: target/profiles)
# BENCH_*       passed on to bench/run.py (BENCH_JSON defaults to bench/profiles.json)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
src=${PROFILES_SRC:-$root}
out=${PROFILES_OUT:-$root/target/profiles}
# binaryen from npm (PyPI has none), pinned here and installed under $out: the project does not
# ship wasm-opt's output (README, "A lean module"), so it is no dependency of the project.
BINARYEN_VERSION=132.0.0
wasm_opt=${WASM_OPT:-$out/binaryen/node_modules/.bin/wasm-opt}
if [ ! -x "$wasm_opt" ]; then
  npm install --prefix "$out/binaryen" --no-audit --no-fund --no-save "binaryen@$BINARYEN_VERSION"
fi
release=wasm32-wasip1/release/mcp_mesh_auth_filter.wasm
mkdir -p "$out/modules"
modules=()
for level in 3 s z; do
  (cd "$src" && CARGO_PROFILE_RELEASE_OPT_LEVEL=$level CARGO_TARGET_DIR="$out/target-o$level" \
    cargo build --release --target wasm32-wasip1 -p mcp-mesh-auth-filter)
  cp "$out/target-o$level/$release" "$out/modules/o$level.wasm"
  modules+=("o$level=$out/modules/o$level.wasm")
done
# wasm-opt with no pass only re-encodes and drops the name section: it tells the passes' effect
# from the names'.
for spec in oz:strip o3:O3 os:Oz oz:Oz; do
  module=${spec%:*} flags=${spec#*:}
  [ -f "$out/modules/$module-$flags.wasm" ] \
    || "$wasm_opt" $([ "$flags" = strip ] || echo "-$flags") "$out/modules/$module.wasm" -o "$out/modules/$module-$flags.wasm"
  modules+=("$module-$flags=$out/modules/$module-$flags.wasm")
done
cd "$root"
BENCH_MODULES=$(IFS=,; echo "${modules[*]}") BENCH_VARIANTS=${BENCH_VARIANTS:-native,wasm} \
  BENCH_SCENARIOS=${BENCH_SCENARIOS:-call,new_token} BENCH_LATENCY=${BENCH_LATENCY:-0} BENCH_STARTS=${BENCH_STARTS:-3} BENCH_CONCURRENCY=${BENCH_CONCURRENCY:-1} \
  BENCH_JSON=${BENCH_JSON:-$root/bench/profiles.json} .venv/bin/python bench/run.py
