{{/* Chart name, or nameOverride. */}}
{{- define "invoice-app.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name of the release's objects: the release name when it already holds the chart name. */}}
{{- define "invoice-app.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "invoice-app.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "invoice-app.labels" -}}
helm.sh/chart: {{ include "invoice-app.chart" . }}
app.kubernetes.io/name: {{ include "invoice-app.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: invoice-platform
{{- end }}

{{/* Labels of the serving pods; the Service and the PDB select on them. */}}
{{- define "invoice-app.selectorLabels" -}}
{{ include "invoice-app.podSelectorLabels" . }}
app.kubernetes.io/component: server
{{- end }}

{{/* Labels of every pod of the release (serving pods and the CronJobs' runs): the NetworkPolicy and
     payment-provider's allowed callers select on them. */}}
{{- define "invoice-app.podSelectorLabels" -}}
app.kubernetes.io/name: {{ include "invoice-app.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* Pods labelled this way (in the release namespace) may call the API: the helm test pod. */}}
{{- define "invoice-app.clientLabel" -}}
{{ include "invoice-app.fullname" . }}-client: "true"
{{- end }}

{{- define "invoice-app.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "invoice-app.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "invoice-app.image" -}}
{{- $tag := .Values.image.tag | default .Chart.AppVersion }}
{{- if .Values.image.digest }}
{{- printf "%s:%s@%s" .Values.image.repository $tag .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository $tag }}
{{- end }}
{{- end }}

{{/* "postgres" when a PostgreSQL URL is configured, else "sqlite". */}}
{{- define "invoice-app.databaseKind" -}}
{{- if or .Values.database.existingSecret.name .Values.database.url }}postgres{{ else }}sqlite{{ end }}
{{- end }}

{{/* The API paths routed from outside; health, metrics and /openapi.json stay in the cluster. */}}
{{- define "invoice-app.apiPaths" -}}
["/invoices", "/pay-runs"]
{{- end }}

{{/* "true" when the API accepts OAuth2/OIDC tokens or API keys. */}}
{{- define "invoice-app.apiCredentials" -}}
{{- with .Values.apiAuth }}{{ if or .issuer .apiKeys .existingSecret.name }}true{{ end }}{{ end }}
{{- end }}

{{/* "true" in demo mode with no API credentials: the API takes demoApiKey, whose SHA-256
     the chart configures. Never the app's well-known dev key: the binary accepts that on a
     loopback address only, and refuses its digest in API_KEYS anywhere. */}}
{{- define "invoice-app.demoApiKey" -}}
{{- if and .Values.demo (not (include "invoice-app.apiCredentials" .)) }}true{{ end }}
{{- end }}

{{/* The inline payment-provider token, paymentProvider.token. Never payment-provider's
     well-known dev token, demo or not: the provider refuses it off loopback. */}}
{{- define "invoice-app.providerToken" -}}
{{- .Values.paymentProvider.token }}
{{- end }}

{{/* "true" when a static payment-provider token is configured. */}}
{{- define "invoice-app.staticToken" -}}
{{- if or .Values.paymentProvider.existingSecret.name (include "invoice-app.providerToken" .) }}true{{ end }}
{{- end }}

{{/* API_KEYS_FILE content of the chart's Secret: the listed keys, or in demo mode the
     SHA-256 of demoApiKey (every scope). */}}
{{- define "invoice-app.apiKeysJson" -}}
{{- if .Values.apiAuth.apiKeys }}
{{- toJson .Values.apiAuth.apiKeys }}
{{- else if and (include "invoice-app.demoApiKey" .) .Values.demoApiKey }}
{{- toJson (list (dict "client" "demo" "scopes" (list "invoices:read" "invoices:write" "invoices:pay") "sha256" (sha256sum .Values.demoApiKey))) }}
{{- end }}
{{- end }}

{{/* Refuse values that cannot work or that would fail open. SQLite is one file on one
     volume: a single pod, and the CronJobs' runs need that volume. The API needs credentials
     (or an explicit demo), a way in needs a host, and every NetworkPolicy peer the app
     depends on must be named. A claim must outlive the work done under it (the app checks
     the same at start-up). */}}
{{- define "invoice-app.validate" -}}
{{- if eq (include "invoice-app.databaseKind" .) "sqlite" }}
{{- if gt (int .Values.replicaCount) 1 }}
{{- fail "SQLite allows one replica only: set database.existingSecret (PostgreSQL) or replicaCount: 1" }}
{{- end }}
{{- if .Values.autoscaling.enabled }}
{{- fail "SQLite allows one replica only: set database.existingSecret (PostgreSQL) or autoscaling.enabled: false" }}
{{- end }}
{{- if not .Values.database.sqlite.persistence.enabled }}
{{- range include "invoice-app.cronJobs" . | fromJsonArray }}
{{- fail (printf "the %s CronJob needs the app's database: use PostgreSQL, database.sqlite.persistence.enabled, or %s.cronJob.enabled: false" .component .values) }}
{{- end }}
{{- end }}
{{- end }}
{{- if not (or (include "invoice-app.apiCredentials" .) .Values.demo) }}
{{- fail "invoice-app's API has no credentials configured: set apiAuth.issuer and apiAuth.audience (OAuth2/OIDC bearer tokens), or apiAuth.existingSecret / apiAuth.apiKeys (API keys); demo: true with demoApiKey takes a key of your choosing instead" }}
{{- end }}
{{- if and (include "invoice-app.demoApiKey" .) (not .Values.demoApiKey) }}
{{- fail "demo: true needs demoApiKey when apiAuth is empty: a key of your choosing, at least 16 characters (e.g. --set demoApiKey=$(openssl rand -hex 24)); the chart keeps its SHA-256 alone. The app's well-known dev key works on loopback only, never in a pod" }}
{{- end }}
{{- if and .Values.demoApiKey (not (include "invoice-app.demoApiKey" .)) }}
{{- fail "demoApiKey takes effect only with demo: true and an empty apiAuth; otherwise give keys as apiAuth.apiKeys (digests) or apiAuth.existingSecret" }}
{{- end }}
{{- if and .Values.apiAuth.issuer (not .Values.apiAuth.audience) }}
{{- fail "apiAuth.issuer needs apiAuth.audience: the audience its tokens must carry" }}
{{- end }}
{{- if and .Values.apiAuth.apiKeys .Values.apiAuth.existingSecret.name }}
{{- fail "set apiAuth.apiKeys or apiAuth.existingSecret, not both" }}
{{- end }}
{{- if .Values.paymentProvider.serviceAccountToken.enabled }}
{{- if include "invoice-app.staticToken" . }}
{{- fail "paymentProvider: a static token (token or existingSecret) needs serviceAccountToken.enabled: false; the app presents one credential" }}
{{- end }}
{{- else if not (include "invoice-app.staticToken" .) }}
{{- fail "invoice-app has no credential for payment-provider: keep paymentProvider.serviceAccountToken.enabled, or set paymentProvider.existingSecret / paymentProvider.token (in a demo too: payment-provider refuses its well-known dev token off loopback; give both charts a token of your choosing)" }}
{{- end }}
{{- with .Values.paymentProvider }}
{{- if hasPrefix "https://" .url }}
{{- if not (or .caBundle.configMap .caBundle.secret) }}
{{- fail "paymentProvider.url is https://: set paymentProvider.caBundle.configMap or .secret, the CA that signs payment-provider's certificate (in-cluster names have no publicly trusted certificates)" }}
{{- end }}
{{- if .allowPlaintextHttp }}
{{- fail "paymentProvider.allowPlaintextHttp has no effect with an https:// url (invoice-app refuses to start with it)" }}
{{- end }}
{{- else }}
{{- if not (or .allowPlaintextHttp (regexMatch `^http://(localhost|127\.[0-9.]+|\[::1\])(:[0-9]+)?(/.*)?$` .url)) }}
{{- fail "paymentProvider.url is plain http: the token would cross the network in clear; use https:// with paymentProvider.caBundle, or paymentProvider.allowPlaintextHttp: true where something else encrypts the traffic (payment-provider's tls.enabled: false)" }}
{{- end }}
{{- if or .caBundle.configMap .caBundle.secret }}
{{- fail "paymentProvider.caBundle has no effect with an http:// url (invoice-app refuses to start with it)" }}
{{- end }}
{{- end }}
{{- if and .caBundle.configMap .caBundle.secret }}
{{- fail "paymentProvider.caBundle: set configMap or secret, not both" }}
{{- end }}
{{- end }}
{{- if and .Values.ingress.enabled (not .Values.ingress.host) }}
{{- fail "ingress.host is required: the chart never renders a catch-all Ingress" }}
{{- end }}
{{- if and .Values.httpRoute.enabled (not .Values.httpRoute.hostnames) }}
{{- fail "httpRoute.hostnames is required: the chart never renders a catch-all HTTPRoute" }}
{{- end }}
{{- if .Values.networkPolicy.enabled }}
{{- if and .Values.httpRoute.enabled (not .Values.networkPolicy.gatewayProxies) }}
{{- fail "httpRoute.enabled needs networkPolicy.gatewayProxies: the Gateway's proxy pods" }}
{{- end }}
{{- if and .Values.ingress.enabled (not .Values.networkPolicy.ingressControllers) }}
{{- fail "ingress.enabled needs networkPolicy.ingressControllers: the ingress controller's pods" }}
{{- end }}
{{- if and .Values.apiAuth.issuer (not .Values.networkPolicy.identityProvider.to) }}
{{- fail "apiAuth.issuer needs networkPolicy.identityProvider.to: the app fetches the issuer's keys" }}
{{- end }}
{{- if and .Values.serviceMonitor.enabled (not .Values.networkPolicy.prometheus) }}
{{- fail "serviceMonitor.enabled needs networkPolicy.prometheus: the pods Prometheus scrapes from" }}
{{- end }}
{{- end }}
{{- with .Values.config }}
{{- if lt (mul (int .claimLeaseSecs) 1000) (add (mul (int .retryMaxElapsedSecs) 1000) (mul (int .chargeTimeoutMs) 2)) }}
{{- fail "config.claimLeaseSecs must cover config.retryMaxElapsedSecs plus two config.chargeTimeoutMs (invoice-app refuses to start otherwise)" }}
{{- end }}
{{- end }}
{{- end }}

{{/* The chart's own Secret exists only when a secret value is given inline. */}}
{{- define "invoice-app.chartSecretKeys" -}}
{{- if and (include "invoice-app.providerToken" .) (not .Values.paymentProvider.existingSecret.name) }}payment-provider-token {{ end }}
{{- if include "invoice-app.apiKeysJson" . }}api-keys {{ end }}
{{- if and .Values.database.url (not .Values.database.existingSecret.name) }}database-url {{ end }}
{{- end }}

{{/* Where the secret files are mounted; the app reads them through *_FILE variables. */}}
{{- define "invoice-app.secretsDir" -}}
/var/run/secrets/invoice-platform
{{- end }}

{{/* The credential presented to payment-provider, as one projected source (file
     payment-provider-token).
     The helm test that calls payment-provider presents the same. */}}
{{- define "invoice-app.providerCredentialSource" -}}
{{- $sat := .Values.paymentProvider.serviceAccountToken }}
{{- if $sat.enabled }}
# payment-provider knows the caller by this token: the pods' ServiceAccount, short-lived,
# renewed by the kubelet (the app re-reads the file).
- serviceAccountToken:
    audience: {{ $sat.audience }}
    expirationSeconds: {{ $sat.expirationSeconds }}
    path: payment-provider-token
{{- else if .Values.paymentProvider.existingSecret.name }}
- secret:
    name: {{ .Values.paymentProvider.existingSecret.name }}
    items:
      - key: {{ .Values.paymentProvider.existingSecret.key }}
        path: payment-provider-token
{{- else if include "invoice-app.providerToken" . }}
- secret:
    name: {{ include "invoice-app.fullname" . }}
    items:
      - key: payment-provider-token
        path: payment-provider-token
{{- end }}
{{- end }}

{{/* The CAs trusted for payment-provider's certificate, as one projected source (file
     payment-provider-ca.crt). The helm test that calls payment-provider trusts the same. */}}
{{- define "invoice-app.providerCaSource" -}}
{{- with .Values.paymentProvider.caBundle }}
{{- if .configMap }}
- configMap:
    name: {{ .configMap }}
    items:
      - key: {{ .key }}
        path: payment-provider-ca.crt
{{- else if .secret }}
- secret:
    name: {{ .secret }}
    items:
      - key: {{ .key }}
        path: payment-provider-ca.crt
{{- end }}
{{- end }}
{{- end }}

{{/* What the helm test that calls payment-provider mounts: the app's credential and CAs. */}}
{{- define "invoice-app.providerTestSources" -}}
{{- include "invoice-app.providerCredentialSource" . }}
{{- include "invoice-app.providerCaSource" . }}
{{- end }}

{{/* Sources of the projected secrets volume: each yields one file. */}}
{{- define "invoice-app.secretSources" -}}
{{- $fullname := include "invoice-app.fullname" . }}
{{- include "invoice-app.providerCredentialSource" . }}
{{- include "invoice-app.providerCaSource" . }}
{{- with .Values.database.existingSecret.name }}
- secret:
    name: {{ . }}
    items:
      - key: {{ $.Values.database.existingSecret.key }}
        path: database-url
{{- else }}
{{- if .Values.database.url }}
- secret:
    name: {{ $fullname }}
    items:
      - key: database-url
        path: database-url
{{- end }}
{{- end }}
{{- with .Values.apiAuth.existingSecret.name }}
- secret:
    name: {{ . }}
    items:
      - key: {{ $.Values.apiAuth.existingSecret.key }}
        path: api-keys
{{- else }}
{{- if include "invoice-app.apiKeysJson" . }}
- secret:
    name: {{ $fullname }}
    items:
      - key: api-keys
        path: api-keys
{{- end }}
{{- end }}
{{- end }}

{{/* Environment pointing the app at the secret files. */}}
{{- define "invoice-app.secretEnv" -}}
{{- if or .Values.paymentProvider.serviceAccountToken.enabled (include "invoice-app.staticToken" .) }}
- name: PAYMENT_PROVIDER_TOKEN_FILE
  value: {{ include "invoice-app.secretsDir" . }}/payment-provider-token
{{- end }}
{{- if include "invoice-app.providerCaSource" . | trim }}
- name: PAYMENT_PROVIDER_CA_FILE
  value: {{ include "invoice-app.secretsDir" . }}/payment-provider-ca.crt
{{- end }}
{{- if eq (include "invoice-app.databaseKind" .) "postgres" }}
- name: DATABASE_URL_FILE
  value: {{ include "invoice-app.secretsDir" . }}/database-url
{{- end }}
{{- if or .Values.apiAuth.existingSecret.name (include "invoice-app.apiKeysJson" .) }}
- name: API_KEYS_FILE
  value: {{ include "invoice-app.secretsDir" . }}/api-keys
{{- end }}
{{- end }}

{{/* Pod-level settings shared by the Deployment and the CronJobs. */}}
{{- define "invoice-app.podCommon" -}}
serviceAccountName: {{ include "invoice-app.serviceAccountName" . }}
automountServiceAccountToken: false
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
securityContext:
  {{- toYaml .Values.podSecurityContext | nindent 2 }}
{{- with .Values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/* Container settings shared by the Deployment and the CronJobs. */}}
{{- define "invoice-app.containerCommon" -}}
image: {{ include "invoice-app.image" . }}
imagePullPolicy: {{ .Values.image.pullPolicy }}
envFrom:
  - configMapRef:
      name: {{ include "invoice-app.fullname" . }}
securityContext:
  {{- toYaml .Values.securityContext | nindent 2 }}
resources:
  {{- toYaml .Values.resources | nindent 2 }}
volumeMounts:
  # The root filesystem is read-only; /tmp is the one scratch space.
  - name: tmp
    mountPath: /tmp
  {{- if eq (include "invoice-app.databaseKind" .) "sqlite" }}
  - name: data
    mountPath: /data
  {{- end }}
  {{- if include "invoice-app.secretSources" . | trim }}
  - name: secrets
    mountPath: {{ include "invoice-app.secretsDir" . }}
    readOnly: true
  {{- end }}
{{- end }}

{{/* Volumes shared by the Deployment and the CronJobs. */}}
{{- define "invoice-app.volumes" -}}
- name: tmp
  emptyDir:
    sizeLimit: 64Mi
{{- if eq (include "invoice-app.databaseKind" .) "sqlite" }}
- name: data
  {{- $p := .Values.database.sqlite.persistence }}
  {{- if $p.enabled }}
  persistentVolumeClaim:
    claimName: {{ $p.existingClaim | default (printf "%s-data" (include "invoice-app.fullname" .)) }}
  {{- else }}
  emptyDir:
    sizeLimit: 1Gi
  {{- end }}
{{- end }}
{{- with include "invoice-app.secretSources" . | trim }}
# Secrets as files, read through the *_FILE variables: never in the environment.
- name: secrets
  projected:
    defaultMode: 0440
    sources:
      {{- . | nindent 6 }}
{{- end }}
{{- end }}

{{/* topologySpreadConstraints from values, each selecting this release's serving pods. */}}
{{- define "invoice-app.topologySpread" -}}
{{- range .Values.topologySpreadConstraints }}
- maxSkew: {{ .maxSkew }}
  topologyKey: {{ .topologyKey }}
  whenUnsatisfiable: {{ .whenUnsatisfiable }}
  labelSelector:
    matchLabels:
      {{- include "invoice-app.selectorLabels" $ | nindent 6 }}
  matchLabelKeys:
    - pod-template-hash
{{- end }}
{{- end }}

{{/* A NetworkPolicy peer from {namespace, podLabels}: pods with those labels in that namespace. */}}
{{- define "invoice-app.peer" -}}
- namespaceSelector:
    matchLabels:
      kubernetes.io/metadata.name: {{ .namespace }}
  {{- with .podLabels }}
  podSelector:
    matchLabels:
      {{- toYaml . | nindent 6 }}
  {{- end }}
{{- end }}

{{/* Egress of the serving pods and the CronJobs' runs: DNS, payment-provider, its database,
     the identity provider's keys. */}}
{{- define "invoice-app.egressRules" -}}
{{- $np := .Values.networkPolicy -}}
# Name resolution through the cluster DNS.
- to:
    {{- include "invoice-app.peer" $np.dns | nindent 4 }}
  ports:
    - protocol: UDP
      port: 53
    - protocol: TCP
      port: 53
# payment-provider's pods, on its port only.
- to:
    {{- include "invoice-app.peer" $np.paymentProvider | nindent 4 }}
  ports:
    - protocol: TCP
      port: {{ $np.paymentProvider.port }}
{{- if eq (include "invoice-app.databaseKind" .) "postgres" }}
# Its own PostgreSQL, nothing else.
- to:
    {{- include "invoice-app.peer" (dict "namespace" ($np.database.namespace | default .Release.Namespace) "podLabels" $np.database.podLabels) | nindent 4 }}
  ports:
    - protocol: TCP
      port: {{ $np.database.port }}
{{- end }}
{{- if and .Values.apiAuth.issuer $np.identityProvider.to }}
# The identity provider, for the keys of the API's bearer tokens.
- to:
    {{- toYaml $np.identityProvider.to | nindent 4 }}
  ports:
    {{- range $np.identityProvider.ports }}
    - protocol: TCP
      port: {{ . }}
    {{- end }}
{{- end }}
{{- with $np.extraEgress }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* The enabled CronJobs, as a JSON list: each runs `invoice-app <command>` in pods labelled
     with its component, with the settings of `<values>.cronJob`. The CronJobs, their
     NetworkPolicies, NOTES and the SQLite check range over it, so a run is one entry. */}}
{{- define "invoice-app.cronJobs" -}}
{{- $jobs := list }}
{{- if .Values.payRun.cronJob.enabled }}
{{- $jobs = append $jobs (dict "component" "pay-run" "command" "pay" "values" "payRun" "cronJob" .Values.payRun.cronJob
  "about" "The monthly pay run: `invoice-app pay` pays the pending invoices (and the past-due ones whose retry is due) and exits (0 done, 1 error).") }}
{{- end }}
{{- if .Values.dailyRun.cronJob.enabled }}
{{- $jobs = append $jobs (dict "component" "daily-run" "command" "daily" "values" "dailyRun" "cronJob" .Values.dailyRun.cronJob
  "about" "The daily run: `invoice-app daily` retries the past-due invoices whose retry is due (pending ones wait for the monthly run) and exits (0 done, non-zero error).") }}
{{- end }}
{{- toJson $jobs }}
{{- end }}
