{{/* The release's base name: RELEASE-cassio, or RELEASE if it holds "cassio". */}}
{{- define "cassio.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 50 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "cassio.headless" -}}
{{- printf "%s-headless" (include "cassio.fullname" .) -}}
{{- end -}}

{{- define "cassio.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "cassio.labels" -}}
{{ include "cassio.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{/* Seeds: the values' list, or pod 0 through the headless Service. */}}
{{- define "cassio.seeds" -}}
{{- if .Values.seeds -}}
{{- join "," .Values.seeds -}}
{{- else -}}
{{- printf "%s-0.%s.%s.svc.%s:%d" (include "cassio.fullname" .) (include "cassio.headless" .) .Release.Namespace .Values.clusterDomain (int .Values.ports.native) -}}
{{- end -}}
{{- end -}}
