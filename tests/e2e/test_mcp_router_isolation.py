"""What Envoy's `mcp_router` (1.40) passes to the backends it aggregates, and why the filter cannot
give each of them its own token there (issue 16, "per backend behind `mcp_router`").

`mcp_router` builds every backend request afresh: none of the client's headers reach a backend —
not its `Authorization`, not the identity headers the filter sets, not any other — and the
backend request's own stream shares nothing with the client's: an upstream HTTP filter on the
backend's cluster (where a per-backend exchange would have to run; Envoy does run upstream filters
for `mcp_router`'s requests, and accepts this module there) reads neither the filter state the
filter wrote (`wasm.mcp_auth.principal`) nor the dynamic metadata of Envoy's `mcp` filter. So there
is no channel to hand the caller's identity to a per-backend exchange. The same facts are a
guarantee worth keeping: behind `mcp_router` the caller's token never reaches a backend."""

import json

import requests

from harness import Envoy, McpSession, claims

PROBE = "%FILTER_STATE(wasm.mcp_auth.principal:PLAIN)%|%DYNAMIC_METADATA(envoy.filters.http.mcp)%"


def upstream_probe(config):
    """On backend `p1` only: an upstream HTTP filter writing what it can see of the client's stream."""
    for cluster in config["static_resources"]["clusters"]:
        if cluster["name"] == "p1":
            cluster["typed_extension_protocol_options"] = {"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                "explicit_http_config": {"http_protocol_options": {}},
                "http_filters": [
                    {"name": "envoy.filters.http.header_mutation", "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.filters.http.header_mutation.v3.HeaderMutation",
                        "mutations": {"request_mutations": [
                            {"append": {"header": {"key": "x-upstream-filter", "value": f"ran|{PROBE}"}}}]}}},
                    {"name": "envoy.filters.http.upstream_codec", "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.filters.http.upstream_codec.v3.UpstreamCodec"}}]}}


def test_a_backend_behind_mcp_router_gets_nothing_of_the_clients_request(log_dir, probe, jwks, signing_key):
    proxy = Envoy(log_dir, backend_port=probe, jwks_port=jwks.port, name="envoy-router-isolation",
                  mcp_router={"p1": probe, "p2": probe}, edit=upstream_probe,
                  filter_config={"identity_headers": {"x-mcp-subject": "sub"}})
    try:
        proxy.wait_ready()
        token = signing_key.sign(claims(proxy, sub="alice"))
        session = McpSession(proxy.url("/mcp"), token).open()
        seen = {}
        for backend in ("p1", "p2"):
            response = requests.post(proxy.url("/mcp"), timeout=10, data=json.dumps(
                {"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": {"name": f"{backend}__whoami", "arguments": {}}}),
                headers={**session.headers(), "x-client-header": "from-the-client"})
            assert response.status_code == 200, response.text
            for line in response.text.splitlines():
                if line.startswith("data:"):
                    seen[backend] = json.loads(json.loads(line[5:])["result"]["content"][0]["text"])
        for backend, headers in seen.items():
            assert "authorization" not in headers, f"{backend} got a bearer token: {headers}"
            assert token not in json.dumps(headers)
            assert "x-mcp-subject" not in headers and "x-client-header" not in headers, headers
        # The upstream filter ran for p1's request, and saw nothing of the client's stream.
        assert seen["p1"]["x-upstream-filter"] == "ran||", seen["p1"]
        assert "x-upstream-filter" not in seen["p2"]
    finally:
        proxy.stop()
