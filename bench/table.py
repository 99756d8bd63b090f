"""The README's tables from a bench/run.py JSON: python3 bench/table.py bench/results.json"""

import json
import sys

LABELS = {"call": "warm `tools/call`", "call@c1": "warm `tools/call`, 1 connection",
          "list": "warm `tools/list` (50 tools)", "list@c1": "warm `tools/list`, 1 connection",
          "new_token": "new valid token per request", "forged_new": "new forged token per request",
          "forged_same": "same forged token repeated"}

results = json.load(open(sys.argv[1]))
for level, result in results["levels"].items():
    variants = result["variants"]
    names = list(variants)
    print(f"\n`--concurrency {level}`: req/s, median [min–max] of the rounds; (×) = this variant / native\n")
    print("| scenario | " + " | ".join(names) + " |")
    print("|---" * (len(names) + 1) + "|")
    scenarios = list(next(iter(variants.values()))["scenarios"])
    for scenario in scenarios:
        cells = []
        native = variants.get("native", {}).get("scenarios", {}).get(scenario)
        for name in names:
            rps = variants[name]["scenarios"][scenario]["rps"]
            ratio = f" ({rps['median'] / native['rps']['median']:.2f}×)" if native and name not in ("plain", "native") else ""
            cells.append(f"{rps['median']:.0f} [{rps['min']:.0f}–{rps['max']:.0f}]{ratio}")
        print(f"| {LABELS.get(scenario, scenario)} | " + " | ".join(cells) + " |")
    print("\n| | " + " | ".join(names) + " |")
    print("|---" * (len(names) + 1) + "|")
    rows = {
        "start to `/ready`, s": lambda v: f"{v['start']['ready_s']['median']:.2f} [{v['start']['ready_s']['min']:.2f}–{v['start']['ready_s']['max']:.2f}]",
        "RSS after start, MiB": lambda v: f"{v['start']['rss_mib']['median']:.0f}",
        "RSS after the load, MiB": lambda v: f"{v['after_load']['rss_mib']:.0f}",
        "connections per request (max)": lambda v: f"{max(s['cx_per_rq']['max'] for s in v['scenarios'].values()):.4f}",
        "answers before the request was read": lambda v: f"{sum(s['early_answers']['max'] for s in v['scenarios'].values()):.0f}",
    }
    for label, cell in rows.items():
        print(f"| {label} | " + " | ".join(cell(variants[n]) for n in names) + " |")
print("\nmodules:", {k: f"{v['bytes'] / 1e6:.2f} MB" for k, v in results["meta"]["modules"].items()})
