{{- define "team-database.name" -}}
{{- required "clusterName is required: the CloudNativePG Cluster's name, e.g. invoices-db" .Values.clusterName -}}
{{- end }}

{{- define "team-database.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: invoice-platform
{{- end }}
