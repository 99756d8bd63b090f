"""`make bench-authserver` (and the end of `make bench`): the authorization server's token endpoint.

The release build of the server, on SQLite (a file in a tempdir, WAL, `synchronous=NORMAL`) and on
a throw-away PostgreSQL cluster (started as tests/e2e/test_replicas.py starts it: `initdb`,
`postgres` on a free port, `fsync=off`), under wrk with a Lua script per workload:

- cc_es256 / cc_rs256: `client_credentials` with a confidential client (client_secret_basic) on a
  server whose signing key is P-256 / RSA-2048 (bench/authserver_client_credentials.lua);
- refresh: refresh-token rotation (ES256 server). The pool is obtained beforehand through the dev
  login's code flow (the headless Browser of tests/e2e); each run takes its own slice of it, and
  the Lua script (bench/authserver_refresh.lua) pops a token per request and pushes the successor
  from each answer, so every request is a real rotation: a token is never sent twice.

Each figure is the median of BENCH_ROUNDS interleaved rounds (cc_es256, cc_rs256, refresh, then
again), with the rounds' range. Per run: requests/s, p50/p99 latency, non-2xx answers and socket
errors, connections (and connections opened per request, so that churn cannot hide), and CPU time per request of the server (and of PostgreSQL's processes) from
/proc/<pid>/stat before and after. BENCH_CORES "1,2": the server on CPU 0 (wrk on CPU 1), then on
CPUs 0-1 (wrk unpinned). Then "where the time goes": `perf record` of the server under each
workload at 2 cores, its samples grouped by what the code does (signing, SQLite, PostgreSQL client,
hashing, HTTP/runtime, kernel).

The machine is a shared 2-core VM with other builds running: the load average before and after is
in the JSON, and figures drift from minute to minute (hence interleaving and medians).

    .venv/bin/python bench/authserver.py     (BENCH_JSON names the output file)
"""

from __future__ import annotations

import base64
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import quote, urlencode

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "e2e"))
from authstack import REDIRECT, pkce, query, write_key  # noqa: E402
from browser import Browser  # noqa: E402
from harness import Process, free_port, port_open, wait_until  # noqa: E402

import requests  # noqa: E402

SERVER = ROOT / "target" / "release" / "mcp-mesh-authserver"
DURATION = os.environ.get("BENCH_DURATION", "5s")
WARMUP = os.environ.get("BENCH_WARMUP", "2s")
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))
CONNECTIONS = int(os.environ.get("BENCH_CONNECTIONS", "16"))
THREADS = 2
CORES = [int(c) for c in os.environ.get("BENCH_CORES", "1,2").split(",")]
STORES = os.environ.get("BENCH_STORES", "sqlite,postgres").split(",")
WORKLOADS = ["cc_es256", "cc_rs256", "refresh"]
SLICE = 4 * CONNECTIONS  # refresh tokens per run: every connection always finds one
PERF_SECONDS = int(os.environ.get("PERF_SECONDS", "4"))
OUTPUT = Path(os.environ.get("BENCH_JSON", ROOT / "bench" / "authserver-results.json"))
SERVER_CPUS = {1: "0", 2: "0-1"}
WRK_CPUS = {1: "1", 2: "0-1"}
RESOURCE = "https://mcp.example.com/mcp"
USERS = "users:\n- {username: alice, password: password, email: alice@example.com, name: Alice, groups: [mcp-developers]}\n"
TICKS = os.sysconf("SC_CLK_TCK")


def tcp_passive_opens() -> int:
    """Connections the kernel accepted, machine-wide (`Tcp: PassiveOpens` of /proc/net/snmp). The
    delta over a run is an upper bound of the connections wrk opened to the server: if the server
    closed keep-alive connections, wrk's reconnects would show here and the run would time TCP
    set-up instead of the token endpoint."""
    lines = [line.split() for line in Path("/proc/net/snmp").read_text().splitlines() if line.startswith("Tcp:")]
    header, values = lines[0], lines[1]
    return int(values[header.index("PassiveOpens")])


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime, stime


