"""The hostile suite: requests built to slip past the filter, through the real Envoy with the
release module, in both modes:

- `held`: Envoy `allow_on_headers_stop_iteration: true` + filter `"headers_stop_iteration": true`
  (the backend sees nothing of a request until its body is decided);
- `sent`: both off (request headers go ahead; a denied call must reset the upstream stream).

The real MCP server is `@modelcontextprotocol/server-everything` (streamableHttp), reached through a
recording reverse proxy (hostile.RecordingProxy) that records every request Envoy sends it, so each
case asserts what reached the backend: a forbidden request never (mode `held`: not even its
headers; mode `sent`: never its body, never complete), an allowed one exactly once and byte for
byte. List answers that a real server does not produce come from hostile.HostileUpstream, a
deliberately misbehaving upstream (routed by the `x-hostile-shape` request header).

Every case is a row of a table: framing x payload x expected outcome. Each expected outcome comes
with an allowed control in the same framing, so a case can fail both ways. The expectations are
the product's intended behaviour; some fail against a filter that does not implement it yet.

Run: `make e2e-test`, or alone: `cd tests/e2e && ../../.venv/bin/pytest -q -s test_hostile.py`
(`-s` shows the closing "hostile suite: N requests, M framings"; HOSTILE_VERBOSE=1 prints every answer).
"""

from __future__ import annotations

import copy
import json
import os
import time
import uuid
from dataclasses import dataclass, field
from typing import Callable

import pytest

import hostile
from harness import NODE_MODULES, Envoy, McpSession, SigningKey, claims, start_node_server
from hostile import Response, http1, http2, leaks, nonce, split_points

SECRET = "hostile-secret-" + uuid.uuid4().hex[:12]
FORBIDDEN_URI = "demo://resource/static/document/architecture.md"
ALLOWED_URI = "demo://resource/static/document/features.md"
ARCH_TEXT = "summarizes the current layout and runtime architecture"  # in architecture.md only
PROMPT_TEXT = "Please promote"  # completable-prompt's text
# What a caller must never see of a forbidden request's effect.
EFFECT_MARKERS = [SECRET, ARCH_TEXT, PROMPT_TEXT]

POLICIES = [
    'permit(principal in THVGroup::"devs", action, resource);',
    'forbid(principal in THVGroup::"devs", action == Action::"call_tool", resource == Tool::"get-env");',
    'forbid(principal in THVGroup::"devs", action == Action::"get_prompt", resource == Prompt::"completable-prompt");',
    'forbid(principal in THVGroup::"devs", action == Action::"read_resource", resource == Resource::"%s");' % FORBIDDEN_URI,
    'forbid(principal, action == Action::"call_tool", resource == Tool::"get-sum") when { context has arg_a && context.arg_a == 0 };',
    'permit(principal in THVGroup::"platform", action, resource);',
]
USERS = {"alice": ["devs"], "bob": ["platform"], "mallory": ["devs"], "alice2": ["devs"], "alice3": ["devs"]}
SUBJECT = {"alice2": "alice", "alice3": "alice"}  # extra sessions of the same person

FRAMINGS = ["h1-cl", "h1-chunked", "h1-chunked-trailers", "h2-frames", "h2-empty-end", "h2-trailers"]
MODES = {"held": True, "sent": False}


# ------------------------------------------------------------------------------------------------
# Processes: one server-everything, one recording proxy, one hostile upstream, one Envoy per mode


@pytest.fixture(scope="module")
def everything_with_secret(log_dir):
    script = NODE_MODULES / "@modelcontextprotocol" / "server-everything" / "dist" / "index.js"
    proc, port = start_node_server("server-everything-hostile", script, log_dir, args=("streamableHttp",),
                                   env={"HOSTILE_SECRET": SECRET})
    yield port
    proc.stop()


@pytest.fixture(scope="module")
def recording(everything_with_secret):
    proxy = hostile.RecordingProxy(everything_with_secret)
    yield proxy
    proxy.stop()


@pytest.fixture(scope="module")
def crafted():
    upstream = hostile.HostileUpstream()
    yield upstream
    upstream.stop()


@pytest.fixture(scope="module")
def slow_jwks(signing_key):
    server = hostile.SlowJwks([signing_key], delay=0.3)
    yield server
    server.stop()


def envoy_edit(hold: bool, hostile_port: int):
    def edit(config):
        hcm = config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
        hcm["http_protocol_options"] = {"enable_trailers": True}  # HTTP/1.1 chunked trailers reach the filter
        hcm["http_filters"][0]["typed_config"]["config"]["allow_on_headers_stop_iteration"] = hold
        clusters = {c["name"]: c for c in config["static_resources"]["clusters"]}
        backend = clusters["mcp_backend"]
        backend["typed_extension_protocol_options"] = {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                "explicit_http_config": {"http_protocol_options": {"enable_trailers": True}}}}
        crafted_cluster = copy.deepcopy(backend)
        crafted_cluster["name"] = crafted_cluster["load_assignment"]["cluster_name"] = "hostile"
        crafted_cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"][
            "socket_address"]["port_value"] = hostile_port
        config["static_resources"]["clusters"].append(crafted_cluster)
        routes = hcm["route_config"]["virtual_hosts"][0]["routes"]
        routes.insert(0, {"match": {"prefix": "/", "headers": [{"name": "x-hostile-shape", "present_match": True}]},
                          "route": {"cluster": "hostile", "timeout": "0s"}})
    return edit


@dataclass
class Ctx:
    mode: str
    hold: bool
    envoy: Envoy
    recording: hostile.RecordingProxy
    crafted: hostile.HostileUpstream
    signing_key: SigningKey
    jwks: hostile.SlowJwks
    tokens: dict = field(default_factory=dict)
    sessions: dict = field(default_factory=dict)

    @property
    def port(self) -> int:
        return self.envoy.port

    def token(self, who: str, **overrides) -> str:
        return self.signing_key.sign(claims(self.envoy, sub=SUBJECT.get(who, who), groups=USERS[who], **overrides))

    def records(self, marker: str) -> list:
        return self.recording.recorder.matching(marker) + self.crafted.recorder.matching(marker)


FORBIDDEN_NONCES: list = []  # (mode, nonce) of every request that must never reach the backend
ALL_RECORDERS: list = []


