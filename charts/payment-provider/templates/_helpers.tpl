{{/* Chart name, or nameOverride. */}}
{{- define "payment-provider.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name of the release's objects: the release name when it already holds the chart name. */}}
{{- define "payment-provider.fullname" -}}
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

{{- define "payment-provider.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "payment-provider.labels" -}}
helm.sh/chart: {{ include "payment-provider.chart" . }}
app.kubernetes.io/name: {{ include "payment-provider.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: invoice-platform
{{- end }}

{{/* Labels of the serving pods; the Service and the PDB select on them. */}}
{{- define "payment-provider.selectorLabels" -}}
app.kubernetes.io/name: {{ include "payment-provider.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: server
{{- end }}

{{/* Pods labelled this way (in the release namespace) may call the API: the helm test pod. */}}
{{- define "payment-provider.clientLabel" -}}
{{ include "payment-provider.fullname" . }}-client: "true"
{{- end }}

{{- define "payment-provider.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "payment-provider.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "payment-provider.image" -}}
{{- $tag := .Values.image.tag | default .Chart.AppVersion }}
{{- if .Values.image.digest }}
{{- printf "%s:%s@%s" .Values.image.repository $tag .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository $tag }}
{{- end }}
{{- end }}

{{/* "postgres" when a PostgreSQL URL is configured, else "sqlite". */}}
{{- define "payment-provider.databaseKind" -}}
{{- if or .Values.database.existingSecret.name .Values.database.url }}postgres{{ else }}sqlite{{ end }}
{{- end }}

{{/* "true" when callers are known by workload identity (projected ServiceAccount tokens). */}}
{{- define "payment-provider.workloadIdentity" -}}
{{- if and .Values.auth.workloadIdentity.enabled .Values.auth.workloadIdentity.callers }}true{{ end }}
{{- end }}

{{/* "true" when static caller tokens are configured (inline or from a Secret you manage). */}}
{{- define "payment-provider.staticTokens" -}}
{{- if or .Values.auth.existingSecret.name .Values.auth.callerTokens }}true{{ end }}
{{- end }}


{{/* The kubernetes.io/tls Secret the API's certificate and key come from. */}}
{{- define "payment-provider.tlsSecretName" -}}
{{- .Values.tls.secretName | default (printf "%s-tls" (include "payment-provider.fullname" .)) }}
{{- end }}

{{/* "https" when the API is served over TLS, else "http". */}}
{{- define "payment-provider.scheme" -}}
{{- if .Values.tls.enabled }}https{{ else }}http{{ end }}
{{- end }}

{{/* The helm test pods' curl options for the API's TLS: the CA from the Secret's ca.crt when
     it has one (cert-manager's CA issuers write it), otherwise the handshake unverified (said
     in the output): these tests prove TLS and the auth answers; invoice-app's helm test
     proves the trust chain with the CA bundle the app itself trusts. */}}
{{- define "payment-provider.testTlsVolume" -}}
{{- if .Values.tls.enabled }}
- name: tls-ca
  secret:
    secretName: {{ include "payment-provider.tlsSecretName" . }}
    optional: true
    items:
      - key: ca.crt
        path: ca.crt
{{- end }}
{{- end }}

{{- define "payment-provider.testTlsScript" -}}
tls=""
if [ -s /var/run/tls-ca/ca.crt ]; then
  tls="--cacert /var/run/tls-ca/ca.crt"
elif [ "${URL#https:}" != "$URL" ]; then
  echo "note: Secret {{ include "payment-provider.tlsSecretName" . }} holds no ca.crt: the certificate is not verified here"
  tls="--insecure"
fi
{{- end }}

{{/* CALLER_SUBJECTS: caller=system:serviceaccount:<ns>:<sa>[,...] */}}
{{- define "payment-provider.callerSubjects" -}}
{{- $pairs := list }}
{{- range .Values.auth.workloadIdentity.callers }}
{{- $pairs = append $pairs (printf "%s=%s" .caller .subject) }}
{{- end }}
{{- join "," $pairs }}
{{- end }}

{{/* Refuse values that cannot work or that would fail open. SQLite is one file on one
     volume: a single pod. Without a configured caller the app would fall back to its
     well-known dev token, which it refuses off loopback (and a pod listens on 0.0.0.0):
     demo or not, callers are named. */}}
{{- define "payment-provider.validate" -}}
{{- if eq (include "payment-provider.databaseKind" .) "sqlite" }}
{{- if gt (int .Values.replicaCount) 1 }}
{{- fail "SQLite allows one replica only: set database.existingSecret (PostgreSQL) or replicaCount: 1" }}
{{- end }}
{{- if .Values.autoscaling.enabled }}
{{- fail "SQLite allows one replica only: set database.existingSecret (PostgreSQL) or autoscaling.enabled: false" }}
{{- end }}
{{- end }}
{{- if not (or (include "payment-provider.workloadIdentity" .) (include "payment-provider.staticTokens" .)) }}
{{- fail "payment-provider has no caller configured: set auth.workloadIdentity.callers (ServiceAccounts), auth.existingSecret or auth.callerTokens (static tokens); in a demo too, e.g. auth.callerTokens=invoice-app:<a token of your choosing> and the same token as invoice-app's paymentProvider.token (the well-known dev token is refused off loopback)" }}
{{- end }}
{{- if .Values.networkPolicy.enabled }}
{{- if and (include "payment-provider.workloadIdentity" .) (not .Values.networkPolicy.apiServer.cidrs) }}
{{- fail "workload identity fetches the issuer's keys from the API server: set networkPolicy.apiServer.cidrs (the kubernetes Service IP and its endpoints), or auth.workloadIdentity.enabled: false" }}
{{- end }}
{{- if and .Values.serviceMonitor.enabled (not .Values.networkPolicy.prometheus) }}
{{- fail "serviceMonitor.enabled needs networkPolicy.prometheus: the pods Prometheus scrapes from" }}
{{- end }}
{{- end }}
{{- if .Values.tls.enabled }}
{{- if not (or .Values.tls.secretName .Values.tls.certManager.enabled) }}
{{- fail "tls.enabled needs a certificate: set tls.secretName (a kubernetes.io/tls Secret for the Service's names) or tls.certManager.enabled with tls.certManager.issuerRef; tls.enabled: false serves plain HTTP, only where something else encrypts the traffic" }}
{{- end }}
{{- if and .Values.tls.certManager.enabled (not .Values.tls.certManager.issuerRef.name) }}
{{- fail "tls.certManager.enabled needs tls.certManager.issuerRef.name: the cert-manager issuer that signs the certificate" }}
{{- end }}
{{- else if .Values.tls.certManager.enabled }}
{{- fail "tls.certManager.enabled needs tls.enabled: the certificate would not be served" }}
{{- end }}
{{- end }}

{{/* The chart's own Secret exists only when a secret value is given inline. */}}
{{- define "payment-provider.chartSecretKeys" -}}
{{- if and .Values.auth.callerTokens (not .Values.auth.existingSecret.name) }}caller-tokens {{ end }}
{{- if and .Values.database.url (not .Values.database.existingSecret.name) }}database-url {{ end }}
{{- end }}

{{/* Where the secret files (and projected tokens) are mounted; the app reads them through
     *_FILE variables. */}}
{{- define "payment-provider.secretsDir" -}}
/var/run/secrets/invoice-platform
{{- end }}

{{/* Sources of the projected secrets volume: each yields one file. */}}
{{- define "payment-provider.secretSources" -}}
{{- $fullname := include "payment-provider.fullname" . }}
{{- with .Values.auth.existingSecret.name }}
- secret:
    name: {{ . }}
    items:
      - key: {{ $.Values.auth.existingSecret.key }}
        path: caller-tokens
{{- else }}
{{- if .Values.auth.callerTokens }}
- secret:
    name: {{ $fullname }}
    items:
      - key: caller-tokens
        path: caller-tokens
{{- end }}
{{- end }}
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
{{- if .Values.tls.enabled }}
# The API's certificate and key; a renewed Secret reaches the files in place, and the app
# serves it within seconds.
- secret:
    name: {{ include "payment-provider.tlsSecretName" . }}
    items:
      - key: tls.crt
        path: tls.crt
      - key: tls.key
        path: tls.key
{{- end }}
{{- if and (include "payment-provider.workloadIdentity" .) .Values.auth.workloadIdentity.jwksFromApiServer }}
# The API server serves the issuer's keys to any ServiceAccount (ClusterRoleBinding
# system:service-account-issuer-discovery): a short-lived token of the pod's own, and the
# cluster CA to check the server.
- serviceAccountToken:
    expirationSeconds: 3600
    path: kube-api-token
- configMap:
    name: kube-root-ca.crt
    items:
      - key: ca.crt
        path: kube-ca.crt
{{- end }}
{{- end }}

{{/* Environment pointing the app at the secret files. */}}
{{- define "payment-provider.secretEnv" -}}
{{- if include "payment-provider.staticTokens" . }}
- name: CALLER_TOKENS_FILE
  value: {{ include "payment-provider.secretsDir" . }}/caller-tokens
{{- end }}
{{- if eq (include "payment-provider.databaseKind" .) "postgres" }}
- name: DATABASE_URL_FILE
  value: {{ include "payment-provider.secretsDir" . }}/database-url
{{- end }}
{{- end }}

{{/* Pod-level settings of the app pods (same shape as invoice-app's). */}}
{{- define "payment-provider.podCommon" -}}
serviceAccountName: {{ include "payment-provider.serviceAccountName" . }}
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

{{/* Container settings of the app container. */}}
{{- define "payment-provider.containerCommon" -}}
image: {{ include "payment-provider.image" . }}
imagePullPolicy: {{ .Values.image.pullPolicy }}
envFrom:
  - configMapRef:
      name: {{ include "payment-provider.fullname" . }}
securityContext:
  {{- toYaml .Values.securityContext | nindent 2 }}
resources:
  {{- toYaml .Values.resources | nindent 2 }}
volumeMounts:
  # The root filesystem is read-only; /tmp is the one scratch space.
  - name: tmp
    mountPath: /tmp
  {{- if eq (include "payment-provider.databaseKind" .) "sqlite" }}
  - name: data
    mountPath: /data
  {{- end }}
  {{- if include "payment-provider.secretSources" . | trim }}
  - name: secrets
    mountPath: {{ include "payment-provider.secretsDir" . }}
    readOnly: true
  {{- end }}
{{- end }}

{{/* Volumes of the app pods. */}}
{{- define "payment-provider.volumes" -}}
- name: tmp
  emptyDir:
    sizeLimit: 64Mi
{{- if eq (include "payment-provider.databaseKind" .) "sqlite" }}
- name: data
  {{- $p := .Values.database.sqlite.persistence }}
  {{- if $p.enabled }}
  persistentVolumeClaim:
    claimName: {{ $p.existingClaim | default (printf "%s-data" (include "payment-provider.fullname" .)) }}
  {{- else }}
  emptyDir:
    sizeLimit: 1Gi
  {{- end }}
{{- end }}
{{- with include "payment-provider.secretSources" . | trim }}
# Secrets as files, read through the *_FILE variables: never in the environment.
- name: secrets
  projected:
    defaultMode: 0440
    sources:
      {{- . | nindent 6 }}
{{- end }}
{{- end }}

{{/* topologySpreadConstraints from values, each selecting this release's serving pods. */}}
{{- define "payment-provider.topologySpread" -}}
{{- range .Values.topologySpreadConstraints }}
- maxSkew: {{ .maxSkew }}
  topologyKey: {{ .topologyKey }}
  whenUnsatisfiable: {{ .whenUnsatisfiable }}
  labelSelector:
    matchLabels:
      {{- include "payment-provider.selectorLabels" $ | nindent 6 }}
  matchLabelKeys:
    - pod-template-hash
{{- end }}
{{- end }}

{{/* A NetworkPolicy peer from {namespace, podLabels}: pods with those labels in that namespace. */}}
{{- define "payment-provider.peer" -}}
- namespaceSelector:
    matchLabels:
      kubernetes.io/metadata.name: {{ .namespace }}
  {{- with .podLabels }}
  podSelector:
    matchLabels:
      {{- toYaml . | nindent 6 }}
  {{- end }}
{{- end }}
