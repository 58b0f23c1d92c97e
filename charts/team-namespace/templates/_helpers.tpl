{{/* The team's namespace; refuses to render without one. */}}
{{- define "team-namespace.namespace" -}}
{{- required "name is required: the team's namespace, e.g. --set name=invoices" .Values.name -}}
{{- end }}

{{- define "team-namespace.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: invoice-platform
{{- end }}

{{/* The verbs of someone who manages a kind of object. Written out: no wildcards. */}}
{{- define "team-namespace.manageVerbs" -}}
["get", "list", "watch", "create", "update", "patch", "delete"]
{{- end }}

{{- define "team-namespace.readVerbs" -}}
["get", "list", "watch"]
{{- end }}
