{{/* The ConfigMap (the non-secret environment) of one component; call with
(dict "root" $ "component" "gateway"). templates/configmap.yaml renders it, and the component's
Deployment hashes it (checksum/config), so a change to one service's settings rolls only that
service's pods. */}}
{{- define "erp.configMap" -}}
{{- $root := .root -}}
{{- $component := .component -}}
{{- $fullname := include "erp.fullname" $root -}}
{{- $c := $root.Values.config -}}
{{- $scheme := include "erp.grpcScheme" $root -}}

{{- $svc := index $root.Values $component }}
{{- /* Numbers set only when given (null: the service's default); int64 keeps 1048576 from
       rendering as 1.048576e+06. */ -}}
{{- $numbers := list }}
{{- $strings := list }}
{{- if eq $component "gateway" }}
{{- $numbers = list (list "ERP_INTROSPECTION_CACHE_TTL_MS" $svc.introspectionCacheTtlMs) (list "ERP_RATE_LIMIT_PER_MINUTE" $svc.rateLimitPerMinute) (list "ERP_AUTH_RATE_LIMIT_PER_MINUTE" $svc.authRateLimitPerMinute) (list "ERP_HTTP_TIMEOUT_MS" $svc.httpTimeoutMs) (list "ERP_HTTP_HEADER_READ_TIMEOUT_MS" $svc.httpHeaderReadTimeoutMs) (list "ERP_HTTP_IDLE_TIMEOUT_MS" $svc.httpIdleTimeoutMs) (list "ERP_HTTP_MAX_CONNECTIONS" $svc.httpMaxConnections) (list "ERP_HTTP2_MAX_CONCURRENT_STREAMS" $svc.http2MaxConcurrentStreams) (list "ERP_HTTP_MAX_HEADER_BYTES" $svc.httpMaxHeaderBytes) (list "ERP_AUTH_FAILURES_PER_MINUTE" $svc.authFailuresPerMinute) (list "ERP_TRUSTED_PROXIES" $svc.trustedProxies) (list "ERP_ACCESS_LOG_SLOW_MS" $svc.accessLogSlowMs) }}
{{- $strings = list (list "ERP_CORS_ALLOWED_ORIGINS" (join "," $svc.corsAllowedOrigins)) (list "ERP_ACCESS_LOG" $svc.accessLog) }}
{{- else if eq $component "auth" }}
{{- $numbers = list (list "ERP_ACCESS_TOKEN_TTL_SECS" $root.Values.jwt.accessTokenTtlSecs) (list "ERP_REFRESH_TOKEN_TTL_SECS" $root.Values.jwt.refreshTokenTtlSecs) (list "ERP_ARGON2_MEMORY_KIB" $svc.argon2MemoryKib) (list "ERP_ARGON2_ITERATIONS" $svc.argon2Iterations) (list "ERP_ARGON2_PARALLELISM" $svc.argon2Parallelism) (list "ERP_LOGIN_MAX_FAILURES" $svc.loginMaxFailures) (list "ERP_LOGIN_LOCKOUT_WINDOW_SECS" $svc.loginLockoutWindowSecs) (list "ERP_LOGIN_MAX_FAILURES_PER_ACCOUNT" $svc.loginMaxFailuresPerAccount) (list "ERP_PASSWORD_HASH_CONCURRENCY" $svc.passwordHashConcurrency) (list "ERP_PASSWORD_HASH_QUEUE_TIMEOUT_MS" $svc.passwordHashQueueTimeoutMs) (list "ERP_OUTBOX_POLL_MS" $svc.outboxPollMs) (list "ERP_OUTBOX_MAX_BACKOFF_SECS" $svc.outboxMaxBackoffSecs) (list "ERP_USER_CACHE_TTL_MS" $svc.userCacheTtlMs) }}
{{- $strings = list (list "ERP_MONGODB_DATABASE" $root.Values.mongodb.authDatabase) (list "ERP_JWT_ISSUER" $root.Values.jwt.issuer) (list "ERP_JWT_AUDIENCE" $root.Values.jwt.audience) }}
{{- else }}
{{- $numbers = list (list "ERP_EVENT_CACHE_TTL_MS" $svc.eventCacheTtlMs) (list "ERP_EVENT_LIST_CACHE_TTL_MS" $svc.listCacheTtlMs) (list "ERP_CLAIM_PENDING_EXPIRY_SECS" $svc.claimPendingExpirySecs) (list "ERP_JOBS_INTERVAL_SECS" $svc.jobsIntervalSecs) (list "ERP_CLAIM_BATCH_MAX" $svc.claimBatchMax) (list "ERP_CLAIM_QUEUE_MAX" $svc.claimQueueMax) (list "ERP_CLAIM_DENIAL_AUDIT_WINDOW_SECS" $svc.claimDenialAuditWindowSecs) (list "ERP_DELIVERY_MAX_ATTEMPTS" $svc.delivery.maxAttempts) (list "ERP_DELIVERY_BACKOFF_BASE_MS" $svc.delivery.backoffBaseMs) (list "ERP_DELIVERY_BACKOFF_MAX_MS" $svc.delivery.backoffMaxMs) (list "ERP_DELIVERY_TIMEOUT_MS" $svc.delivery.timeoutMs) (list "ERP_DELIVERY_CONCURRENCY" $svc.delivery.concurrency) (list "ERP_DELIVERY_POLL_INTERVAL_MS" $svc.delivery.pollIntervalMs) (list "ERP_DELIVERY_LEASE_MS" $svc.delivery.leaseMs) }}
{{- /* The webhook URL is configuration (the game's backend), not a secret; its signing secret is
       a secretKeyRef of the Deployment. */ -}}
{{- $strings = list (list "ERP_MONGODB_DATABASE" $root.Values.mongodb.eventDatabase) (list "ERP_DELIVERY_WEBHOOK_URL" $svc.delivery.webhookUrl) }}
{{- end }}
---
# Non-secret settings of {{ $component }} (environment variables, see the README "Configuration").
apiVersion: v1
kind: ConfigMap
metadata:
  name: {{ $fullname }}-{{ $component }}
  namespace: {{ $root.Release.Namespace }}
  labels:
    {{- include "erp.componentLabels" (dict "root" $root "component" $component) | nindent 4 }}
