{{- define "serin.labels" -}}
app.kubernetes.io/name: serin
app.kubernetes.io/part-of: serin
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ .Chart.Name }}-{{ .Chart.Version }}
{{- end }}
