"""Interop proof: the official TypeScript SDK client gets the same answers from server-everything
straight and through Envoy + the filter.

`tests/clients/interop-everything.mjs` exercises every feature the server offers (initialize,
tools, progress and cancellation, prompts, resources and templates, subscriptions, completions,
logging, sampling, elicitation, roots, tasks on both sides) and prints its normalised results. It
runs twice at once against one fresh server-everything: DIRECT at the server, and through Envoy
with a bearer token whose Cedar policy permits everything and a `binding_key`, so session and task
ids are sealed to the caller. Each feature is then compared on its own, with a diff on failure.
"""

from __future__ import annotations

import base64
import difflib
import json
import os
import subprocess
from pathlib import Path

import pytest

from harness import NODE_MODULES, ROOT, Envoy, claims, start_node_server

CLIENT = ROOT / "tests" / "clients" / "interop-everything.mjs"
PERMIT_ALL = ["permit(principal, action, resource);"]
RUN_TIMEOUT = 50  # seconds per client run; both run at once (about 6 s each on a quiet machine)

# Feature -> the result keys (as printed by the client) that make it up.
FEATURES = {
    "initialize": lambda k: k in ("initialize", "ping", "session/terminate"),
    "tools/list": lambda k: k in ("tools/list", "tools/uncovered"),
    "tools/call": lambda k: k.startswith("tools/call "),
    "progress": lambda k: k == "progress: long running tool",
    "cancellation": lambda k: k == "progress: cancelled call",
    "prompts": lambda k: k.startswith("prompts/"),
    "resources": lambda k: k.startswith(("resources/list", "resources/templates/list", "resources/read")),
    "subscriptions": lambda k: k == "resources/subscribe",
    "session resource": lambda k: k.startswith("session resource"),
    "completion": lambda k: k.startswith("completion/"),
    "logging": lambda k: k.startswith("logging"),
    "sampling": lambda k: k == "sampling round trip",
    "elicitation": lambda k: k.startswith("elicitation round trip"),
    "roots": lambda k: k.startswith("roots"),
    "tasks": lambda k: k.startswith("tasks") and k != "tasks/list",
}


@pytest.fixture(scope="module")
def interop_server(log_dir):
    """A server-everything of this module's own, so no other test's sessions share its state."""
    script = NODE_MODULES / "@modelcontextprotocol" / "server-everything" / "dist" / "index.js"
    proc, port = start_node_server("server-everything-interop", script, log_dir, args=("streamableHttp",))
    yield port
    proc.stop()


@pytest.fixture(scope="module")
def interop_envoy(log_dir, interop_server, jwks):
    proxy = Envoy(log_dir, backend_port=interop_server, jwks_port=jwks.port, name="envoy-interop", filter_config={
        "cedar": {"policies": PERMIT_ALL},
        "server_name": "everything",
        "headers_stop_iteration": True,
        "binding_key": base64.b64encode(os.urandom(32)).decode(),
    })
    proxy.wait_ready()
    yield proxy
    proxy.stop()


def _start(url: str, label: str, token: str | None, log_dir: Path) -> tuple[subprocess.Popen, Path]:
    env = {k: v for k, v in os.environ.items() if k != "MCP_BEARER"}
    if token:
        env["MCP_BEARER"] = token
    stderr = log_dir / f"interop-client-{label}.stderr"
    proc = subprocess.Popen(["node", str(CLIENT), url, label], cwd=ROOT / "tests", env=env,
                            stdout=subprocess.PIPE, stderr=open(stderr, "wb"), text=True)
    return proc, stderr