@pytest.fixture(scope="module", params=list(MODES), ids=[f"mode-{m}" for m in MODES])
def ctx(request, log_dir, recording, crafted, slow_jwks, signing_key):
    mode = request.param
    hold = MODES[mode]
    proxy = Envoy(log_dir, backend_port=recording.port, jwks_port=slow_jwks.port, name=f"envoy-hostile-{mode}",
                  jwks={"unknown_kid_cooldown_seconds": 0},  # every unknown kid is held for a refetch
                  filter_config={"cedar": {"policies": POLICIES}, "server_name": "everything",
                                 "headers_stop_iteration": hold},
                  edit=envoy_edit(hold, crafted.port))
    proxy.wait_ready()
    context = Ctx(mode=mode, hold=hold, envoy=proxy, recording=recording, crafted=crafted, signing_key=signing_key,
                  jwks=slow_jwks)
    for who in USERS:
        context.tokens[who] = context.token(who)
        context.sessions[who] = McpSession(proxy.url("/mcp"), context.tokens[who]).open().session_id
    ALL_RECORDERS[:] = [recording.recorder, crafted.recorder]
    yield context
    proxy.stop()


# ------------------------------------------------------------------------------------------------
# The table


@dataclass
class Case:
    id: str
    framing: str = "h1-cl"
    who: str | None = "alice"  # whose token and session
    method: str = "POST"
    path: str = "/mcp"
    body: Callable | None = None  # nonce -> bytes
    headers: Callable | None = None  # (ctx, case, nonce, base headers) -> headers
    trailers: list | None = None
    session: str | None = "own"  # "own", another user's name, or None
    forwarded: bool | None = None  # True: exactly once, intact; False: never; None: not asserted
    stage: str = "body"  # "headers": refused before anything may go upstream, in both modes
    markers: list = field(default_factory=lambda: list(EFFECT_MARKERS))
    expect: Callable | None = None  # (ctx, case, response, nonce) -> None, raises
    route: str | None = None  # x-hostile-shape


def rpc(method: str, params: str, id_json: str = "7") -> Callable:
    """A JSON-RPC request; `params` is raw JSON text with `%N` standing for the nonce."""
    return lambda n: ('{"jsonrpc":"2.0","id":%s,"method":"%s","params":%s}' % (id_json, method, params.replace("%N", n))).encode()


def tool(name_json: str, args: str = '{}', id_json: str = "7") -> Callable:
    return rpc("tools/call", '{"name":%s,"arguments":%s,"_meta":{"hostile":"%%N"}}' % (name_json, args), id_json)


ECHO = tool('"echo"', '{"message":"hi-%N"}')
GET_ENV = tool('"get-env"')


def raw(text: str) -> Callable:
    return lambda n: text.replace("%N", n).encode()


# Expected outcomes -------------------------------------------------------------------------------


def refused(status, code=None, message=None) -> Callable:
    statuses = status if isinstance(status, (set, tuple, list)) else {status}

    def check(ctx, case, response: Response, n):
        assert response.status in statuses, f"expected {sorted(statuses)}, got {response.summary()}"
        if code is not None:
            codes = code if isinstance(code, (set, tuple, list)) else {code}
            assert response.error_code() in codes, f"expected JSON-RPC error {code}, got {response.summary()}"
        if message is not None:
            got = ((response.jsonrpc() or {}).get("error") or {}).get("message", "")
            assert message in got.lower(), f"expected {message!r} in the error message, got {response.summary()}"
    return check


def jsonrpc_4xx(ctx, case, response: Response, n):
    """Refused with a 4xx JSON-RPC error (not a bare Envoy or server page)."""
    assert 400 <= response.status < 500, f"expected a 4xx, got {response.summary()}"
    message = response.jsonrpc()
    assert message and message.get("jsonrpc") == "2.0" and "error" in message, \
        f"expected a JSON-RPC error body, got {response.summary()}"


def refused_4xx(ctx, case, response: Response, n):
    assert 400 <= response.status < 500, f"expected a 4xx, got {response.summary()}"


def unauthorized(ctx, case, response: Response, n):
    assert response.status == 401, f"expected 401, got {response.summary()}"
    assert (response.header("www-authenticate") or "").startswith("Bearer "), response.headers


def served(*expected_texts, status=200) -> Callable:
    def check(ctx, case, response: Response, n):
        assert response.status == status, f"expected {status}, got {response.summary()}"
        answer = response.jsonrpc()
        assert answer is not None and "result" in answer, f"expected a JSON-RPC result, got {response.summary()}"
        for text in expected_texts:
            text = text.replace("%N", n)
            assert text in response.text, f"expected {text!r} in {response.summary()}"
    return check


def not_denied_by_policy(ctx, case, response: Response, n):
    assert response.status != 0, f"no answer: {response.summary()}"
    assert "denied by authorization policy" not in response.text, f"a standard method was denied: {response.summary()}"
    assert response.status != 403, response.summary()


def tool_names(response: Response) -> list:
    answer = response.jsonrpc() or {}
    return [t.get("name") for t in (answer.get("result") or {}).get("tools", []) if isinstance(t, dict)]


def listed(key: str, present: list, absent: list) -> Callable:
    field_name = "uri" if key == "resources" else "name"

    def check(ctx, case, response: Response, n):
        assert response.status == 200, response.summary()
        answer = response.jsonrpc()
        assert answer and "result" in answer, response.summary()
        names = [item.get(field_name) for item in answer["result"].get(key, [])]
        for item in present:
            assert item in names, f"{item} missing from {names}"
        for item in absent:
            assert item not in names, f"{item} listed: {names}"
    return check


def list_cut(ctx, case, response: Response, n):
    """A list answer the filter could read: the caller gets it with the forbidden tool cut."""
    names = tool_names(response)
    assert response.status == 200, response.summary()
    assert "echo" in names and "get-env" not in names, f"expected echo without get-env, got {response.summary()}"


def list_whole(ctx, case, response: Response, n):
    """Control: a caller allowed everything gets the forbidden tool from the same crafted answer."""
    assert response.status == 200, response.summary()
    assert "get-env" in tool_names(response), f"the control did not see get-env: {response.summary()}"


def list_cut_or_error(ctx, case, response: Response, n):
    """Either the answer was understood and cut, or the caller got an error: never the list whole."""
    if response.status >= 400 or response.error_code() is not None:
        return
    assert "get-env" not in tool_names(response), response.summary()


def list_error(ctx, case, response: Response, n):
    """No answer to filter (or none the filter can trust): the caller gets an error."""
    error = response.status >= 500 or response.error_code() == -32603
    assert error, f"expected a 5xx or a JSON-RPC -32603 error, got {response.summary()}"


# The cases ---------------------------------------------------------------------------------------