def tree_cpu_seconds(root: int) -> float:
    """A process and its children (PostgreSQL's backends are the postmaster's children): the live
    ones, and those that ended (the root's cutime and cstime), so a backend that exits between two
    readings is not lost."""
    fields = Path(f"/proc/{root}/stat").read_text().rsplit(")", 1)[1].split()
    total = sum(int(f) for f in fields[11:15]) / TICKS  # utime, stime, cutime, cstime
    for child in Path(f"/proc/{root}/task/{root}/children").read_text().split():
        try:
            total += cpu_seconds(int(child))
        except FileNotFoundError:
            pass
    return total


class Postgres:
    def __init__(self, log_dir: Path):
        from harness import postgres_program  # the tests' own way to find the programs
        # Its own directory: the `postgres` user cannot enter the bench's private tempdir.
        self.root = root = Path(tempfile.mkdtemp(prefix="mcp-auth-bench-pg-"))
        as_postgres = []
        if os.geteuid() == 0:
            shutil.chown(root, "postgres")
            as_postgres = ["runuser", "-u", "postgres", "--"]
        subprocess.run([*as_postgres, postgres_program("initdb"), "-D", str(root / "data"), "-U", "mcp",
                        "--auth=trust", "-E", "UTF8"], check=True, capture_output=True, timeout=120)
        self.port = free_port()
        self.process = Process("postgres", [*as_postgres, postgres_program("postgres"), "-D", str(root / "data"),
                                             "-p", str(self.port), "-k", str(root), "-c", "listen_addresses=127.0.0.1",
                                             "-c", "fsync=off", "-c", "max_connections=200"], log_dir)
        wait_until(lambda: port_open(self.port), 60, "postgres")
        self.url = f"postgres://mcp@127.0.0.1:{self.port}/postgres"

    def cpu(self) -> float:
        # With runuser in front, the postmaster is runuser's child.
        pid = self.process.proc.pid
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        return tree_cpu_seconds(int(children[0])) if children and os.geteuid() == 0 else tree_cpu_seconds(pid)

    def stop(self):
        self.process.stop()
        shutil.rmtree(self.root, ignore_errors=True)


