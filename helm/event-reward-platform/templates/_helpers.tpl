{{/*
Names: every object is `<fullname>-<component>`, fullname being the release name unless
fullnameOverride is set (so `kubectl port-forward svc/<release>-gateway 8080:8080` works).
*/}}
{{- define "erp.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "erp.fullname" -}}
{{- default .Release.Name .Values.fullnameOverride | trunc 40 | trimSuffix "-" -}}
{{- end -}}

{{- define "erp.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Labels every object carries. */}}
{{- define "erp.labels" -}}
helm.sh/chart: {{ include "erp.chart" . }}
app.kubernetes.io/name: {{ include "erp.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: event-reward-platform
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Selector labels of one component; call with (dict "root" $ "component" "gateway"). */}}
{{- define "erp.selectorLabels" -}}
app.kubernetes.io/name: {{ include "erp.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* All labels of one component's objects. */}}
{{- define "erp.componentLabels" -}}
{{ include "erp.labels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* The service name of one component's logs, metrics and traces: `erp-<component>`, the same as
its OTEL_SERVICE_NAME (independent of the release name, as the dashboards query it). */}}
{{- define "erp.serviceName" -}}
erp-{{ .component }}
{{- end -}}

{{/* Pod labels naming the service (call with (dict "root" $ "component" "gateway")). `service_name`
is the Loki label the dashboards' log panels select by: collectors that copy pod labels into
stream labels (Promtail's and Alloy's labelmap) get it as is, and Loki's own service-name
detection looks for it first. */}}
{{- define "erp.serviceNamePodLabels" -}}
service_name: {{ include "erp.serviceName" . }}
{{- end -}}

{{/* Pod annotations naming the service: the OpenTelemetry convention that Grafana Alloy's
Kubernetes modules, the Grafana k8s-monitoring chart and the collector's k8sattributes processor
read for `service.name` / `service_name` (infrastructure/loki/config.alloy does the same). */}}
{{- define "erp.serviceNamePodAnnotations" -}}
resource.opentelemetry.io/service.name: {{ include "erp.serviceName" . }}
{{- end -}}

{{/* ServiceAccount of one component; call with (dict "root" $ "component" "gateway"). Each
service has its own, so RBAC and mesh identities (Linkerd) tell them apart. */}}
{{- define "erp.serviceAccountName" -}}
{{- $sa := index .root.Values.serviceAccount .component -}}
{{- if .root.Values.serviceAccount.create -}}
{{- default (printf "%s-%s" (include "erp.fullname" .root) .component) $sa.name -}}
{{- else -}}
{{- default "default" $sa.name -}}
{{- end -}}
{{- end -}}

{{/* "true" when a component talks to the Kubernetes API (and so gets a token, a Role and API
egress): the gateway and auth with EndpointSlice discovery, event always (its leader Lease);
call with (dict "root" $ "component" "gateway"). */}}
{{- define "erp.usesKubernetesApi" -}}
{{- if eq .component "event" -}}true
{{- else if (index .root.Values .component).kubernetesDiscovery -}}true
{{- end -}}
{{- end -}}

{{/* The event service's leader-election Lease (ERP_KUBERNETES_LEASE_NAME). */}}
{{- define "erp.leaseName" -}}
{{- default (printf "%s-event-leader" (include "erp.fullname" .)) .Values.event.leaseName -}}
{{- end -}}

{{/* Service-identity key Secret (HMAC key of the caller assertions): existing or the chart's. */}}
{{- define "erp.serviceIdentitySecretName" -}}
{{- default (printf "%s-service-identity" (include "erp.fullname" .)) .Values.serviceIdentity.existingSecret -}}
{{- end -}}

{{- define "erp.serviceIdentitySecretKey" -}}
{{- if .Values.serviceIdentity.existingSecret -}}{{ .Values.serviceIdentity.existingSecretKey }}{{- else -}}key{{- end -}}
{{- end -}}

{{/* Secret keys of the further accepted identity keys, mounted as accept-<i>. */}}
{{- define "erp.serviceIdentityAcceptKeys" -}}
{{- if .Values.serviceIdentity.existingSecret -}}
{{- toJson .Values.serviceIdentity.existingSecretAcceptKeys -}}
{{- else -}}
{{- $keys := list -}}
{{- range $i, $_ := .Values.serviceIdentity.acceptKeys -}}{{- $keys = append $keys (printf "accept-%d" $i) -}}{{- end -}}
{{- toJson $keys -}}
{{- end -}}
{{- end -}}

{{/* The kubernetes.io/tls Secret of service-to-service TLS (grpcTls). */}}
{{- define "erp.grpcTlsSecretName" -}}
{{- default (printf "%s-grpc-tls" (include "erp.fullname" .)) .Values.grpcTls.secretName -}}
{{- end -}}

{{/* Scheme of the gRPC URLs the gateway and auth dial. */}}
{{- define "erp.grpcScheme" -}}
{{- ternary "https" "http" .Values.grpcTls.enabled -}}
{{- end -}}

{{/* Image of a service; call with (dict "root" $ "svc" .Values.gateway). By digest
(`<registry>/<repository>@sha256:...`) when <service>.image.digest is set, else by tag. */}}
{{- define "erp.image" -}}
{{- $repository := .svc.image.repository -}}
{{- if .root.Values.image.registry -}}
{{- $repository = printf "%s/%s" (trimSuffix "/" .root.Values.image.registry) .svc.image.repository -}}
{{- end -}}
{{- if .svc.image.digest -}}
{{- printf "%s@%s" $repository .svc.image.digest -}}
{{- else -}}
{{- $tag := default .root.Values.image.tag .svc.image.tag -}}
{{- if or (not $tag) (eq $tag "latest") -}}
{{- fail "image.tag (or <service>.image.tag) must be set, and not to `latest`" -}}
{{- end -}}
{{- printf "%s:%s" $repository $tag -}}
{{- end -}}
{{- end -}}

{{/* Store Secrets: the chart's own unless existingSecret is given. */}}
{{- define "erp.storesSecretName" -}}
{{- printf "%s-stores" (include "erp.fullname" .) -}}
{{- end -}}

{{- define "erp.mongodbSecretName" -}}
{{- default (include "erp.storesSecretName" .) .Values.mongodb.existingSecret -}}
{{- end -}}

{{- define "erp.mongodbSecretKey" -}}
{{- if .Values.mongodb.existingSecret -}}{{ .Values.mongodb.existingSecretKey }}{{- else -}}mongodb-uri{{- end -}}
{{- end -}}

{{- define "erp.redisSecretName" -}}
{{- default (include "erp.storesSecretName" .) .Values.redis.existingSecret -}}
{{- end -}}

{{- define "erp.redisSecretKey" -}}
{{- if .Values.redis.existingSecret -}}{{ .Values.redis.existingSecretKey }}{{- else -}}redis-url{{- end -}}
{{- end -}}

{{/* Whether the chart creates the stores Secret (some store is not from an existing Secret). */}}
{{- define "erp.createStoresSecret" -}}
{{- if or (not .Values.mongodb.existingSecret) (not .Values.redis.existingSecret) -}}true{{- end -}}
{{- end -}}

{{- define "erp.mongodbUri" -}}
{{- if .Values.mongodb.bundled.enabled -}}
{{- $name := printf "%s-mongodb" (include "erp.fullname" .) -}}
{{- printf "mongodb://%s-0.%s.%s.svc:27017/?replicaSet=%s" $name $name .Release.Namespace .Values.mongodb.bundled.replicaSetName -}}
{{- else if .Values.mongodb.uri -}}
{{- .Values.mongodb.uri -}}
{{- else -}}
{{- fail "MongoDB: set mongodb.existingSecret, mongodb.uri or mongodb.bundled.enabled" -}}
{{- end -}}
{{- end -}}

{{- define "erp.redisUrl" -}}
{{- if .Values.redis.bundled.enabled -}}
{{- printf "redis://%s-redis.%s.svc:6379" (include "erp.fullname" .) .Release.Namespace -}}
{{- else if .Values.redis.url -}}
{{- .Values.redis.url -}}
{{- else -}}
{{- fail "Redis: set redis.existingSecret, redis.url or redis.bundled.enabled" -}}
{{- end -}}
{{- end -}}

{{/* JWT key Secret: existing or the chart's; empty when auth generates its own key. */}}
{{- define "erp.jwtSecretName" -}}
{{- if .Values.jwt.existingSecret -}}
{{- .Values.jwt.existingSecret -}}
{{- else if .Values.jwt.privateKey -}}
{{- printf "%s-jwt" (include "erp.fullname" .) -}}
{{- end -}}
{{- end -}}

{{- define "erp.bootstrapSecretName" -}}
{{- if .Values.bootstrapAdmin.existingSecret -}}
{{- .Values.bootstrapAdmin.existingSecret -}}
{{- else if .Values.bootstrapAdmin.email -}}
{{- printf "%s-bootstrap-admin" (include "erp.fullname" .) -}}
{{- end -}}
{{- end -}}

{{/* The delivery webhook's signing-secret Secret (existing or the chart's); empty without a
webhook URL (no push, nothing to sign). */}}
{{- define "erp.deliveryWebhookSecretName" -}}
{{- $d := .Values.event.delivery -}}
{{- if $d.webhookUrl -}}
{{- default (printf "%s-delivery-webhook" (include "erp.fullname" .)) $d.existingSecret -}}
{{- end -}}
{{- end -}}

{{- define "erp.deliveryWebhookSecretKey" -}}
{{- if .Values.event.delivery.existingSecret -}}{{ .Values.event.delivery.existingSecretKey }}{{- else -}}webhook-secret{{- end -}}
{{- end -}}

{{/* Ports of event's egress to the delivery webhook (a JSON list): networkPolicy.deliveryWebhook.ports,
else the URL's own port, else the scheme's (443 https, 80 http). */}}
{{- define "erp.deliveryWebhookPorts" -}}
{{- $ports := .Values.networkPolicy.deliveryWebhook.ports -}}
{{- if not $ports -}}
{{- $url := urlParse .Values.event.delivery.webhookUrl -}}
{{- $explicit := regexFind ":[0-9]+$" $url.host | trimPrefix ":" -}}
{{- if $explicit -}}
{{- $ports = list (atoi $explicit) -}}
{{- else -}}
{{- $ports = list (ternary 443 80 (eq $url.scheme "https")) -}}
{{- end -}}
{{- end -}}
{{- toJson $ports -}}
{{- end -}}

{{/* Checks across values that the JSON schema cannot express. */}}
{{- define "erp.validate" -}}
{{- $grace := int .Values.terminationGracePeriodSeconds -}}
{{- $needed := add (int .Values.config.shutdownTimeoutSecs) (int .Values.config.preStopSleepSeconds) -}}
{{- if le $grace (int $needed) -}}
{{- fail (printf "terminationGracePeriodSeconds (%d) must exceed config.shutdownTimeoutSecs + config.preStopSleepSeconds (%d)" $grace (int $needed)) -}}
{{- end -}}
{{- range $component := list "gateway" "auth" "event" -}}
{{- $a := (index $.Values $component).autoscaling -}}
{{- if and $a.enabled (gt (int $a.minReplicas) (int $a.maxReplicas)) -}}
{{- fail (printf "%s.autoscaling.minReplicas (%d) exceeds maxReplicas (%d)" $component (int $a.minReplicas) (int $a.maxReplicas)) -}}
{{- end -}}
{{- end -}}
{{- if and (or (gt (int .Values.auth.replicaCount) 1) .Values.auth.autoscaling.enabled) (not (include "erp.jwtSecretName" .)) -}}
{{- fail "more than one auth replica needs one shared signing key: set jwt.privateKey or jwt.existingSecret" -}}
{{- end -}}
{{- if and .Values.bootstrapAdmin.email (not .Values.bootstrapAdmin.existingSecret) (not .Values.bootstrapAdmin.password) -}}
{{- fail "bootstrapAdmin.email is set but bootstrapAdmin.password is empty" -}}
{{- end -}}
{{- if and .Values.grpcTls.enabled (not .Values.grpcTls.secretName) (not .Values.grpcTls.certManager.issuerRef) -}}
{{- fail "grpcTls.enabled needs grpcTls.secretName (an existing kubernetes.io/tls Secret with tls.crt, tls.key and ca.crt) or grpcTls.certManager.issuerRef (the chart then requests one from cert-manager)" -}}
{{- end -}}
{{- if .Values.mesh.linkerd.enabled -}}
{{- $names := dict -}}
{{- range $component := list "gateway" "auth" "event" -}}
{{- $_ := set $names (include "erp.serviceAccountName" (dict "root" $ "component" $component)) $component -}}
{{- end -}}
{{- if lt (len $names) 3 -}}
{{- fail "mesh.linkerd.enabled: gateway, auth and event need distinct ServiceAccounts (Linkerd authorizes callers by ServiceAccount): set serviceAccount.create or distinct serviceAccount.<service>.name" -}}
{{- end -}}
{{- end -}}
{{- $d := .Values.event.delivery -}}
{{- if and $d.webhookUrl (not $d.webhookSecret) (not $d.existingSecret) -}}
{{- fail "event.delivery.webhookUrl is set but neither event.delivery.webhookSecret nor event.delivery.existingSecret: the pushes must be signed" -}}
{{- end -}}
{{- /* The service's defaults stand in for unset values (null), as the service checks the same. */ -}}
{{- $timeout := ternary 5000 $d.timeoutMs (kindIs "invalid" $d.timeoutMs) | int64 -}}
{{- $lease := ternary 30000 $d.leaseMs (kindIs "invalid" $d.leaseMs) | int64 -}}
{{- if le $lease $timeout -}}
{{- fail (printf "event.delivery.leaseMs (%d) must exceed event.delivery.timeoutMs (%d): a push must end before another replica may take the delivery over" $lease $timeout) -}}
{{- end -}}
{{- $base := ternary 1000 $d.backoffBaseMs (kindIs "invalid" $d.backoffBaseMs) | int64 -}}
{{- $max := ternary 300000 $d.backoffMaxMs (kindIs "invalid" $d.backoffMaxMs) | int64 -}}
{{- if lt $max $base -}}
{{- fail (printf "event.delivery.backoffMaxMs (%d) must be at least event.delivery.backoffBaseMs (%d)" $max $base) -}}
{{- end -}}
{{- if not .Values.mongodb.existingSecret -}}{{- $_ := include "erp.mongodbUri" . -}}{{- end -}}
{{- if not .Values.redis.existingSecret -}}{{- $_ := include "erp.redisUrl" . -}}{{- end -}}
{{- end -}}

{{/* The Pod security context of the services. */}}
{{- define "erp.podSecurityContext" -}}
{{- toYaml .Values.podSecurityContext -}}
{{- end -}}