CORE = [
    # (payload id, body, outcome, forwarded, who)
    ("allowed-echo", ECHO, served("hi-%N"), True, "alice"),
    ("forbidden-get-env", GET_ENV, refused(403, 403), False, "alice"),
    ("forbidden-get-env-unicode-escape", tool('"get\\u002denv"'), refused(403, 403), False, "alice"),
    ("allowed-echo-unicode-escape", tool('"\\u0065cho"', '{"message":"hi-%N"}'), served("hi-%N"), True, "alice"),
    ("forbidden-duplicate-name", tool('"echo","name":"get-env"', '{"message":"x"}'), refused(400, -32600), False, "alice"),
    ("allowed-sum-a1", tool('"get-sum"', '{"a":1,"b":5}'), served("6"), True, "alice"),
    ("forbidden-sum-a0", tool('"get-sum"', '{"a":0,"b":5}'), refused(403, 403), False, "alice"),
    ("forbidden-sum-a0.0", tool('"get-sum"', '{"a":0.0,"b":5}'), refused(403, 403), False, "alice"),
    ("forbidden-sum-a-0", tool('"get-sum"', '{"a":-0,"b":5}'), refused(403, 403), False, "alice"),
    ("forbidden-sum-a0e0", tool('"get-sum"', '{"a":0e0,"b":5}'), refused(403, 403), False, "alice"),
    ("forbidden-resource", rpc("resources/read", '{"uri":"%s","_meta":{"hostile":"%%N"}}' % FORBIDDEN_URI),
     refused(403, 403), False, "alice"),
    ("allowed-resource", rpc("resources/read", '{"uri":"%s","_meta":{"hostile":"%%N"}}' % ALLOWED_URI),
     served("features"), True, "alice"),
    ("forbidden-prompt", rpc("prompts/get", '{"name":"completable-prompt","arguments":{"department":"Sales","name":"Eve"},"_meta":{"hostile":"%N"}}'),
     refused(403, 403), False, "alice"),
    ("allowed-prompt", rpc("prompts/get", '{"name":"simple-prompt","_meta":{"hostile":"%N"}}'),
     served("simple prompt"), True, "alice"),
    ("control-bob-get-env", GET_ENV, served(SECRET), True, "bob"),
]


def core_cases() -> list:
    cases = []
    for framing in FRAMINGS:
        for name, body, outcome, forwarded, who in CORE:
            markers = [] if who == "bob" else list(EFFECT_MARKERS)
            cases.append(Case(id=f"{framing}:{name}", framing=framing, who=who, body=body, expect=outcome,
                              forwarded=forwarded, markers=markers))
    return cases


ID_SPELLINGS = [("7", True), ('"7"', True), ("7.0", False), ("1e0", False), ("null", False), ("true", False),
                ("[]", False), ("{}", False), ("1152921504606846976", False), ("-1152921504606846976", False),
                ("9007199254740993", False)]


def id_cases() -> list:
    cases = []
    for framing in ("h1-cl", "h2-frames"):
        for spelling, valid in ID_SPELLINGS:
            allowed = tool('"echo"', '{"message":"hi-%N"}', id_json=spelling)
            forbidden = tool('"get-env"', id_json=spelling)
            cases.append(Case(id=f"{framing}:id={spelling}:echo", framing=framing, body=allowed,
                              expect=served("hi-%N") if valid else refused(400, -32600), forwarded=valid))
            cases.append(Case(id=f"{framing}:id={spelling}:get-env", framing=framing, body=forbidden,
                              expect=refused(403, 403) if valid else refused({400, 403}), forwarded=False))
    return cases


def deep(n):
    depth = 5000
    return ('{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"echo","arguments":{"message":"hi-%s","deep":%s%s}}}'
            % (n, "[" * depth, "]" * depth)).encode()


JSON_CASES = [
    ("duplicate-name-unicode-key", tool('"echo","n\\u0061me":"get-env"', '{"message":"x"}'), refused(400, -32600)),
    ("duplicate-name-forbidden-first", tool('"get-env","name":"echo"', '{"message":"x"}'), refused(400, -32600)),
    ("duplicate-method", raw('{"jsonrpc":"2.0","id":7,"method":"tools/list","method":"tools/call","params":{"name":"get-env","arguments":{},"_meta":{"hostile":"%N"}}}'),
     refused(400, -32600)),
    ("duplicate-params", raw('{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"echo","arguments":{"message":"x"}},"params":{"name":"get-env","arguments":{},"_meta":{"hostile":"%N"}}}'),
     refused(400, -32600)),
    ("bom-forbidden", lambda n: "\ufeff".encode() + GET_ENV(n), refused_4xx),
    ("deep-nesting", deep, refused(400, {-32600, -32700})),
    ("batch", lambda n: b"[" + GET_ENV(n) + b"]", refused(400, -32600)),
    ("batch-allowed", lambda n: b"[" + ECHO(n) + b"]", refused(400, -32600)),
    ("batch-whitespace", lambda n: b" \r\n\t[" + ECHO(n) + b"," + GET_ENV(n) + b"]", refused(400, -32600)),
    ("name-not-a-string", tool('["get-env"]'), refused(400, -32602)),
    ("reply-smuggling-a-call", raw('{"jsonrpc":"2.0","id":7,"result":{},"method":"tools/call","params":{"name":"get-env","arguments":{},"_meta":{"hostile":"%N"}}}'),
     refused_4xx),
    ("error-reply-smuggling-a-call", raw('{"jsonrpc":"2.0","id":7,"error":{"code":1,"message":"x"},"method":"tools/call","params":{"name":"get-env","arguments":{},"_meta":{"hostile":"%N"}}}'),
     refused_4xx),
    ("sum-a-0.0-negative", tool('"get-sum"', '{"a":-0.0,"b":5}'), refused(403, 403)),
    ("sum-a-0E+0", tool('"get-sum"', '{"a":0E+0,"b":5}'), refused(403, 403)),
]


def json_cases() -> list:
    return [Case(id=f"h1-cl:json:{name}", body=body, expect=outcome, forwarded=False)
            for name, body, outcome in JSON_CASES]


RESOURCE_VARIANTS = [
    "DEMO://resource/static/document/architecture.md",
    "Demo://resource/static/document/architecture.md",
    "demo://resource/static/document/%61rchitecture.md",
    "demo://resource/static/%64ocument/architecture.md",
    "demo://resource/static/document/architecture%2Emd",
    "demo://resource/static/document/../document/architecture.md",
    "demo://resource/static/x/../document/architecture.md",
    "demo://resource/static/document/./architecture.md",
]


