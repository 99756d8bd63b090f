#!/usr/bin/env bash
# The local stack behind `make demo`: the authorization server (SQLite, the dev login with demo
# users, or a real OpenID provider when UPSTREAM_ISSUER, UPSTREAM_CLIENT_ID and
# UPSTREAM_CLIENT_SECRET are set), two demo MCP backends, and Envoy with the filter on
# http://localhost:8080 (envoy/demo.yaml). State lives in .demo/; Ctrl-C stops everything.
set -euo pipefail
cd "$(dirname "$0")/.."

STATE=.demo
PASSWORD=mcp-demo
mkdir -p "$STATE"
chmod 700 "$STATE"

pids=()
stop() {
  trap - EXIT INT TERM
  echo
  echo "stopping the demo stack..."
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  echo "stopped."
}
trap stop EXIT
trap 'stop; exit 0' INT TERM

for port in 8080 8081 9000 9901 3101 3102; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    echo "port $port is in use: stop whatever listens there (a previous demo?) and try again" >&2
    exit 1
  fi
done

# A signing key that survives restarts of the demo, so issued tokens stay valid.
[ -f "$STATE/signing.pem" ] || openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$STATE/signing.pem" 2>/dev/null
cat > "$STATE/users.yaml" <<USERS
users:
- {username: alice, password: $PASSWORD, email: alice@example.com, name: Alice, groups: [mcp-developers]}
- {username: bob, password: $PASSWORD, email: bob@example.com, name: Bob, groups: [mcp-platform]}
- {username: carol, password: $PASSWORD, email: carol@example.com, name: Carol, groups: []}
USERS

if [ -n "${UPSTREAM_ISSUER:-}" ]; then
  : "${UPSTREAM_CLIENT_ID:?set UPSTREAM_CLIENT_ID with UPSTREAM_ISSUER}" "${UPSTREAM_CLIENT_SECRET:?set UPSTREAM_CLIENT_SECRET with UPSTREAM_ISSUER}"
  umask 077
  printf '%s\n' "$UPSTREAM_CLIENT_SECRET" > "$STATE/upstream-secret"
  [ -f "$STATE/encryption.key" ] || openssl rand -base64 32 > "$STATE/encryption.key"
  umask 022
  # UPSTREAM_ALLOW_HTTP=1 lets a local, http:// identity provider in (never in production).
  ALLOW_HTTP=false
  if [ "${UPSTREAM_ALLOW_HTTP:-}" = 1 ]; then ALLOW_HTTP=true; fi
  UPSTREAM="upstream: {type: oidc, issuer_url: \"$UPSTREAM_ISSUER\", client_id: \"$UPSTREAM_CLIENT_ID\", client_secret_file: $STATE/upstream-secret, scopes: [openid, profile, email, offline_access, groups], groups_claim: groups, allow_http_issuer: $ALLOW_HTTP}
encryption_key_file: $STATE/encryption.key"
  WHO="your identity provider's users ($UPSTREAM_ISSUER)"
else
  UPSTREAM="upstream: {type: dev, users_file: $STATE/users.yaml}"
  WHO="alice (mcp-developers), bob (mcp-platform), carol (no group) — password: $PASSWORD"
fi
cat > "$STATE/authserver.yaml" <<CONFIG
issuer: http://localhost:8080
listen: 127.0.0.1:9000
database: sqlite://$STATE/auth.db?mode=rwc
resources: [http://localhost:8080/mcp]
scopes: [mcp:tools, offline_access]
signing_keys: [$STATE/signing.pem]
groups: {prefix: mcp-}
lifetimes: {access_seconds: ${ACCESS_TOKEN_SECONDS:-3600}}
$UPSTREAM
CONFIG

PORT=3101 TOOLS=github node tests/servers/probe-server.mjs > "$STATE/github.log" 2>&1 & pids+=($!)
PORT=3102 TOOLS=kubernetes node tests/servers/probe-server.mjs > "$STATE/kubernetes.log" 2>&1 & pids+=($!)
# The authorization server is restarted if it stops: clients, refresh tokens and keys live in
# .demo/, so a restart loses nothing (try: pkill -f mcp-mesh-authserver).
(
  trap 'kill "$child" 2>/dev/null; exit 0' TERM INT
  while true; do
    target/debug/mcp-mesh-authserver --config "$STATE/authserver.yaml" >> "$STATE/authserver.log" 2>&1 &
    child=$!
    wait "$child" || true
    echo "authorization server exited; restarting it" >> "$STATE/authserver.log"
    sleep 0.5
  done
) & pids+=($!)
.venv/bin/envoy -c envoy/demo.yaml --disable-hot-restart --concurrency 2 -l warning > "$STATE/envoy.log" 2>&1 & pids+=($!)

echo "starting (Envoy compiles the filter module first)..."
for _ in $(seq 1 240); do
  for pid in "${pids[@]}"; do
    if ! kill -0 "$pid" 2>/dev/null; then
      echo "a process of the stack exited; its log is in $STATE/:" >&2
      tail -n 20 "$STATE"/*.log >&2
      exit 1
    fi
  done
  if curl -fs http://127.0.0.1:9901/ready >/dev/null 2>&1 && curl -fs http://127.0.0.1:9000/readyz >/dev/null 2>&1; then
    ready=1
    break
  fi
  sleep 0.5
done
[ -n "${ready:-}" ] || { echo "the stack did not become ready; logs are in $STATE/" >&2; exit 1; }

cat <<BANNER

  mcp-mesh-auth demo is running.

  MCP server URL:  http://localhost:8080/mcp
  Sign in as:      $WHO
  Policies:        mcp-developers may use every tool but kubernetes__delete_namespace;
                   mcp-platform everything; anyone else nothing (envoy/demo.yaml)

  VS Code:  Command Palette > "MCP: Add Server..." > HTTP > http://localhost:8080/mcp
            (or in .vscode/mcp.json: {"servers": {"mesh": {"type": "http", "url": "http://localhost:8080/mcp"}}})
  Claude:   claude mcp add --transport http mesh http://localhost:8080/mcp   (then /mcp to sign in)

  Logs: $STATE/*.log      Stop: Ctrl-C
BANNER
wait -n "${pids[@]}" || true
echo "a process of the stack exited; logs are in $STATE/" >&2
exit 1
