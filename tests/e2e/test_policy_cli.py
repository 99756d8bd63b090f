"""The policy workflow for real: `mcp-mesh-auth schema` from the demo servers' own `tools/list`
(through Envoy and the filter, SSE and JSON answers), `validate`, `test`, `explain` — and the filter
in Envoy deciding as the CLI says, and refusing policies that fail the configured schema."""

import json
import subprocess

import pytest
import requests
import yaml

from harness import ROOT, SERVERS, Envoy, McpSession, claims, free_port, start_node_server, wait_until

CLI = ROOT / "target" / "debug" / "mcp-mesh-auth"
EXAMPLE = ROOT / "envoy" / "filter-example.yaml"
HELP = "Ask for access in #mcp-access: https://wiki.example.com/mcp-access"
TYPO = '@id("typo")\npermit(principal in THVGroup::"mcp-developers",\n  action == Action::"call_tools",\n  resource);\n'


def cli(*args):
    assert CLI.exists(), f"missing {CLI}: run `make cli`"
    return subprocess.run([str(CLI), *map(str, args)], capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def kubernetes(log_dir):
    """The demo's Kubernetes backend (get_pods, scale_deployment, delete_namespace), answering JSON."""
    proc, port = start_node_server("probe-kubernetes-cli", SERVERS / "probe-server.mjs", log_dir,
                                   env={"TOOLS": "kubernetes", "STATELESS": "1"})
    yield port
    proc.stop()


@pytest.fixture(scope="module")
def envoy(log_dir, everything, kubernetes, jwks):
    """The shipped example configuration (its policies), server-everything on /mcp, Kubernetes on
    /probe/mcp."""
    proxy = Envoy(log_dir, backend_port=everything, jwks_port=jwks.port, probe_port=kubernetes,
                  name="envoy-policy-cli", filter_config={"denial_help": HELP})
    proxy.wait_ready()
    yield proxy
    proxy.stop()


def token(envoy, signing_key, sub, groups, **more):
    return signing_key.sign(claims(envoy, sub=sub, groups=groups, **more))


@pytest.fixture(scope="module")
def schema(envoy, signing_key, tmp_path_factory):
    path = tmp_path_factory.mktemp("schema") / "mcp.cedarschema"
    admin = token(envoy, signing_key, "root", ["mcp-admin"])
    result = cli("schema", "--server", envoy.url("/mcp"), "--server", envoy.url("/probe/mcp"), "--token", admin,
                 "--claim", "sub:String", "--optional-claim", "groups:Set<String>", "-o", path)
    assert result.returncode == 0, result.stderr
    return path


def test_the_schema_declares_the_real_servers_tool_and_prompt_arguments(schema):
    text = schema.read_text()
    prompt = text[text.index("entity Prompt"):].split("};")[0]
    assert "arg_city?: String" in prompt, prompt  # server-everything's args-prompt
    # server-everything's echo (SSE answers) and the Kubernetes backend's tools (JSON answers).
    for declared in ("arg_message?: String", "arg_namespace?: String", "arg_replicas?: Long",
                     "claim_groups?: Set<String>", "claim_sub: String", "readOnlyHint?: Bool",
                     'action "call_tool" appliesTo', "entity Client in [THVGroup]"):
        assert declared in text, f"{declared} missing from\n{text}"


def test_the_shipped_policies_validate_and_a_typo_is_refused_with_the_fix(schema, tmp_path):
    for config in (EXAMPLE, ROOT / "envoy" / "demo.yaml"):
        result = cli("validate", "--config", config, "--schema", schema)
        assert result.returncode == 0, result.stdout + result.stderr
        assert "ok: 4 policies validate against the schema" in result.stdout
    typo = tmp_path / "team.cedar"
    typo.write_text(TYPO)
    result = cli("validate", "--policies", typo, "--schema", schema)
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"{typo}:3: policy `typo`: unrecognized action `Action::\"call_tools\"`" in result.stdout, result.stdout
    assert 'help: did you mean `Action::"call_tool"`?' in result.stdout, result.stdout
    assert "1 of 1 policies fail validation" in result.stdout


def test_the_schema_needs_has_for_an_optional_claim(schema, tmp_path):
    unguarded = tmp_path / "roles.cedar"
    unguarded.write_text('@id("dept") permit(principal, action, resource) when { principal.claim_groups.contains("x") };')
    result = cli("validate", "--policies", unguarded, "--schema", schema)
    assert result.returncode == 1 and "claim_groups" in result.stdout, result.stdout
    guarded = tmp_path / "guarded.cedar"
    guarded.write_text('@id("dept") permit(principal, action, resource) when { principal has claim_groups && principal.claim_groups.contains("x") };')
    assert cli("validate", "--policies", guarded, "--schema", schema).returncode == 0


CASES = [
    {"name": "a developer lists pods", "claims": {"sub": "alice", "groups": ["mcp-developers"]},
     "request": {"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                 "params": {"name": "get_pods", "arguments": {"namespace": "dev"}}},
     "expect": "allow", "policies": ["mcp-developers-all"]},
    {"name": "a developer may not delete a namespace", "claims": {"sub": "alice", "groups": ["mcp-developers"]},
     "request": {"jsonrpc": "2.0", "id": 2, "method": "tools/call",
                 "params": {"name": "delete_namespace", "arguments": {"namespace": "dev"}}},
     "expect": "deny", "policies": ["mcp-developers-never-delete_namespace"]},
    {"name": "the platform team may", "claims": {"sub": "bob", "groups": ["mcp-platform"]},
     "request": {"jsonrpc": "2.0", "id": 3, "method": "tools/call",
                 "params": {"name": "delete_namespace", "arguments": {"namespace": "tmp"}}},
     "expect": "allow", "policies": ["mcp-platform-all"]},
    {"name": "no group, no call", "claims": {"sub": "carol", "groups": []},
     "request": {"jsonrpc": "2.0", "id": 4, "method": "tools/call",
                 "params": {"name": "get_pods", "arguments": {"namespace": "dev"}}},
     "expect": "deny", "policies": []},
]


def test_a_case_file_passes_and_envoy_decides_every_case_the_same(envoy, signing_key, tmp_path):
    cases = tmp_path / "cases.yaml"
    cases.write_text(yaml.safe_dump({"cases": CASES}))
    result = cli("test", "--config", EXAMPLE, cases)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"4 passed, 0 failed, 4 cases ({cases})" in result.stdout, result.stdout
    for case in CASES:
        session = McpSession(envoy.url("/probe/mcp"), token(envoy, signing_key, **case["claims"]))
        response = session.post(case["request"])
        assert (response.status_code != 403) == (case["expect"] == "allow"), (case["name"], response.text)


def test_a_list_case_expects_what_envoy_cuts_the_list_to(envoy, signing_key, tmp_path):
    admin = McpSession(envoy.url("/probe/mcp"), token(envoy, signing_key, "root", ["mcp-admin"])).open()
    tools = admin.request("tools/list")["result"]["tools"]
    saved = tmp_path / "tools.json"
    saved.write_text(json.dumps({"tools": tools}))
    alice = McpSession(envoy.url("/probe/mcp"), token(envoy, signing_key, "alice", ["mcp-developers"])).open()
    seen = sorted(tool["name"] for tool in alice.request("tools/list")["result"]["tools"])
    assert seen == ["get_pods", "scale_deployment"], seen
    cases = tmp_path / "lists.yaml"
    cases.write_text(yaml.safe_dump({"cases": [
        {"name": "developers see all but delete_namespace", "claims": {"sub": "alice", "groups": ["mcp-developers"]},
         "request": {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}, "expect": "allow", "listed": seen},
        {"name": "no group, empty list", "claims": {"sub": "carol", "groups": []},
         "request": {"jsonrpc": "2.0", "id": 2, "method": "tools/list"}, "expect": "allow", "listed": []},
    ]}))
    result = cli("test", "--config", EXAMPLE, "--tools-file", saved, cases)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 passed, 0 failed" in result.stdout


def test_a_failing_case_fails_the_run_saying_why(tmp_path):
    wrong = dict(CASES[1], name="wrongly expected", expect="allow")
    cases = tmp_path / "cases.yaml"
    cases.write_text(yaml.safe_dump({"cases": [CASES[0], wrong]}))
    result = cli("test", "--config", EXAMPLE, cases)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "FAIL  wrongly expected: expected Allow, got Deny: " in result.stdout, result.stdout
    assert "forbidden by `mcp-developers-never-delete_namespace`" in result.stdout
    assert "1 passed, 1 failed, 2 cases" in result.stdout


def test_explain_names_the_deciding_policy_and_envoy_answers_with_the_help(envoy, signing_key):
    alice = token(envoy, signing_key, "alice", ["mcp-developers"])
    delete = {"jsonrpc": "2.0", "id": 9, "method": "tools/call",
              "params": {"name": "delete_namespace", "arguments": {"namespace": "prod"}}}
    result = cli("explain", "--config", EXAMPLE, "--token", alice, "--request", json.dumps(delete))
    assert result.returncode == 0, result.stderr
    assert "WITHOUT verifying its signature" in result.stdout
    assert "decision: deny" in result.stdout
    assert "policies: mcp-developers-never-delete_namespace" in result.stdout, result.stdout
    # The filter in Envoy: the same denial, with the operator's help for the end user.
    response = McpSession(envoy.url("/probe/mcp"), alice).post(delete)
    assert response.status_code == 403
    error = response.json()["error"]
    assert error["data"] == {"help": HELP}
    assert "a policy forbids `call_tool` on `Tool::\"delete_namespace\"`" in error["message"]
    assert "mcp-developers-never" not in response.text, "policy ids stay in the log"


def test_a_default_deny_is_explained_and_logged_with_who_and_what(envoy, signing_key):
    carol = token(envoy, signing_key, "carol", [])
    call = {"jsonrpc": "2.0", "id": 5, "method": "tools/call", "params": {"name": "get_pods", "arguments": {"namespace": "x"}}}
    result = cli("explain", "--config", EXAMPLE, "--claims", json.dumps({"sub": "carol"}),
                 "--request", json.dumps(call), "--json")
    outcome = json.loads(result.stdout)
    reason = 'no policy permits Client::"carol" `call_tool` on Tool::"get_pods" (default deny)'
    assert (outcome["decision"], outcome["policies"], outcome["reason"]) == ("deny", [], reason)
    assert "note" not in outcome, "claims given as claims are not a token"
    response = McpSession(envoy.url("/probe/mcp"), carol).post(call)
    assert response.status_code == 403
    assert "no policy permits" in response.json()["error"]["message"]

    def logged():
        return [line for line in envoy.process.log().splitlines() if '"subject":"carol"' in line and reason.replace('"', '\\"') in line]
    wait_until(logged, 10, "the audit line of carol's default deny")


def test_an_untrusted_issuer_is_told_which_issuers_are_trusted(envoy, signing_key):
    other = token(envoy, signing_key, "alice", ["mcp-platform"], iss="https://other-tenant.example.com")
    response = requests.post(envoy.url("/mcp"), headers={"authorization": f"Bearer {other}"}, json={}, timeout=10)
    assert response.status_code == 401
    assert response.json()["error_description"] == (
        f"issuer `https://other-tenant.example.com` is not trusted; trusted issuers: {envoy.issuer}")


def test_envoy_refuses_policies_that_fail_the_configured_schema(log_dir, everything, schema):
    example = json.loads(yaml.safe_load(EXAMPLE.read_text())["static_resources"]["listeners"][0]["filter_chains"][0]
                         ["filters"][0]["typed_config"]["http_filters"][0]["typed_config"]["config"]
                         ["configuration"]["value"])["cedar"]
    bad = Envoy(log_dir, backend_port=everything, jwks_port=free_port(), name="envoy-schema-typo",
                filter_config={"cedar": dict(example, schema=schema.read_text(), policies=example["policies"] + [TYPO])})
    try:
        with pytest.raises(RuntimeError):  # Envoy exits: the listener never starts
            bad.wait_ready(timeout=120)

        def refused():
            return [line for line in bad.process.log().splitlines() if "configuration refused:" in line]
        refusal = wait_until(refused, 30, "the configuration refusal in Envoy's log")
        assert ("the policies do not validate against `cedar.schema`: policy `typo` (`cedar.policies[4]` line 3): "
                'unrecognized action `Action::"call_tools"`: did you mean `Action::"call_tool"`?') in refusal[0], refusal[0]
    finally:
        bad.stop()
    good = Envoy(log_dir, backend_port=everything, jwks_port=free_port(), name="envoy-schema-ok",
                 filter_config={"cedar": dict(example, schema=schema.read_text())})
    try:
        good.wait_ready(timeout=120)
    finally:
        good.stop()