def resource_cases() -> list:
    cases = []
    for uri in RESOURCE_VARIANTS:
        body = rpc("resources/read", '{"uri":"%s","_meta":{"hostile":"%%N"}}' % uri)
        cases.append(Case(id=f"h1-cl:resource:{uri}", body=body, expect=refused(403, 403), forwarded=False))
    for uri in RESOURCE_VARIANTS[:1] + RESOURCE_VARIANTS[5:6]:
        body = rpc("resources/read", '{"uri":"%s","_meta":{"hostile":"%%N"}}' % uri)
        cases.append(Case(id=f"h2-trailers:resource:{uri}", framing="h2-trailers", trailers=[("x-checksum", "1")],
                          body=body, expect=refused(403, 403), forwarded=False))
    return cases


def completion(ref: str, argument: str = '{"name":"department","value":"E"}') -> Callable:
    return rpc("completion/complete", '{"ref":%s,"argument":%s,"_meta":{"hostile":"%%N"}}' % (ref, argument))


def completion_cases() -> list:
    forbidden = completion('{"type":"ref/prompt","name":"completable-prompt"}')
    return [
        Case(id="h1-cl:complete:forbidden-prompt", body=forbidden, expect=refused(403, 403), forwarded=False,
             markers=EFFECT_MARKERS + ["Engineering"]),
        Case(id="h2-frames:complete:forbidden-prompt", framing="h2-frames", body=forbidden, expect=refused(403, 403),
             forwarded=False, markers=EFFECT_MARKERS + ["Engineering"]),
        Case(id="h1-cl:complete:forbidden-resource",
             body=completion('{"type":"ref/resource","uri":"%s"}' % FORBIDDEN_URI), expect=refused(403, 403),
             forwarded=False),
        Case(id="h1-cl:complete:allowed-prompt", body=completion('{"type":"ref/prompt","name":"simple-prompt"}'),
             expect=served(), forwarded=True),
        Case(id="h1-cl:complete:control-bob", who="bob", body=forbidden, expect=served("Engineering"),
             forwarded=True, markers=[]),
    ]


ODD_PATHS = ["/mcp/", "/MCP", "/mcp?x=1", "//mcp", "/mcp/../mcp", "/%6dcp", "/mcp;a", "/other", "/mcp%2F",
             "/oauth/../mcp", "/.well-known/oauth-protected-resource/../../mcp", "/mcp/."]


def allowed_elsewhere(ctx, case, response: Response, n):
    """A POST to a path that is not the MCP path: 404 with a JSON-RPC error, unless Envoy
    normalised it to the MCP path (then it is served as /mcp, and reached the backend as /mcp)."""
    records = [r for r in ctx.records(n) if r.complete]
    if records:
        assert response.status == 200, response.summary()
        for record in records:
            assert record.path.split("?")[0] == "/mcp", f"the backend got path {record.path!r}"
    else:
        assert response.status == 404, f"expected 404, got {response.summary()}"
        jsonrpc_4xx(ctx, case, response, n)


def envoy_redirect_or(check) -> Callable:
    """`%2F` in a path: the connection manager (`path_with_escaped_slashes_action:
    UNESCAPE_AND_REDIRECT`) redirects before any filter runs; nothing is forwarded."""
    def outcome(ctx, case, response: Response, n):
        if response.status in (301, 302, 307, 308) and not ctx.records(n):
            return
        check(ctx, case, response, n)
    return outcome


def path_cases() -> list:
    cases = []
    for path in ODD_PATHS:
        wrap = envoy_redirect_or if "%2F" in path else (lambda check: check)
        cases.append(Case(id=f"h1-cl:path:{path}:get-env", path=path, body=GET_ENV, expect=wrap(jsonrpc_4xx),
                          forwarded=False))
        cases.append(Case(id=f"h1-cl:path:{path}:echo", path=path, body=ECHO, expect=wrap(allowed_elsewhere)))
    for path in ("/MCP", "/mcp/", "/%6dcp"):
        cases.append(Case(id=f"h2-frames:path:{path}:get-env", framing="h2-frames", path=path, body=GET_ENV,
                          expect=jsonrpc_4xx, forwarded=False))
    cases.append(Case(id="h1-cl:path:/oauth/../mcp:no-token", path="/oauth/../mcp", who=None, session=None,
                      body=GET_ENV, expect=refused_4xx, forwarded=False))
    cases.append(Case(id="h1-cl:path:/oauth/%2e%2e/mcp:no-token", path="/oauth/%2e%2e/mcp", who=None, session=None,
                      body=GET_ENV, expect=refused_4xx, forwarded=False))
    return cases


def with_headers(*extra) -> Callable:
    return lambda ctx, case, n, base: base + list(extra)


def method_cases() -> list:
    cases = []
    for method in ("PUT", "PATCH"):
        cases.append(Case(id=f"h1-cl:method:{method}:echo", method=method, body=ECHO, expect=refused(405), forwarded=False))
        cases.append(Case(id=f"h1-cl:method:{method}:get-env", method=method, body=GET_ENV, expect=refused(405),
                          forwarded=False))
    cases.append(Case(id="h2-frames:method:PUT:get-env", framing="h2-frames", method="PUT", body=GET_ENV,
                      expect=refused(405), forwarded=False))
    for header in ("x-http-method-override", "x-http-method", "x-method-override"):
        for target in ("PUT", "GET"):
            cases.append(Case(id=f"h1-cl:method:POST+{header}:{target}:get-env", body=GET_ENV,
                              headers=with_headers((header, target)), expect=refused(405), forwarded=False))
    for method in ("GET", "DELETE", "OPTIONS"):
        for framing in ("h1-cl", "h1-chunked", "h2-frames"):
            cases.append(Case(id=f"{framing}:method:{method}-with-body:get-env", framing=framing, method=method,
                              body=GET_ENV, session="fresh", expect=refused_4xx, forwarded=False))
    cases.append(Case(id="h1-cl:method:OPTIONS-preflight-with-body:get-env", method="OPTIONS", body=GET_ENV,
                      session="fresh",
                      headers=with_headers(("origin", "http://evil.example"), ("access-control-request-method", "POST")),
                      expect=refused_4xx, forwarded=False))
    return cases


def authorization_replaced(name: str, value_fn) -> Callable:
    def headers(ctx, case, n, base):
        kept = [(k, v) for k, v in base if k.lower() != "authorization"]
        return kept + [(name, value_fn(ctx))]
    return headers


def two_authorizations(second) -> Callable:
    def headers(ctx, case, n, base):
        return base + [("authorization", f"Bearer {second(ctx)}")]
    return headers