data:
  ERP_LOG_FORMAT: {{ $c.logFormat | quote }}
  RUST_LOG: {{ $c.rustLog | quote }}
  ERP_REDIS_KEY_PREFIX: {{ $c.redisKeyPrefix | quote }}
  ERP_SHUTDOWN_TIMEOUT_SECS: {{ int64 $c.shutdownTimeoutSecs | quote }}
  ERP_GRPC_TIMEOUT_MS: {{ int64 $c.grpcTimeoutMs | quote }}
  ERP_ADMIN_ADDR: {{ printf "0.0.0.0:%d" (int $svc.adminPort) | quote }}
  OTEL_SERVICE_NAME: {{ printf "erp-%s" $component | quote }}
  {{- with $c.otlpEndpoint }}
  OTEL_EXPORTER_OTLP_ENDPOINT: {{ . | quote }}
  {{- end }}
  {{- if eq $component "gateway" }}
  ERP_GATEWAY_ADDR: {{ printf "0.0.0.0:%d" (int $svc.port) | quote }}
  ERP_AUTH_URL: {{ printf "%s://%s-auth:%d" $scheme $fullname (int $root.Values.auth.port) | quote }}
  ERP_EVENT_URL: {{ printf "%s://%s-event:%d" $scheme $fullname (int $root.Values.event.port) | quote }}
  ERP_GRPC_CONNECT_TIMEOUT_MS: {{ int64 $c.grpcConnectTimeoutMs | quote }}
  ERP_COOKIE_SECURE: {{ ternary "true" "false" $svc.cookieSecure | quote }}
  ERP_TRUST_FORWARDED_FOR: {{ ternary "true" "false" $svc.trustForwardedFor | quote }}
  ERP_KUBERNETES_DISCOVERY: {{ ternary "true" "false" $svc.kubernetesDiscovery | quote }}
  ERP_AUTH_SERVICE_NAME: {{ printf "%s-auth" $fullname | quote }}
  ERP_EVENT_SERVICE_NAME: {{ printf "%s-event" $fullname | quote }}
  {{- end }}
  {{- if eq $component "auth" }}
  ERP_AUTH_ADDR: {{ printf "0.0.0.0:%d" (int $svc.port) | quote }}
  ERP_EVENT_URL: {{ printf "%s://%s-event:%d" $scheme $fullname (int $root.Values.event.port) | quote }}
  ERP_GRPC_CONNECT_TIMEOUT_MS: {{ int64 $c.grpcConnectTimeoutMs | quote }}
  ERP_KUBERNETES_DISCOVERY: {{ ternary "true" "false" $svc.kubernetesDiscovery | quote }}
  ERP_EVENT_SERVICE_NAME: {{ printf "%s-event" $fullname | quote }}
  {{- end }}
  {{- if eq $component "event" }}
  ERP_EVENT_ADDR: {{ printf "0.0.0.0:%d" (int $svc.port) | quote }}
  ERP_KUBERNETES_LEASE_NAME: {{ include "erp.leaseName" $root | quote }}
  {{- end }}
  {{- range $numbers }}
  {{- if not (kindIs "invalid" (index . 1)) }}
  {{ index . 0 }}: {{ int64 (index . 1) | quote }}
  {{- end }}
  {{- end }}
  {{- range $strings }}
  {{- if index . 1 }}
  {{ index . 0 }}: {{ index . 1 | quote }}
  {{- end }}
  {{- end }}
{{- end -}}

