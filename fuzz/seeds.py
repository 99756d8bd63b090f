#!/usr/bin/env python3
"""Writes the seed inputs of every fuzz target into fuzz/corpus/TARGET/seed-*.

The corpora are committed (seeds plus what the fuzzer found, minimised with `cargo fuzz cmin`);
run this again only to add seeds. The configuration seeds are the JSON configurations embedded
in envoy/*.yaml (PyYAML reads them)."""

import hashlib
import json
import pathlib

ROOT = pathlib.Path(__file__).resolve().parent
REPO = ROOT.parent


def write(target, data):
    if isinstance(data, str):
        data = data.encode()
    folder = ROOT / "corpus" / target
    folder.mkdir(parents=True, exist_ok=True)
    (folder / ("seed-" + hashlib.sha1(data).hexdigest()[:16])).write_bytes(data)


def compact(value):
    return json.dumps(value, separators=(",", ":"))


# --- MCP messages a client sends (server-everything's tools, prompts, resources) ---------------
CALLS = [
    {"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": {"roots": {"listChanged": True}, "sampling": {}},
        "clientInfo": {"name": "inspector", "version": "0.17.0"}}},
    {"jsonrpc": "2.0", "method": "notifications/initialized"},
    {"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}},
    {"jsonrpc": "2.0", "id": "list-2", "method": "tools/list", "params": {"cursor": "page-2"}},
    {"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "echo", "arguments": {"message": "hi"}}},
    {"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": {"name": "add", "arguments": {"a": 1, "b": 2}}},
    {"jsonrpc": "2.0", "id": 4, "method": "tools/call", "params": {
        "name": "longRunningOperation", "arguments": {"duration": 10, "steps": 5},
        "_meta": {"progressToken": 4}}},
    {"jsonrpc": "2.0", "id": 5, "method": "prompts/list"},
    {"jsonrpc": "2.0", "id": 6, "method": "prompts/get", "params": {"name": "complex_prompt", "arguments": {"temperature": "0.7"}}},
    {"jsonrpc": "2.0", "id": 7, "method": "resources/list"},
    {"jsonrpc": "2.0", "id": 8, "method": "resources/templates/list"},
    {"jsonrpc": "2.0", "id": 9, "method": "resources/read", "params": {"uri": "test://static/resource/1"}},
    {"jsonrpc": "2.0", "id": 10, "method": "resources/read", "params": {"uri": "TEST://static/resource/%31"}},
    {"jsonrpc": "2.0", "id": 11, "method": "resources/read", "params": {"uri": "file:///a/b/../c/./d%2fe?q=%7e#f"}},
    {"jsonrpc": "2.0", "id": 12, "method": "resources/subscribe", "params": {"uri": "https://EXAMPLE.com:443/x/%7Ey"}},
    {"jsonrpc": "2.0", "id": 13, "method": "resources/unsubscribe", "params": {"uri": "http://[::1]:80/"}},
    {"jsonrpc": "2.0", "id": 14, "method": "completion/complete", "params": {
        "ref": {"type": "ref/prompt", "name": "complex_prompt"}, "argument": {"name": "style", "value": "f"}}},
    {"jsonrpc": "2.0", "id": 15, "method": "completion/complete", "params": {
        "ref": {"type": "ref/resource", "uri": "test://static/resource/{id}"}, "argument": {"name": "id", "value": "1"}}},
    {"jsonrpc": "2.0", "id": 16, "method": "ping"},
    {"jsonrpc": "2.0", "id": 17, "method": "logging/setLevel", "params": {"level": "debug"}},
    {"jsonrpc": "2.0", "id": 18, "method": "tasks/get", "params": {"taskId": "t-123"}},
    {"jsonrpc": "2.0", "id": 19, "method": "tasks/list"},
    {"jsonrpc": "2.0", "id": 20, "method": "subscriptions/listen", "params": {"uris": ["test://static/resource/1", "test://x"]}},
    {"jsonrpc": "2.0", "id": 21, "method": "server/discover"},
    {"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": 4, "reason": "user"}},
    {"jsonrpc": "2.0", "id": 9007199254740991, "method": "ping"},
    {"jsonrpc": "2.0", "id": -9007199254740991, "method": "ping"},
    {"jsonrpc": "2.0", "id": "s", "result": {"roots": [{"uri": "file:///home", "name": "home"}]}},
    {"jsonrpc": "2.0", "id": 7, "error": {"code": -1, "message": "declined"}},
]
RAW_CALLS = [
    '{"jsonrpc":"2.0","id":1.0,"method":"ping"}',
    '{"jsonrpc":"2.0","id":1e0,"method":"ping"}',
    '{"jsonrpc":"2.0","id":-0,"method":"ping"}',
    '{"jsonrpc":"2.0","id":9007199254740992,"method":"ping"}',
    '{"jsonrpc":"2.0","id":null,"method":"ping"}',
    '{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","name":"delete"}}',
    '[{"jsonrpc":"2.0","id":1,"method":"ping"}]',
    '{"jsonrpc":"2.0","id":1,"method":"tools/call","params":[1,2]}',
    ' \r\n\t{"jsonrpc" : "2.0", "id" : "\\u0031", "method" : "tools\\/call", "params" : {"name" : "\\u0065cho"}} ',
]
for call in CALLS:
    write("jsonrpc", compact(call))