def header_cases() -> list:
    bearer = lambda who: (lambda ctx: f"Bearer {ctx.tokens[who]}")
    cases = [
        Case(id="h1-cl:headers:two-authorization:get-env", body=GET_ENV, stage="headers",
             headers=two_authorizations(lambda ctx: ctx.tokens["bob"]), expect=refused(400), forwarded=False),
        Case(id="h1-cl:headers:two-authorization-same:echo", body=ECHO, stage="headers",
             headers=two_authorizations(lambda ctx: ctx.tokens["alice"]), expect=refused(400), forwarded=False),
        Case(id="h2-frames:headers:two-authorization:get-env", framing="h2-frames", body=GET_ENV, stage="headers",
             headers=two_authorizations(lambda ctx: ctx.tokens["bob"]), expect=refused(400), forwarded=False),
        Case(id="h1-cl:headers:query-access-token:echo", session="own", who=None, stage="headers",
             path="/mcp?access_token=%TOKEN", body=ECHO, expect=refused(400), forwarded=False),
        Case(id="h1-cl:headers:query-and-header-token:echo", stage="headers",
             path="/mcp?access_token=%TOKEN", body=ECHO, expect=refused(400), forwarded=False),
    ]
    for name in ("authorization", "Authorization", "AUTHORIZATION", "aUtHoRiZaTiOn"):
        cases.append(Case(id=f"h1-cl:headers:{name}:echo", body=ECHO, headers=authorization_replaced(name, bearer("alice")),
                          expect=served("hi-%N"), forwarded=True))
        cases.append(Case(id=f"h1-cl:headers:{name}:get-env", body=GET_ENV,
                          headers=authorization_replaced(name, bearer("alice")), expect=refused(403, 403), forwarded=False))
    mismatch = refused(400, -32020)
    sentinel = lambda text: "=?base64?%s?=" % __import__("base64").b64encode(text.encode()).decode()
    cases += [
        Case(id="h1-cl:headers:mcp-name-echo-body-get-env", body=GET_ENV,
             headers=with_headers(("mcp-method", "tools/call"), ("mcp-name", "echo")), expect=mismatch, forwarded=False),
        Case(id="h1-cl:headers:mcp-method-list-body-call", body=GET_ENV,
             headers=with_headers(("mcp-method", "tools/list")), expect=mismatch, forwarded=False),
        Case(id="h1-cl:headers:mcp-name-case", body=ECHO,
             headers=with_headers(("mcp-method", "tools/call"), ("mcp-name", "Echo")), expect=mismatch, forwarded=False),
        Case(id="h1-cl:headers:mcp-name-base64-echo-body-get-env", body=GET_ENV,
             headers=with_headers(("mcp-method", "tools/call"), ("mcp-name", sentinel("echo"))), expect=mismatch,
             forwarded=False),
        Case(id="h1-cl:headers:mcp-method-without-name", body=GET_ENV,
             headers=with_headers(("mcp-method", "tools/call")), expect=mismatch, forwarded=False),
        Case(id="h1-cl:headers:two-mcp-name:echo", body=ECHO,
             headers=with_headers(("mcp-method", "tools/call"), ("mcp-name", "echo"), ("mcp-name", "get-env")),
             expect=refused(400, -32020), forwarded=False),
        Case(id="h1-cl:headers:two-mcp-name:get-env", body=GET_ENV,
             headers=with_headers(("mcp-method", "tools/call"), ("mcp-name", "echo"), ("mcp-name", "get-env")),
             expect=refused({400, 403}), forwarded=False),
        Case(id="h2-trailers:headers:mcp-name-echo-body-get-env", framing="h2-trailers", trailers=[("x-checksum", "1")],
             body=GET_ENV, headers=with_headers(("mcp-method", "tools/call"), ("mcp-name", "echo")), expect=mismatch,
             forwarded=False),
        Case(id="h1-cl:headers:mcp-headers-matching:echo", body=ECHO,
             headers=with_headers(("mcp-method", "tools/call"), ("mcp-name", "echo")), expect=served("hi-%N"),
             forwarded=True),
        Case(id="h1-cl:headers:mcp-name-base64-matching:echo", body=ECHO,
             headers=with_headers(("mcp-method", "tools/call"), ("mcp-name", sentinel("echo"))), expect=served("hi-%N"),
             forwarded=True),
    ]

    def content_types(*values):
        def headers(ctx, case, n, base):
            return [(k, v) for k, v in base if k.lower() != "content-type"] + [("content-type", v) for v in values]
        return headers

    cases += [
        Case(id="h1-cl:headers:two-content-type:get-env", body=GET_ENV,
             headers=content_types("application/json", "application/json"), expect=refused_4xx, forwarded=False),
        Case(id="h1-cl:headers:text-plain-then-json:get-env", body=GET_ENV,
             headers=content_types("text/plain", "application/json"), expect=refused_4xx, forwarded=False),
        Case(id="h1-cl:headers:json-then-text-plain:echo", body=ECHO,
             headers=content_types("application/json", "text/plain"), expect=refused_4xx, forwarded=False),
        Case(id="h1-cl:headers:text-plain:echo", body=ECHO, headers=content_types("text/plain"),
             expect=refused(400, -32700), forwarded=False),
        Case(id="h1-cl:headers:text-plain:get-env", body=GET_ENV, headers=content_types("text/plain"),
             expect=refused(400, -32700), forwarded=False),
        Case(id="h1-cl:headers:no-content-type:echo", body=ECHO, headers=content_types(),
             expect=refused(400, -32700), forwarded=False),
        Case(id="h1-cl:headers:json-charset:echo", body=ECHO, headers=content_types("application/json; charset=utf-8"),
             expect=served("hi-%N"), forwarded=True),
        Case(id="h1-cl:headers:spoofed-identity:echo", body=ECHO,
             headers=with_headers(("x-mcp-subject", "bob"), ("X-MCP-Subject", "root"), ("x-mcp-client-id", "admin")),
             expect=served("hi-%N"), forwarded=True),
        Case(id="h2-frames:headers:spoofed-identity:echo", framing="h2-frames", body=ECHO,
             headers=with_headers(("x-mcp-subject", "bob"), ("x-mcp-client-id", "admin")),
             expect=served("hi-%N"), forwarded=True),
        Case(id="h1-chunked-trailers:headers:spoofed-identity-in-trailers:echo", framing="h1-chunked-trailers",
             body=ECHO, trailers=[("x-mcp-subject", "bob"), ("authorization", "Bearer x")], expect=served("hi-%N"),
             forwarded=True),
        Case(id="h2-trailers:headers:spoofed-identity-in-trailers:echo", framing="h2-trailers",
             body=ECHO, trailers=[("x-mcp-subject", "bob"), ("x-mcp-client-id", "admin")], expect=served("hi-%N"),
             forwarded=True),
    ]
    return cases