{{/* Checksum of the Secret values one component reads, as far as the chart knows them; call with
(dict "root" $ "component" "gateway"). Hashes the values behind the chart's Secrets (and the
names of existing Secrets), not the rendered Secrets: the generated service-identity key is kept
across upgrades (lookup) and must not roll the pods, and `helm template` cannot look it up. The
content of an existing Secret is outside the chart: roll the pods yourself when you change it
(`kubectl rollout restart`). */}}
{{- define "erp.secretChecksum" -}}
{{- $root := .root -}}
{{- $v := $root.Values -}}
{{- $component := .component -}}
{{- $inputs := dict -}}
{{- if $v.redis.existingSecret -}}
{{- $_ := set $inputs "redis" (list $v.redis.existingSecret $v.redis.existingSecretKey) -}}
{{- else -}}
{{- $_ := set $inputs "redis" (include "erp.redisUrl" $root) -}}
{{- end -}}
{{- $si := $v.serviceIdentity -}}
{{- $_ := set $inputs "serviceIdentity" (list $si.existingSecret $si.existingSecretKey $si.existingSecretAcceptKeys $si.key $si.acceptKeys) -}}
{{- if ne $component "gateway" -}}
{{- if $v.mongodb.existingSecret -}}
{{- $_ := set $inputs "mongodb" (list $v.mongodb.existingSecret $v.mongodb.existingSecretKey) -}}
{{- else -}}
{{- $_ := set $inputs "mongodb" (include "erp.mongodbUri" $root) -}}
{{- end -}}
{{- end -}}
{{- if eq $component "auth" -}}
{{- $_ := set $inputs "jwt" (list $v.jwt.privateKey $v.jwt.previousPublicKeys $v.jwt.existingSecret $v.jwt.existingSecretPrivateKeyKey $v.jwt.existingSecretPreviousPublicKeyKeys) -}}
{{- $_ := set $inputs "bootstrapAdmin" $v.bootstrapAdmin -}}
{{- end -}}
{{- if eq $component "event" -}}
{{- $d := $v.event.delivery -}}
{{- $_ := set $inputs "deliveryWebhook" (list $d.webhookSecret $d.existingSecret $d.existingSecretKey) -}}
{{- end -}}
{{- toJson $inputs | sha256sum -}}
{{- end -}}
