"""Where Envoy's CPU goes under a warm tools/call load, by where the code lives: the Envoy binary
(C++, including the proxy-wasm host and V8's runtime), V8's generated code (the filter's wasm,
compiled by TurboFan: anonymous memory, `[unknown]`/JIT to perf), the kernel, libc. The Envoy of
the PyPI package is stripped, so this is a split by DSO, not by function.
    .venv/bin/python bench/perf_split.py       (needs `perf`; BENCH_WASM as for bench/run.py)"""

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run  # noqa: E402

SECONDS = int(os.environ.get("PERF_SECONDS", "5"))


def main() -> int:
    material = run.tokens(run.POOL)
    configs = {"native": run.native_filters(material["jwks"]),
               "wasm": run.wasm_filters(material["jwks"], run.modules()["wasm"])}
    token = material["valid"][0]
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        for name, filters in configs.items():
            bench = run.Bench(name, filters, workdir, 1, token)
            try:
                run.wrk(bench, "call", material, workdir, "2s", run.CONNECTIONS)  # warm-up
                script = workdir / "call.lua"
                load = subprocess.Popen(["taskset", "-c", run.WRK_CPUS, "wrk", "-t1", f"-c{run.CONNECTIONS}",
                                         f"-d{SECONDS + 2}s", "-s", str(script), f"http://127.0.0.1:{bench.port}/mcp"],
                                        stdout=subprocess.DEVNULL)
                time.sleep(1)
                data = workdir / f"{name}.perf"
                subprocess.run(["perf", "record", "-q", "-e", "cpu-clock", "-F", "999", "-o", str(data),
                                "-p", str(bench.proc.proc.pid), "--", "sleep", str(SECONDS)], check=True,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                load.wait()
                report = subprocess.run(["perf", "report", "-i", str(data), "--stdio", "--sort", "dso", "-q"],
                                        capture_output=True, text=True).stdout
                print(f"{name}: share of Envoy's samples by DSO under warm tools/call")
                for line in report.splitlines()[:8]:
                    if line.strip():
                        print("   " + line.strip())
            finally:
                bench.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