def held_then_unauthorized(ctx, case, response: Response, n):
    unauthorized(ctx, case, response, n)
    assert ctx.jwks.requests > case_jwks_before.get(n, 0), "the request was not held for a JWKS refetch"


case_jwks_before: dict = {}


def token_cases() -> list:
    def token_header(make):
        return lambda ctx, case, n, base: [(k, v) for k, v in base if k != "authorization"] + (
            [("authorization", make(ctx))] if make else [])

    now = int(time.time())
    makers = {
        "none": None,
        "empty-bearer": lambda ctx: "Bearer ",
        "basic": lambda ctx: "Basic YWxpY2U6cGFzcw==",
        "garbage": lambda ctx: "Bearer not.a.jwt",
        "expired": lambda ctx: "Bearer " + ctx.signing_key.sign(
            claims(ctx.envoy, sub="alice", groups=["devs"], iat=now - 7200, exp=now - 3600)),
        "wrong-audience": lambda ctx: "Bearer " + ctx.signing_key.sign(
            claims(ctx.envoy, sub="alice", groups=["devs"], aud="http://evil.example/mcp")),
        "alg-none": lambda ctx: "Bearer " + hostile.alg_none(claims(ctx.envoy, sub="alice", groups=["devs"]),
                                                             ctx.signing_key.kid),
        "hs256-public-key": lambda ctx: "Bearer " + hostile.hs256_with_public_key(
            claims(ctx.envoy, sub="alice", groups=["devs"]), ctx.signing_key, ctx.signing_key.kid),
        "crit-exp": lambda ctx: "Bearer " + ctx.signing_key.sign(claims(ctx.envoy, sub="alice", groups=["devs"]),
                                                                 headers={"crit": ["exp"]}),
        "crit-unknown": lambda ctx: "Bearer " + ctx.signing_key.sign(claims(ctx.envoy, sub="alice", groups=["devs"]),
                                                                     headers={"crit": ["x-hostile"], "x-hostile": 1}),
        "unknown-kid": lambda ctx: "Bearer " + SigningKey("kid-" + uuid.uuid4().hex[:8]).sign(
            claims(ctx.envoy, sub="alice", groups=["devs"])),
        "tampered-signature": lambda ctx: "Bearer " + ctx.tokens["bob"][:-6] + "AAAAAA",
    }
    cases = []
    for name, make in makers.items():
        # An empty `Bearer ` is a malformed request (RFC 6750 3.1: 400 invalid_request) or a missing token (401).
        outcome = refused({400, 401}) if name == "empty-bearer" else unauthorized
        cases.append(Case(id=f"h1-cl:token:{name}:echo", body=ECHO, headers=token_header(make), stage="headers",
                          expect=outcome, forwarded=False))
    for name in ("expired", "alg-none", "unknown-kid"):
        cases.append(Case(id=f"h2-trailers:token:{name}:get-env", framing="h2-trailers", trailers=[("x-checksum", "1")],
                          body=GET_ENV, headers=token_header(makers[name]), stage="headers", expect=unauthorized,
                          forwarded=False))

    # Held for keys: a kid nobody has seen makes the filter refetch the (slow) JWKS while the body
    # and the trailers arrive; a client-set identity header rides along.
    def held(ctx, case, n, base):
        token = SigningKey("unseen-" + uuid.uuid4().hex[:8]).sign(claims(ctx.envoy, sub="alice", groups=["devs"]))
        return [(k, v) for k, v in base if k != "authorization"] + [
            ("authorization", f"Bearer {token}"), ("x-mcp-subject", "alice"), ("x-mcp-client-id", "trusted")]

    trailers = [("x-mcp-subject", "admin"), ("x-checksum", "1")]
    for framing in ("h2-trailers", "h1-chunked-trailers"):
        for payload, body in (("echo", ECHO), ("get-env", GET_ENV)):
            cases.append(Case(id=f"{framing}:held-for-keys:{payload}", framing=framing, body=body, headers=held,
                              trailers=trailers, stage="headers", expect=held_then_unauthorized, forwarded=False))
    return cases


def unknown_method_cases() -> list:
    cases = [
        Case(id="h1-cl:method-unknown:x/unknown", body=rpc("x/unknown", '{"_meta":{"hostile":"%N"}}'),
             expect=refused(set(range(400, 500)), -32601, "unknown"), forwarded=False),
        Case(id="h1-cl:method-unknown:x/unknown-bob", who="bob", body=rpc("x/unknown", '{"_meta":{"hostile":"%N"}}'),
             expect=refused(set(range(400, 500)), -32601, "unknown"), forwarded=False),
        Case(id="h2-frames:method-unknown:x/unknown", framing="h2-frames",
             body=rpc("x/unknown", '{"name":"get-env","_meta":{"hostile":"%N"}}'),
             expect=refused(set(range(400, 500)), -32601, "unknown"), forwarded=False),
    ]
    for who in ("bob", "alice"):
        for method in ("resources/templates/list", "server/discover", "tasks/list"):
            cases.append(Case(id=f"h1-cl:standard-method:{method}:{who}", who=who,
                              body=rpc(method, '{"_meta":{"hostile":"%N"}}'), expect=not_denied_by_policy,
                              markers=[]))
    return cases


def list_cases() -> list:
    cases = []
    for framing in ("h1-cl", "h1-chunked", "h2-frames", "h2-trailers"):
        trailers = [("x-checksum", "1")] if "trailers" in framing else None
        body = rpc("tools/list", '{"_meta":{"hostile":"%N"}}')
        cases.append(Case(id=f"{framing}:list:tools:alice", framing=framing, trailers=trailers, body=body,
                          expect=listed("tools", ["echo", "get-sum"], ["get-env"]), forwarded=True,
                          markers=['"get-env"']))
        cases.append(Case(id=f"{framing}:list:tools:bob", framing=framing, trailers=trailers, who="bob", body=body,
                          expect=listed("tools", ["echo", "get-env"], []), forwarded=True, markers=[]))
    for framing in ("h1-cl", "h2-frames"):
        cases.append(Case(id=f"{framing}:list:prompts:alice", framing=framing,
                          body=rpc("prompts/list", '{"_meta":{"hostile":"%N"}}'),
                          expect=listed("prompts", ["simple-prompt"], ["completable-prompt"]), forwarded=True,
                          markers=['"completable-prompt"']))
        cases.append(Case(id=f"{framing}:list:resources:alice", framing=framing,
                          body=rpc("resources/list", '{"_meta":{"hostile":"%N"}}'),
                          expect=listed("resources", [ALLOWED_URI], [FORBIDDEN_URI]), forwarded=True,
                          markers=['"%s"' % FORBIDDEN_URI]))
        cases.append(Case(id=f"{framing}:list:prompts:bob", framing=framing, who="bob",
                          body=rpc("prompts/list", '{"_meta":{"hostile":"%N"}}'),
                          expect=listed("prompts", ["simple-prompt", "completable-prompt"], []), forwarded=True,
                          markers=[]))
    return cases