def _finish(proc: subprocess.Popen, stderr: Path, label: str) -> dict:
    try:
        out, _ = proc.communicate(timeout=RUN_TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
        pytest.fail(f"the {label} client run did not finish in {RUN_TIMEOUT}s:\n{stderr.read_text()[-3000:]}")
    lines = [line for line in out.splitlines() if line.startswith("{")]
    assert proc.returncode == 0 and lines, (
        f"the {label} client run failed (exit {proc.returncode}):\n{out[-2000:]}\n{stderr.read_text()[-3000:]}")
    return json.loads(lines[-1])


@pytest.fixture(scope="module")
def runs(log_dir, interop_server, interop_envoy, signing_key):
    """Both client runs, at the same time: straight at the server, and through Envoy with a token."""
    token = signing_key.sign(claims(interop_envoy, sub="interop-user", client_id="interop-client",
                                    groups=["mcp-interop"], scope="mcp:tools"))
    direct = _start(f"http://127.0.0.1:{interop_server}/mcp", "direct", None, log_dir)
    proxied = _start(interop_envoy.url("/mcp"), "envoy", token, log_dir)
    results = {"direct": _finish(*direct, "direct"), "envoy": _finish(*proxied, "envoy")}
    (log_dir / "interop-results.json").write_text(json.dumps(results, indent=1, ensure_ascii=False))
    return results


def _pretty(value) -> list[str]:
    return json.dumps(value, indent=1, sort_keys=True, ensure_ascii=False).splitlines()


def _failed_steps(results: dict) -> dict:
    """Steps whose whole answer is an error (a step that expects one records it beside other keys)."""
    return {k: v["error"] for k, v in results.items() if isinstance(v, dict) and set(v) == {"error"}}


def _filter_evidence(envoy: Envoy, run: dict) -> str:
    """What the filter did, for a failure report: refused exchanges, streams that never carried
    their answer, the SDK's complaints, and the filter's own log lines."""
    meta = run["meta"]
    unanswered = [s for s in meta.get("streams", []) if not s["answered"]]
    lines = [line[line.find("mcp-mesh-auth: ") + 15:] if "mcp-mesh-auth: " in line else line
             for line in envoy.process.log().splitlines()
             if "mcp-mesh-auth" in line and '"decision":"allow"' not in line and '"removed":0' not in line]
    return "\n".join([
        "HTTP answers through Envoy that were not 2xx:",
        json.dumps(meta.get("httpErrors"), indent=1, ensure_ascii=False)[:6000],
        "POST event streams through Envoy that never carried their answer (request, messages seen, ended):",
        *(f"  {s['request']}: {s['messages']} ended={s['ended']}" for s in unanswered),
        "requests through Envoy whose answer never began when the client finished:",
        *(f"  {line}" for line in meta.get("noResponseHead", [])),
        "client-side errors (SDK onerror) through Envoy:",
        json.dumps(meta.get("clientErrors", [])[-10:], indent=1)[:3000],
        "Envoy log lines of the filter (allowed audits and uncut lists left out; last 40):",
        *lines[-40:],
    ])


def test_the_direct_run_exercises_every_feature(runs):
    """The baseline is real: straight at the server, every step succeeded and did what it says."""
    results = runs["direct"]["results"]
    assert not _failed_steps(results), json.dumps(_failed_steps(results), indent=1)
    assert "fatal" not in results
    assert results["initialize"]["serverInfo"]["name"]
    names = results["tools/list"]["names"]
    assert {"echo"} <= set(names) and any(n in names for n in ("get-sum", "add"))
    assert results["progress: long running tool"]["progressStreamedBeforeResult"] is True
    assert len(results["progress: long running tool"]["progress"]) == 4
    assert results["progress: cancelled call"]["cancelled"] is True
    assert results["progress: cancelled call"]["pingAfter"] == "ok"
    assert results["resources/subscribe"]["updatedNotification"] is not None
    assert results["logging: simulated log messages"]["receivedLogMessage"] is True
    assert results["sampling round trip"]["serverAsked"] is not None
    assert "Ada Lovelace" in json.dumps(results["elicitation round trip (form)"]["result"])
    assert results["roots"]["serverAskedAgain"] is True and "second root" in json.dumps(results["roots"]["after"])
    assert results["roots/initial-sync"]["serverAskedForRoots"] is True
    assert results["session resource (gzip) + resources/list_changed"]["listChangedNotification"] is True
    if "skipped" not in results.get("tasks", {}):
        assert results["tasks: tool call as a task"]["finalStatus"] == "completed"
        assert results["tasks: cancel"]["after"]["status"] == "cancelled"
    assert results["tools/uncovered"] == [], "tools the client has no recipe for"


@pytest.mark.parametrize("feature", list(FEATURES))
def test_the_same_through_the_filter(runs, interop_envoy, feature):
    direct, proxied = runs["direct"]["results"], runs["envoy"]["results"]
    keys = sorted(k for k in set(direct) | set(proxied) if FEATURES[feature](k))
    assert keys, f"the client recorded nothing for {feature}"
    skipped = [direct[k]["skipped"] for k in keys if isinstance(direct.get(k), dict) and "skipped" in direct[k]]
    if skipped and len(skipped) == len(keys):
        pytest.skip("; ".join(skipped))
    diffs = []
    for key in keys:
        want, got = direct.get(key, "<missing>"), proxied.get(key, "<missing>")
        if want != got:
            diffs.append(f"--- {key}\n" + "\n".join(difflib.unified_diff(
                _pretty(want), _pretty(got), "direct", "through envoy", lineterm="", n=2)))
    if diffs:
        pytest.fail(f"{feature}: {len(diffs)} of {len(keys)} results differ through the filter\n\n"
                    + "\n\n".join(diffs)[:20000] + "\n\n" + _filter_evidence(interop_envoy, runs["envoy"]),
                    pytrace=False)


def test_tasks_list_shows_the_callers_own_tasks_or_the_documented_empty_list(runs):
    """README, "Tasks bound to their caller": behind a server that lists raw ids the filter keeps
    only tasks it can prove are the caller's, so the caller may see an empty list; it must never
    see more than straight at the server, and the request itself must succeed."""
    direct = runs["direct"]["results"]
    if "tasks/list" not in direct:
        pytest.skip(direct.get("tasks", {}).get("skipped", "no tasks/list result"))
    proxied = runs["envoy"]["results"].get("tasks/list")
    assert direct["tasks/list"]["ownTaskListed"] is True
    assert proxied in (direct["tasks/list"], {"ownTaskListed": False, "count": 0}), proxied


def test_ids_are_sealed_to_the_caller_through_the_filter(runs):
    """The comparison above normalised them; here the raw ids: through Envoy the session id and
    every task id the client saw is sealed (`b1.<mac>.<id>`), straight at the server none is."""
    direct, proxied = runs["direct"]["meta"], runs["envoy"]["meta"]
    assert direct["sessionId"] and not direct["sessionId"].startswith("b1.")
    assert proxied["sessionId"].startswith("b1."), proxied["sessionId"]
    if direct["taskIds"]:
        assert all(not i.startswith("b1.") for i in direct["taskIds"])
        assert proxied["taskIds"] and all(i.startswith("b1.") for i in proxied["taskIds"]), proxied["taskIds"]


RESUMPTION_REFUSED = "stream resumption (Last-Event-ID) is not supported behind mcp-mesh-auth"


def test_nothing_was_refused_through_the_filter(runs, interop_envoy):
    """A caller permitted everything gets no 4xx/5xx from the filter on any request it sends.

    One refusal is documented (README, "What the filter does with a request": `Last-Event-ID` is
    `400`): the SDK (1.32) resumes every POST stream that ended without a *result*, so a call
    answered with a JSON-RPC error (the URL elicitation's -32042) or a cancelled call is resumed
    though nothing is missing. Such a refusal is accepted only when the stream it would resume had
    already carried its answer, or the client had cancelled its request."""
    meta = runs["envoy"]["meta"]
    resumed = {r["lastEventId"]: r["resumes"] for r in meta.get("resumptions", [])}
    cancelled = set(meta.get("cancelledRequestIds", []))
    unexplained = []
    for error in meta["httpErrors"]:
        stream = resumed.get(error.get("lastEventId"))
        documented = error["status"] == 400 and RESUMPTION_REFUSED in error["body"]
        if not (documented and isinstance(stream, dict) and (stream["answered"] or stream["id"] in cancelled)):
            unexplained.append(error)
    assert not unexplained, _filter_evidence(interop_envoy, runs["envoy"])