for raw in RAW_CALLS:
    write("jsonrpc", raw)

# --- List answers (server-everything), as JSON and as event streams ---------------------------
TOOLS = [
    {"name": "echo", "description": "Echoes back the input",
     "inputSchema": {"type": "object", "properties": {"message": {"type": "string"}}, "required": ["message"]}},
    {"name": "add", "description": "Adds two numbers",
     "inputSchema": {"type": "object", "properties": {"a": {"type": "number"}, "b": {"type": "number"}}}},
    {"name": "longRunningOperation", "inputSchema": {"type": "object"}},
    {"name": "printEnv", "inputSchema": {"type": "object", "properties": {}}},
    {"name": "sampleLLM", "inputSchema": {"type": "object"}},
    {"name": "getTinyImage", "inputSchema": {"type": "object"}},
    {"name": "annotatedMessage", "annotations": {"readOnlyHint": True, "destructiveHint": False},
     "inputSchema": {"type": "object"}},
    {"name": "getResourceReference", "inputSchema": {"type": "object", "properties": {"resourceId": {"type": "number", "minimum": 1, "maximum": 100}}}},
    {"name": "startElicitation", "inputSchema": {"type": "object"}},
    {"name": "structuredContent", "outputSchema": {"type": "object"}, "inputSchema": {"type": "object"}},
]
PROMPTS = [
    {"name": "simple_prompt", "description": "A prompt without arguments"},
    {"name": "complex_prompt", "arguments": [{"name": "temperature", "required": True}, {"name": "style"}]},
    {"name": "resource_prompt", "arguments": [{"name": "resourceId", "required": True}]},
]
RESOURCES = [
    {"uri": "test://static/resource/1", "name": "Resource 1", "mimeType": "text/plain"},
    {"uri": "test://static/resource/2", "name": "Resource 2", "mimeType": "application/octet-stream"},
    {"uri": "file:///etc/hosts", "name": "hosts"},
    {"uri": "https://example.com/a", "name": "a"},
]
TEMPLATES = [
    {"uriTemplate": "test://static/resource/{id}", "name": "Static Resource"},
    {"uriTemplate": "file:///{path}", "name": "files"},
]
# control byte: bits 0-1 kind (tools, prompts, resources, templates), bit 2 id "1", bit 3 no
# answer awaited, bit 4 small event limit, bits 5-7 refused initial (a e g p s f h r).
LISTS = [(0, "tools", TOOLS), (1, "prompts", PROMPTS), (2, "resources", RESOURCES),
         (3, "resourceTemplates", TEMPLATES)]
INITIAL = {"a": 0, "e": 1, "g": 2, "p": 3, "s": 4, "f": 5, "h": 6, "r": 7}


def control(kind, initial, string_id=False, no_answer=False, small=False):
    return bytes([kind | (4 if string_id else 0) | (8 if no_answer else 0) | (16 if small else 0)
                  | (INITIAL[initial] << 5)])


def framed(ctrl, chunks, body):
    return ctrl + bytes([len(chunks)]) + bytes(chunks) + body


for kind, key, items in LISTS:
    for initial in ("a", "e", "s", "f", "r"):
        answer = {"jsonrpc": "2.0", "id": 1, "result": {key: items, "nextCursor": "page-2"}}
        body = compact(answer).encode()
        write("list_filter", framed(control(kind, initial), [], body))
        pretty = json.dumps(answer, indent=2).encode()
        write("list_filter", framed(control(kind, initial), [7, 30], pretty))
        string_id = dict(answer, id="1")
        write("list_filter", framed(control(kind, initial, string_id=True), [], compact(string_id).encode()))
        sse = (b": priming\n\nid: 0\ndata:\n\n"
               b"event: message\ndata: " + compact({"jsonrpc": "2.0", "method": "notifications/message",
                                                    "params": {"level": "info", "data": "x"}}).encode()
               + b"\n\nevent: message\nid: 1\ndata: " + body + b"\n\n")
        write("list_filter", framed(control(kind, initial), [5, 17, 3, 40], sse))
        multi = b"\xef\xbb\xbfevent: message\r\n" + b"".join(
            b"data: " + line + b"\r\n" for line in pretty.split(b"\n")) + b"\r\n"
        write("list_filter", framed(control(kind, initial), [1, 2, 1, 60], multi))
        write("list_filter", framed(control(kind, initial, no_answer=True), [9], sse))
        write("list_filter", framed(control(kind, initial, small=True), [2, 50], sse))