HOSTILE_SHAPES = [
    # (shape, outcome for alice, whether bob's control applies)
    ("json", list_cut, True),
    ("json-charset", list_cut, True),
    ("sse", list_cut, True),
    ("sse-byte-split", list_cut, True),
    ("sse-server-request-same-id-first", list_cut, True),
    ("sse-crlf", list_cut, True),
    ("sse-cr", list_cut, True),
    ("sse-multiline-data", list_cut, True),
    ("sse-fields-comments-bom", list_cut_or_error, True),
    ("sse-data-no-space-crlf-bom", list_cut_or_error, True),
    ("sse-id-7.0", list_cut_or_error, False),
    ("json-id-7.0", list_cut_or_error, False),
    ("sse-id-string", list_cut_or_error, False),
    ("sse-id-1e0", list_cut_or_error, False),
    ("sse-ends-without-answer", list_error, False),
    ("sse-unterminated-answer", list_error, False),
    ("sse-two-answers", list_cut_or_error, False),
    ("sse-upper-content-type", list_cut_or_error, True),
    ("json-duplicate-tools-key", list_error, False),
    ("json-unicode-escaped-name", list_cut_or_error, True),
    ("json-gzip", list_cut_or_error, False),
    ("json-500-with-result", list_cut_or_error, False),
    ("json-trailing-second-answer", list_cut_or_error, False),
    ("json-no-content-type", list_cut_or_error, False),
]
LIST_MARKERS = ['"get-env"', "Dumps the environment"]


def crafted_cases() -> list:
    cases = []
    body = rpc("tools/list", '{"_meta":{"hostile":"%N"}}')
    for shape, outcome, control in HOSTILE_SHAPES:
        for framing in ("h1-cl", "h2-frames"):
            cases.append(Case(id=f"{framing}:crafted:{shape}:alice", framing=framing, body=body, route=shape,
                              session=None, expect=outcome, forwarded=True, markers=LIST_MARKERS))
        if control:
            cases.append(Case(id=f"h1-cl:crafted:{shape}:control-bob", who="bob", body=body, route=shape,
                              session=None, expect=list_whole, forwarded=True, markers=[]))
    return cases


CASES = (core_cases() + id_cases() + json_cases() + resource_cases() + completion_cases() + path_cases()
         + method_cases() + header_cases() + token_cases() + unknown_method_cases() + list_cases() + crafted_cases())
assert len({case.id for case in CASES}) == len(CASES), "case ids must be unique"


# ------------------------------------------------------------------------------------------------
# Running a case


def base_headers(ctx: Ctx, case: Case, n: str) -> list:
    headers = [("content-type", "application/json"), ("accept", McpSession.ACCEPT), ("x-hostile-case", n)]
    if case.who:
        headers.append(("authorization", f"Bearer {ctx.tokens[case.who]}"))
    session_owner = case.who if case.session == "own" else case.session
    if session_owner == "fresh":  # a throwaway session of the case's principal (a DELETE may end it)
        session_id = McpSession(ctx.envoy.url("/mcp"), ctx.tokens[case.who]).open().session_id
        headers += [("mcp-session-id", session_id), ("mcp-protocol-version", "2025-11-25")]
    elif session_owner:
        headers += [("mcp-session-id", ctx.sessions[session_owner]), ("mcp-protocol-version", "2025-11-25")]
    if case.route:
        headers.append(("x-hostile-shape", case.route))
    return headers


def send(ctx: Ctx, framing: str, method: str, path: str, headers: list, body: bytes | None,
         trailers: list | None = None, **kwargs) -> Response:
    if framing == "h1-cl":
        return http1(ctx.port, method, path, headers, body, framing=framing, **kwargs)
    if framing in ("h1-chunked", "h1-chunked-trailers"):
        return http1(ctx.port, method, path, headers, chunks=split_points(body or b""), framing=framing,
                     trailers=trailers if framing == "h1-chunked-trailers" else None, **kwargs)
    if framing == "h2-frames":
        return http2(ctx.port, method, path, headers, frames=split_points(body or b""), framing=framing, **kwargs)
    if framing == "h2-empty-end":
        return http2(ctx.port, method, path, headers, frames=split_points(body or b"", 4), empty_end=True,
                     framing=framing, **kwargs)
    if framing == "h2-trailers":
        return http2(ctx.port, method, path, headers, frames=split_points(body or b"", 6),
                     trailers=trailers or [("x-checksum", "1")], framing=framing, **kwargs)
    raise ValueError(framing)


IDENTITY = ("x-mcp-subject", "x-mcp-client-id", "authorization")


def describe(record) -> str:
    identity = {name: [value[:24] + ("..." if len(value) > 24 else "") for value in record.header_values(name)]
                for name in IDENTITY if record.header_values(name)}
    return (f"{record.method} {record.path} complete={record.complete} identity={identity} "
            f"trailers={record.trailers} body={bytes(record.received()[:70])!r}")


