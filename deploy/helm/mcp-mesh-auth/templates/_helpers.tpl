{{/* The release's base name: the release name, with the chart's appended unless it holds it. */}}
{{- define "mma.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* The authorization server's objects (Deployment, Service, ConfigMap...). */}}
{{- define "mma.authserver" -}}
{{- printf "%s-authserver" (include "mma.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "mma.authserver.serviceAccount" -}}
{{- if .Values.authserver.serviceAccount.create -}}
{{- default (include "mma.authserver" .) .Values.authserver.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.authserver.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* The Service's name inside the cluster: the filters fetch the JWKS there. */}}
{{- define "mma.authserver.host" -}}
{{- printf "%s.%s.svc.%s" (include "mma.authserver" .) .Release.Namespace .Values.mesh.clusterDomain -}}
{{- end -}}

{{- define "mma.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "mma.authserver.selector" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: authserver
{{- end -}}

{{/* Where the pod sees its files. Every path in the server's configuration is one of these. */}}
{{- define "mma.paths" -}}
config: /etc/mcp-auth/config
secrets: /etc/mcp-auth/secrets
data: /var/lib/mcp-auth
{{- end -}}

{{/* `repository:tag@digest` when a digest is given (the kubelet then pulls exactly it), else
`repository:tag`. */}}
{{- define "mma.authserver.image" -}}
{{- $image := .Values.authserver.image -}}
{{- $ref := printf "%s:%s" $image.repository (default .Chart.AppVersion $image.tag) -}}
{{- if $image.digest -}}
{{- printf "%s@%s" $ref $image.digest -}}
{{- else -}}
{{- $ref -}}
{{- end -}}
{{- end -}}

{{/* 1 on SQLite whatever is asked (the schema refuses more; this keeps a schema-less render safe). */}}
{{- define "mma.authserver.replicas" -}}
{{- if eq .Values.authserver.database.type "sqlite" -}}1{{- else -}}{{ .Values.authserver.replicas }}{{- end -}}
{{- end -}}

{{/* The MCP resources tokens may be issued for: every team's, then the extra ones. */}}
{{- define "mma.resources" -}}
{{- $resources := list -}}
{{- range .Values.teams -}}
{{- $resources = append $resources .resource -}}
{{- end -}}
{{- $resources = concat $resources .Values.authserver.extraResources | uniq -}}
{{- toJson $resources -}}
{{- end -}}

{{/* The server's YAML configuration: the values' `config`, and what the pod decides. */}}
{{- define "mma.authserver.config" -}}
{{- $paths := include "mma.paths" . | fromYaml -}}
{{- $values := .Values.authserver -}}
{{- $config := deepCopy $values.config -}}
{{- $_ := set $config "listen" "0.0.0.0:9000" -}}
{{- $_ := set $config "resources" (include "mma.resources" . | fromJsonArray) -}}
{{- if eq $values.database.type "sqlite" -}}
{{- $_ := set $config "database" (printf "sqlite://%s/auth.db?mode=rwc" $paths.data) -}}
{{- end -}}
{{- $keys := list -}}
{{- range $values.signingKeys.keys -}}
{{- $keys = append $keys (printf "%s/signing/%s" $paths.secrets .) -}}
{{- end -}}
{{- $_ := set $config "signing_keys" $keys -}}
{{- $_ := set $config "encryption_key_file" (printf "%s/encryption.key" $paths.secrets) -}}
{{- $upstream := deepCopy $config.upstream -}}
{{- $_ := set $upstream "client_secret_file" (printf "%s/upstream-client-secret" $paths.secrets) -}}
{{- $_ := set $config "upstream" $upstream -}}
{{- toYaml $config -}}
{{- end -}}

{{/* A team's pod labels: its selector, or app: <name>. */}}
{{- define "mma.team.selector" -}}
{{- toYaml (default (dict "app" .name) .selector) -}}
{{- end -}}

{{/* The mTLS identities allowed to reach a team's MCP pods: the gateway's, then the team's own. */}}
{{- define "mma.team.principals" -}}
{{- $mesh := .root.Values.mesh -}}
{{- $gateway := printf "%s/ns/%s/sa/%s" $mesh.trustDomain $mesh.gateway.namespace $mesh.gateway.serviceAccount -}}
{{- toJson (prepend (default (list) .team.allowedPrincipals) $gateway | uniq) -}}
{{- end -}}

{{/* A team's objects: `<release>-<team>`. */}}
{{- define "mma.team.name" -}}
{{- printf "%s-%s" (include "mma.fullname" .root) .team.name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* A team's filter configuration (README, "Filter configuration"): what the chart derives from the
team and the authorization server, under `filter.pluginConfig`, under the team's `pluginConfig`.
No public path: in the MCP pods' sidecar, only the MCP endpoint and its metadata (which the filter
serves itself) are routed here, and nothing else on the pod is meant to be reached without a
token. */}}
{{- define "mma.team.pluginConfig" -}}
{{- $root := .root -}}
{{- $team := .team -}}
{{- $issuer := trimSuffix "/" $root.Values.authserver.config.issuer -}}
{{- $host := include "mma.authserver.host" $root -}}
{{- $config := dict "resource" $team.resource "authorization_servers" (list $issuer) "scopes_supported" $root.Values.authserver.config.scopes "public_paths" (list) "server_name" $team.name -}}
{{- if $team.jwtAuthn -}}
{{- /* Istio's jwt_authn verified the token and stored its payload under the issuer's name. */ -}}
{{- $_ := set $config "issuers" (list (dict "issuer" $issuer)) -}}
{{- $_ := set $config "jwt_authn" (dict "metadata_namespace" "envoy.filters.http.jwt_authn" "payload_in_metadata" $issuer) -}}
{{- else -}}
{{- $jwks := dict "cluster" (printf "outbound|9000||%s" $host) "path" "/.well-known/jwks.json" "authority" $host "refresh_seconds" 300 -}}
{{- $_ := set $config "issuers" (list (dict "issuer" $issuer "jwks" $jwks)) -}}
{{- end -}}
{{- $_ := set $config "cedar" (dict "group_claim" (default "groups" $team.groupClaim) "policies" $team.policies) -}}
{{- $config = mergeOverwrite $config (deepCopy $root.Values.filter.pluginConfig) (deepCopy (default (dict) $team.pluginConfig)) -}}
{{- toYaml $config -}}
{{- end -}}