class Server:
    def __init__(self, name: str, database: str, key: Path, cores: int, workdir: Path, log_dir: Path):
        users = workdir / "users.yaml"
        users.write_text(USERS)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = {"issuer": self.url, "resources": [RESOURCE], "database": database,
                  "scopes": ["mcp:tools", "offline_access"], "groups": {"prefix": "mcp-"},
                  "upstream": {"type": "dev", "users_file": str(users)},
                  "registration": {"confidential_clients": True, "per_minute": 1000}}
        path = workdir / f"{name}.yaml"
        path.write_text(json.dumps(config))
        self.process = Process(name, ["taskset", "-c", SERVER_CPUS[cores], str(SERVER), "--config", str(path),
                                      "--listen", f"127.0.0.1:{self.port}", "--signing-key", str(key)],
                               log_dir, env={"RUST_LOG": "warn"})
        wait_until(lambda: port_open(self.port) or (not self.process.alive() and self._died()), 30, name)
        self.pid = self.process.proc.pid

    def _died(self):
        raise RuntimeError(f"authserver exited:\n{self.process.log()}")

    def machine_client(self) -> str:
        client = requests.post(self.url + "/oauth/register", json={
            "client_name": "bench", "redirect_uris": ["https://jobs.example.com/cb"], "scope": "mcp:tools",
            "token_endpoint_auth_method": "client_secret_basic", "grant_types": ["client_credentials"]}, timeout=10)
        client.raise_for_status()
        body = client.json()
        return base64.b64encode(f"{body['client_id']}:{body['client_secret']}".encode()).decode()

    def refresh_tokens(self, count: int) -> tuple[str, list[str]]:
        """`count` sessions of one public client through the dev login's code flow (a browser per
        worker: it logs in and consents once, then each flow is authorize → code → exchange)."""
        client = requests.post(self.url + "/oauth/register", json={"client_name": "bench-user",
                                                                   "redirect_uris": [REDIRECT]}, timeout=10)
        client.raise_for_status()
        client_id = client.json()["client_id"]

        def sessions(n: int) -> list[str]:
            browser, tokens = Browser(), []
            for _ in range(n):
                verifier, challenge = pkce()
                url = self.url + "/oauth/authorize?" + urlencode({
                    "response_type": "code", "client_id": client_id, "redirect_uri": REDIRECT,
                    "code_challenge": challenge, "code_challenge_method": "S256", "state": "s",
                    "resource": RESOURCE, "scope": "mcp:tools offline_access"})
                code = query(browser.authorize(url, "alice"))["code"]
                answer = requests.post(self.url + "/oauth/token", data={
                    "grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT,
                    "code_verifier": verifier, "client_id": client_id, "resource": RESOURCE}, timeout=10)
                answer.raise_for_status()
                tokens.append(answer.json()["refresh_token"])
            return tokens

        workers = 4
        with ThreadPoolExecutor(workers) as pool:
            parts = pool.map(sessions, [count // workers + (i < count % workers) for i in range(workers)])
        return client_id, [token for part in parts for token in part]

    def stop(self):
        self.process.stop()


def wrk(server: Server, cores: int, script: str, args: list[str], duration: str,
        database: Postgres | None) -> dict:
    server_before = cpu_seconds(server.pid)
    db_before = database.cpu() if database else 0.0
    opened_before = tcp_passive_opens()
    out = subprocess.run(["taskset", "-c", WRK_CPUS[cores], "wrk", f"-t{THREADS}", f"-c{CONNECTIONS}",
                          f"-d{duration}", "--latency", "-s", str(ROOT / "bench" / script),
                          server.url + "/oauth/token", "--", *args],
                         capture_output=True, text=True, check=True).stdout
    time.sleep(0.2)  # the answers still in flight when wrk stopped
    done = int(re.search(r"(\d+) requests in", out).group(1))
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    socket_errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    result = {
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
        "p50_ms": _latency(out, "50%"), "p99_ms": _latency(out, "99%"),
        "requests": done, "connections": CONNECTIONS,
        "cx_per_rq": (tcp_passive_opens() - opened_before) / max(done, 1),
        "non_2xx": int(non_2xx.group(1)) if non_2xx else 0,
        "socket_errors": sum(int(n) for n in socket_errors.groups()) if socket_errors else 0,
        "server_cpu_us_per_request": (cpu_seconds(server.pid) - server_before) / max(done, 1) * 1e6,
    }
    if database:
        result["postgres_cpu_us_per_request"] = (database.cpu() - db_before) / max(done, 1) * 1e6
    return result


def _latency(out: str, pct: str) -> float:
    value, unit = re.search(rf"{re.escape(pct)}\s+([\d.]+)(us|ms|s)\b", out).groups()
    return float(value) * {"us": 0.001, "ms": 1, "s": 1000}[unit]


def summary(values: list[float]) -> dict:
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "rounds": values}


# What a sampled frame's symbol says the server was doing.
BUCKETS = [
    # ES256 is signed by jwt-compact with RustCrypto's p256, RS256 by ring's big-number assembly.
    ("signing (ES256: p256, RS256: ring)",
     re.compile(r"ring_core|p256|primeorder|elliptic_curve|ecdsa|jwt_compact|rsa|bn_|mulx4x|sqrx8x|GFp|nistz", re.I)),
    ("sealing the successor (AES-GCM)", re.compile(r"aes|gcm|ghash|polyval", re.I)),
    ("SQLite", re.compile(r"sqlite", re.I)),
    ("PostgreSQL client (sqlx)", re.compile(r"sqlx|postgres|PgConnection", re.I)),
    ("hashing (SHA-256 of tokens, secrets)", re.compile(r"sha2|sha256|Sha256", re.I)),
    ("JSON/serde", re.compile(r"serde", re.I)),
    ("HTTP (hyper/axum/tower)", re.compile(r"hyper|axum|tower|http::", re.I)),
    ("async runtime (tokio)", re.compile(r"tokio", re.I)),
    ("allocator/libc", re.compile(r"malloc|free|memcpy|memmove|memset|libc|__GI_|syscall", re.I)),
]


def profile(server: Server, cores: int, script: str, args: list[str], workdir: Path) -> dict:
    """Self time by bucket under load (`perf record` of the server, `perf report` by symbol)."""
    if not shutil.which("perf"):
        return {"error": "perf is not installed"}
    load = subprocess.Popen(["taskset", "-c", WRK_CPUS[cores], "wrk", f"-t{THREADS}", f"-c{CONNECTIONS}",
                             f"-d{PERF_SECONDS + 2}s", "-s", str(ROOT / "bench" / script),
                             server.url + "/oauth/token", "--", *args], stdout=subprocess.DEVNULL)
    time.sleep(1)
    data = workdir / "server.perf"
    recorded = subprocess.run(["perf", "record", "-q", "-e", "cpu-clock", "-F", "999", "-o", str(data),
                               "-p", str(server.pid), "--", "sleep", str(PERF_SECONDS)],
                              capture_output=True, text=True)
    load.wait()
    if recorded.returncode != 0:
        return {"error": recorded.stderr.strip()[-300:]}
    report = subprocess.run(["perf", "report", "-i", str(data), "--stdio", "--no-children", "--sort", "dso,symbol",
                             "--percent-limit", "0"], capture_output=True, text=True).stdout
    shares: dict[str, float] = {}
    top: list[tuple[float, str]] = []
    for line in report.splitlines():
        match = re.match(r"\s*([\d.]+)%\s+(\S+)\s+\[(.)\]\s+(.*)", line)
        if not match:
            continue
        percent, dso, level, symbol = float(match.group(1)), match.group(2), match.group(3), match.group(4)
        if level == "k":
            bucket = "kernel (network, futex, scheduling)"
        else:
            bucket = next((name for name, pattern in BUCKETS if pattern.search(symbol) or pattern.search(dso)),
                          "other")
        shares[bucket] = shares.get(bucket, 0.0) + percent
        if len(top) < 12:
            top.append((percent, f"{dso} {symbol}"[:140]))
    return {"buckets_percent": dict(sorted(((k, round(v, 1)) for k, v in shares.items()), key=lambda kv: -kv[1])),
            "top_symbols": top}


def run_store(store: str, workdir: Path, log_dir: Path) -> dict:
    database = Postgres(log_dir) if store == "postgres" else None
    keys = {"es256": write_key(workdir / "ec.pem", "ec"), "rs256": write_key(workdir / "rsa.pem", "rsa")}
    results: dict = {}
    try:
        for cores in CORES:
            servers = {}
            for alg, key in keys.items():
                name = f"{store}-{alg}-{cores}"
                url = database.url if database else f"sqlite://{workdir}/{name}.db"
                servers[alg] = Server(name, url, key, cores, workdir, log_dir)
            basic = {alg: server.machine_client() for alg, server in servers.items()}
            print(f"{store}, {cores} core(s): {(ROUNDS + 1) * SLICE} sessions through the code flow",
                  file=sys.stderr, flush=True)
            client_id, pool = servers["es256"].refresh_tokens((ROUNDS + 1) * SLICE)
            slices = [pool[i * SLICE:(i + 1) * SLICE] for i in range(ROUNDS + 1)]

            def spec(workload: str, round_no: int) -> tuple[Server, str, list[str]]:
                if workload == "refresh":
                    path = workdir / f"refresh-{store}-{cores}-{round_no}.tokens"
                    path.write_text("\n".join(slices[round_no]) + "\n")
                    return servers["es256"], "authserver_refresh.lua", [str(path), client_id, quote(RESOURCE, safe=""),
                                                                         str(THREADS)]
                alg = workload.split("_")[1]
                return servers[alg], "authserver_client_credentials.lua", [basic[alg], quote(RESOURCE, safe="")]

            runs: dict[str, list[dict]] = {w: [] for w in WORKLOADS}
            for workload in WORKLOADS:  # warm-up (the first slice of refresh tokens)
                server, script, args = spec(workload, 0)
                wrk(server, cores, script, args, WARMUP, database)
            for round_no in range(1, ROUNDS + 1):
                for workload in WORKLOADS:
                    server, script, args = spec(workload, round_no)
                    runs[workload].append(wrk(server, cores, script, args, DURATION, database))
                    print(f"  {store} {cores}c {workload} round {round_no}: {runs[workload][-1]['rps']:.0f} req/s",
                          file=sys.stderr, flush=True)
            level = {}
            for workload, rounds in runs.items():
                level[workload] = {key: summary([r[key] for r in rounds]) for key in rounds[0]
                                   if key not in ("connections",)}
                level[workload]["connections"] = CONNECTIONS
                level[workload]["non_2xx_total"] = sum(r["non_2xx"] for r in rounds)
                level[workload]["socket_errors_total"] = sum(r["socket_errors"] for r in rounds)
            if cores == max(CORES):
                level["profile"] = {}
                for workload in WORKLOADS:
                    # Every slice is spent by now: the profile's rotations get fresh sessions.
                    if workload == "refresh":
                        fresh_client, fresh = servers["es256"].refresh_tokens(SLICE)
                        path = workdir / f"refresh-{store}-profile.tokens"
                        path.write_text("\n".join(fresh) + "\n")
                        args = [str(path), fresh_client, quote(RESOURCE, safe=""), str(THREADS)]
                        level["profile"][workload] = profile(servers["es256"], cores, "authserver_refresh.lua",
                                                             args, workdir)
                    else:
                        server, script, args = spec(workload, 1)
                        level["profile"][workload] = profile(server, cores, script, args, workdir)
            results[str(cores)] = level
            for server in servers.values():
                server.stop()
    finally:
        if database:
            database.stop()
    return results


def main() -> int:
    if not SERVER.exists():
        print(f"{SERVER} is missing: cargo build --release -p mcp-mesh-authserver", file=sys.stderr)
        return 1
    meta = {"when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "machine": _machine(),
            "settings": {"duration": DURATION, "warmup": WARMUP, "rounds": ROUNDS, "connections": CONNECTIONS,
                         "wrk_threads": THREADS, "refresh_tokens_per_run": SLICE, "server_cpus": SERVER_CPUS,
                         "wrk_cpus": WRK_CPUS, "postgres": "fsync=off, local TCP", "sqlite": "file, WAL"}}
    results = {"meta": meta, "stores": {}}
    with tempfile.TemporaryDirectory(prefix="mcp-auth-bench-") as tmp:
        workdir = Path(tmp)
        log_dir = workdir / "logs"
        log_dir.mkdir()
        for store in STORES:
            store_dir = workdir / store
            store_dir.mkdir()
            results["stores"][store] = run_store(store, store_dir, log_dir)
    meta["load_average_after"] = os.getloadavg()
    OUTPUT.write_text(json.dumps(results, indent=1) + "\n")
    print_table(results)
    print(f"\nJSON: {OUTPUT}")
    return 0


def print_table(results: dict) -> None:
    print("\n| store | cores | workload | req/s (range) | p50 ms | p99 ms | server CPU µs/req | PostgreSQL CPU µs/req"
          " | connections/req | non-2xx | socket errors |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for store, levels in results["stores"].items():
        for cores, level in levels.items():
            for workload in WORKLOADS:
                r = level[workload]
                pg = r.get("postgres_cpu_us_per_request")
                pg_cpu = f"{pg['median']:.0f}" if pg else "–"
                print(f"| {store} | {cores} | {workload} | {r['rps']['median']:.0f} ({r['rps']['min']:.0f}–"
                      f"{r['rps']['max']:.0f}) | {r['p50_ms']['median']:.2f} | {r['p99_ms']['median']:.2f} | "
                      f"{r['server_cpu_us_per_request']['median']:.0f} | {pg_cpu} | "
                      f"{r['cx_per_rq']['max']:.4f} | {r['non_2xx_total']} | {r['socket_errors_total']} |")
    for store, levels in results["stores"].items():
        for cores, level in levels.items():
            for workload, prof in level.get("profile", {}).items():
                print(f"\nprofile {store} {cores} cores {workload}: {prof.get('buckets_percent', prof)}")


def _machine() -> dict:
    cpu = re.search(r"model name\s*:\s*(.*)", Path("/proc/cpuinfo").read_text())
    return {"cpu": cpu.group(1) if cpu else platform.processor(), "cpus": os.cpu_count(),
            "kernel": platform.release(), "load_average_before": os.getloadavg(),
            "note": "a shared 2-core VM with other engineers' builds running"}


if __name__ == "__main__":
    sys.exit(main())