def check_backend(ctx: Ctx, case: Case, n: str, body: bytes | None, response: Response):
    records = ctx.records(n)
    where = f"[{ctx.mode}] {case.id}"
    if case.forwarded is False:
        if ctx.hold or case.stage == "headers":
            assert not records, (f"{where}: the backend saw {len(records)} request(s) "
                                 f"({[describe(r) for r in records]}); caller got {response.summary()}")
        else:
            # Mode `sent`: the headers of a call decided on its body go ahead; nothing else may.
            for record in records:
                assert not record.complete and not record.received(), (
                    f"{where}: the backend got the body of a refused request "
                    f"({record.method} {record.path} complete={record.complete}: {bytes(record.received()[:120])!r}); "
                    f"caller got {response.summary()}")
        FORBIDDEN_NONCES.append((ctx.mode, n, case.id))  # nothing yet: look again at the end
    elif case.forwarded is True:
        complete = [r for r in records if r.complete]
        assert len(complete) == 1, (f"{where}: expected the backend to get the request once, got {len(complete)}; "
                                    f"caller got {response.summary()}")
        record = complete[0]
        assert bytes(record.body) == body, f"{where}: the body reached the backend altered: {bytes(record.body)[:200]!r}"
        assert record.path.split("?")[0] == "/mcp", f"{where}: the backend got path {record.path!r}"
        subject = SUBJECT.get(case.who, case.who)
        assert record.header_values("x-mcp-subject") == [subject], (
            f"{where}: x-mcp-subject at the backend: {record.header_values('x-mcp-subject')}")
        assert record.header_values("x-mcp-client-id") == ["test-client"], record.header_values("x-mcp-client-id")
        assert not record.header_values("authorization"), f"{where}: the token reached the backend"
        smuggled = [name for name, _ in record.trailers if name in IDENTITY]
        assert not smuggled, f"{where}: identity trailers reached the backend: {record.trailers}"


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_hostile(ctx, case):
    n = nonce()
    case_jwks_before[n] = ctx.jwks.requests
    body = case.body(n) if case.body else None
    headers = base_headers(ctx, case, n)
    if case.headers:
        headers = case.headers(ctx, case, n, headers)
    path = case.path.replace("%TOKEN", ctx.tokens["alice"])
    response = send(ctx, case.framing, case.method, path, headers, body, case.trailers)
    if os.environ.get("HOSTILE_VERBOSE"):
        print(f"\n[{ctx.mode}] {case.id}: {response.summary()}")
    seen = leaks(response, case.markers)
    assert not seen, f"[{ctx.mode}] {case.id}: the caller saw {seen}: {response.summary()}"
    check_backend(ctx, case, n, body, response)
    if case.expect:
        case.expect(ctx, case, response, n)


# ------------------------------------------------------------------------------------------------
# Sequences: sessions across principals, GET streams


def echo_as(ctx: Ctx, who: str, session_of: str, framing="h1-cl"):
    n = nonce()
    case = Case(id=f"echo-as-{who}-in-{session_of}", who=who, session=session_of)
    body = ECHO(n)
    return n, body, send(ctx, framing, "POST", "/mcp", base_headers(ctx, case, n), body)


def test_a_session_is_bound_to_its_principal(ctx):
    """mallory (same group, another `sub`) must not use or end alice2's session: each attempt is
    refused 404 (the spec's "session not found") and never forwarded; alice2 keeps working."""
    owner = "alice2"
    problems = []
    for framing in ("h1-cl", "h2-frames"):
        n, body, stolen = echo_as(ctx, "mallory", owner, framing)
        forwarded = [r for r in ctx.records(n) if r.complete]
        if stolen.status != 404 or forwarded:
            problems.append(f"{framing} POST with another principal's session: {stolen.summary()}, "
                            f"forwarded={bool(forwarded)}")

    def mallory_headers(n, accept):
        return [("authorization", f"Bearer {ctx.tokens['mallory']}"), ("mcp-session-id", ctx.sessions[owner]),
                ("mcp-protocol-version", "2025-11-25"), ("accept", accept), ("x-hostile-case", n)]

    n = nonce()
    stream = http1(ctx.port, "GET", "/mcp", mallory_headers(n, "text/event-stream"), framing="h1-cl")
    forwarded = [r for r in ctx.records(n) if r.complete]
    if stream.status != 404 or forwarded:
        problems.append(f"GET stream of another principal's session: {stream.summary()}, forwarded={bool(forwarded)}")

    n = nonce()
    deleted = http1(ctx.port, "DELETE", "/mcp", mallory_headers(n, McpSession.ACCEPT), framing="h1-cl")
    forwarded = [r for r in ctx.records(n) if r.complete]
    if deleted.status != 404 or forwarded:
        problems.append(f"DELETE of another principal's session: {deleted.summary()}, forwarded={bool(forwarded)}")

    n, body, mine = echo_as(ctx, "alice2", owner)
    if mine.status != 200 or f"hi-{n}" not in mine.text:
        problems.append(f"the owner lost the session: {mine.summary()}")
    assert not problems, f"[{ctx.mode}] " + "; ".join(problems)


def sse_event_ids(text: str) -> list:
    return [line[3:].strip() for line in text.replace("\r\n", "\n").split("\n") if line.startswith("id:")]


def test_a_resumed_get_stream_never_replays_a_forbidden_item(ctx):
    """`GET /mcp` with `Last-Event-ID`: refused (400 with a JSON-RPC error: resumption is not
    supported), or the replay must not carry what the list answers cut (server-everything's event
    store keeps every answer as the server sent it, unfiltered)."""
    who = "alice3"
    case = Case(id="replay", who=who)
    n = nonce()
    listing = send(ctx, "h1-cl", "POST", "/mcp", base_headers(ctx, case, n),
                   rpc("tools/list", '{"_meta":{"hostile":"%N"}}')(n))
    assert listing.status == 200 and "get-env" not in tool_names(listing), listing.summary()
    ids = sse_event_ids(listing.text)
    assert ids, f"expected SSE event ids (the server's priming event): {listing.summary()}"
    problems = []
    for framing in ("h1-cl", "h2-frames"):
        n = nonce()
        headers = [("authorization", f"Bearer {ctx.tokens[who]}"), ("mcp-session-id", ctx.sessions[who]),
                   ("mcp-protocol-version", "2025-11-25"), ("accept", "text/event-stream"),
                   ("last-event-id", ids[0]), ("x-hostile-case", n)]
        replay = send(ctx, framing, "GET", "/mcp", headers, None, stream_for=2.0,
                      stop=lambda raw: b"get-env" in raw or b'"tools"' in raw)
        seen = leaks(replay, LIST_MARKERS)
        if seen:
            problems.append(f"{framing}: the replay carried {seen}: {replay.summary()}")
        elif replay.status == 400:
            if replay.error_code() is None:
                problems.append(f"{framing}: 400 without a JSON-RPC error: {replay.summary()}")
        elif replay.status != 200:
            problems.append(f"{framing}: {replay.summary()}")
    assert not problems, f"[{ctx.mode}] " + "; ".join(problems)


def test_zz_summary(request):
    """Late arrivals: no refused request reached the backend after its case was checked (those
    that had already arrived failed their own case)."""
    late = []
    for recorder in ALL_RECORDERS:
        with recorder.lock:
            records = list(recorder.records)
        for mode, n, case_id in FORBIDDEN_NONCES:
            if any(r.complete and r.mentions(n) for r in records):
                late.append(f"[{mode}] {case_id}")
    requests, framings = hostile.STATS["requests"], len(hostile.STATS["framings"])
    print(f"\nhostile suite: {requests} requests, {framings} framings")
    assert not late, f"refused requests reached the backend: {late}"
    selected = [item for item in request.session.items if item.module is request.module]
    expected = 2 * len(CASES) + 2 * 2 + 1
    if len(selected) >= expected:
        assert requests >= 300, f"only {requests} requests"
