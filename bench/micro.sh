#!/usr/bin/env bash
# Token verification on the host vs in WebAssembly under V8: bench/verify-micro times the filter's
# `verify::verify` (RS256 valid, RS256 forged, ES256) and the bare RSA step, natively and as a
# wasm32-wasip1 program under Node (V8 with Liftoff off, as Envoy runs it: TurboFan code only).
# Then the bare RSA step with the `rsa` crate's 32-bit and 64-bit digits (the filter uses 32 in wasm32).
#   bash bench/micro.sh            one JSON line per case and engine
#   MICRO_PROFILE=1 bash bench/micro.sh   also a V8 CPU profile of verify_rs256 in wasm, summarised
# Pinned to one CPU (MICRO_CPU, default 1). Not part of `make test`: it is a measurement.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cd "$here/verify-micro"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$here/verify-micro/target}
cpu=${MICRO_CPU:-1}
runner="$here/verify-micro/run.mjs"
v8() { taskset -c "$cpu" node --no-warnings --no-liftoff "$@"; }

cargo build --release --quiet
cargo build --release --quiet --target wasm32-wasip1
taskset -c "$cpu" "$CARGO_TARGET_DIR/release/verify-micro"
v8 "$runner" "$CARGO_TARGET_DIR/wasm32-wasip1/release/verify-micro.wasm"

for digits in u32 u64; do
  features=$([ $digits = u64 ] && echo u64_digit || true)
  dir="$CARGO_TARGET_DIR/bare-$digits"
  CARGO_TARGET_DIR=$dir cargo build --release --quiet --no-default-features --features "$features"
  CARGO_TARGET_DIR=$dir cargo build --release --quiet --no-default-features --features "$features" --target wasm32-wasip1
  taskset -c "$cpu" "$dir/release/verify-micro" rsa_pkcs1v15_verify | sed "s/verify\"/verify_$digits\"/"
  v8 "$runner" "$dir/wasm32-wasip1/release/verify-micro.wasm" rsa_pkcs1v15_verify | sed "s/verify\"/verify_$digits\"/"
done

if [ "${MICRO_PROFILE:-0}" = 1 ]; then
  profile=$(mktemp -d)
  v8 --cpu-prof --cpu-prof-dir="$profile" "$runner" "$CARGO_TARGET_DIR/wasm32-wasip1/release/verify-micro.wasm" verify_rs256 >/dev/null
  python3 "$here/cpuprofile_top.py" "$profile"/*.cpuprofile
  rm -rf "$profile"
fi