for extra in [
    {"jsonrpc": "2.0", "id": 1, "result": {"tools": [], "cacheScope": "public"}},
    {"jsonrpc": "2.0", "id": 1, "result": {"tools": [{"name": "echo"}], "cacheScope": "private"}},
    {"jsonrpc": "2.0", "id": 1, "result": {}},
    {"jsonrpc": "2.0", "id": 1, "error": {"code": -32601, "message": "no"}},
    {"jsonrpc": "2.0", "id": 1.0, "result": {"tools": [1, None, "a", {"name": None}, {"name": 7}, {"name": "add"}]}},
    {"jsonrpc": "2.0", "id": 2, "result": {"tools": [{"name": "add"}]}},
]:
    body = compact(extra).encode()
    write("list_filter", framed(control(0, "a"), [], body))
    write("list_filter", framed(control(0, "a"), [3], b"data: " + body + b"\n\n"))
write("list_filter", framed(control(0, "a"), [], b'{"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"add"}],"tools":[]}}'))
write("list_filter", framed(control(0, "a"), [4], b'data: {"id":1,"result":{"tools":[{"name":"add"}]}}\r\rdata: [1]\n\n'))

# --- Tokens (mode 0: text; 1: a valid token with its signature edited; 2: its text edited) ----
import base64


def b64(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


CLAIMS = {"iss": "https://auth.example.com", "aud": "https://mcp.example.com/mcp", "sub": "alice",
          "exp": 1800000300, "iat": 1799999990}
for header in [{"alg": "RS256", "kid": "rsa"}, {"alg": "none"}, {"alg": "HS256", "kid": "rsa"},
               {"alg": "ES256", "kid": "p256", "crit": ["exp"]}, {"alg": "EdDSA", "kid": "ed", "b64": False},
               {"alg": "PS256", "typ": "JWT"}, {"alg": "ES384", "kid": "p384", "typ": "at+jwt"},
               {"alg": "RS512", "kid": "nope"}]:
    write("jwt", b"\x00" + f"{b64(compact(header).encode())}.{b64(compact(CLAIMS).encode())}.{b64(bytes(64))}".encode())
DUPLICATE_ALG = b64(b'{"alg":"RS256","alg":"none"}')
write("jwt", b"\x00" + f"{DUPLICATE_ALG}.{b64(b'{}')}.".encode())
write("jwt", b"\x00a.b.c")
write("jwt", b"\x00....")
for which in range(6):
    write("jwt", bytes([1, which]))
    write("jwt", bytes([1, which, 0, 5, 1]))
    write("jwt", bytes([1, which, 4, 200, 0]))
    write("jwt", bytes([2, which]))
    write("jwt", bytes([2, which, 1, 40, 3, 3, 250, 0]))

# --- Configurations -------------------------------------------------------------------------
try:
    import yaml

    def configurations(node):
        if isinstance(node, dict):
            value = node.get("configuration", {})
            if isinstance(value, dict) and isinstance(value.get("value"), str):
                yield value["value"]
            for child in node.values():
                yield from configurations(child)
        elif isinstance(node, list):
            for child in node:
                yield from configurations(child)

    for path in sorted((REPO / "envoy").glob("*.yaml")):
        for document in yaml.safe_load_all(path.read_text()):
            for text in configurations(document):
                write("config", text)
except ImportError:
    print("PyYAML is missing: no configuration seeds from envoy/*.yaml")
write("config", compact({
    "resource": "https://mcp.example.com/mcp",
    "issuers": [{"issuer": "https://mcp.example.com", "jwks": {"cluster": "a", "path": "/jwks", "timeout_ms": 500}},
                {"issuer": "https://inline.example.com", "jwks_inline": {"keys": [
                    {"kty": "EC", "crv": "P-256", "kid": "k", "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
                     "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}]}}],
    "required_scopes": ["mcp:tools"],
    "tool_scopes": {"delete_*": ["mcp:admin"]},
    "cedar": {"policies": ["permit(principal, action == Action::\"call_tool\", resource == Tool::\"echo\");"]},
    "binding_key": "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=",
    "methods": {"x/allowed": "allow", "x/run": {"authorize": {"action": "call_tool", "target": "params.tool"}}},
    "public_paths": ["/oauth/"], "extra_mcp_paths": ["/mcp/v2"], "mcp_path": "/mcp",
    "identity_headers": {"x-mcp-subject": "sub"}, "max_body_bytes": 65536, "clock_skew_seconds": 30,
}))

# --- Lifecycle: [control] [n] [script] body ----------------------------------------------------
def call(name):
    return compact({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                    "params": {"name": name, "arguments": {}}}).encode()


for body in [call("echo"), call("rm"), call("delete_namespace"), compact(CALLS[2]).encode(),
             compact(CALLS[0]).encode(), b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","name":"rm"}}']:
    for ctrl in [0, 1, 0x08, 0x09, 0x10, 0x21, 0x31, 0x02, 0x03, 0x04, 0x06]:
        write("lifecycle", bytes([ctrl, 0]) + body)
        write("lifecycle", bytes([ctrl, 3, 40, 1, 200]) + body)
