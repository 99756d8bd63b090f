"""Summarises a V8 .cpuprofile (node --cpu-prof): self time per function, the top 25, and the
share of the big-number arithmetic (num-bigint-dig, compiler-rt's 128-bit multiply)."""

import collections
import json
import sys

profile = json.load(open(sys.argv[1]))
nodes = {node["id"]: node for node in profile["nodes"]}
ticks = collections.Counter()
for sample in profile["samples"]:
    ticks[nodes[sample]["callFrame"]["functionName"] or "(anonymous)"] += 1
total = sum(ticks.values())
print(f"{total} samples of verify_rs256 under V8 (self time)")
for name, count in ticks.most_common(25):
    print(f"{100 * count / total:5.1f}%  {name[:110]}")
bignum = sum(c for n, c in ticks.items() if "num_bigint" in n or "__multi3" in n or "biguint" in n.lower())
print(f"{100 * bignum / total:5.1f}%  all num-bigint-dig and __multi3 frames")
