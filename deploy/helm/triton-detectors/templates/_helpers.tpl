{{/* Names, labels and the launcher's arguments. */}}

{{- define "triton-detectors.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Release-qualified name; "-headless" (9 characters) is added to it, so 54 at most. */}}
{{- define "triton-detectors.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 54 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 54 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 54 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "triton-detectors.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Selector labels: the pods' identity; never change them on upgrade. */}}
{{- define "triton-detectors.selectorLabels" -}}
app.kubernetes.io/name: {{ include "triton-detectors.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "triton-detectors.labels" -}}
helm.sh/chart: {{ include "triton-detectors.chart" . }}
{{ include "triton-detectors.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "triton-detectors.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "triton-detectors.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "triton-detectors.secretName" -}}
{{- default (printf "%s-api-key" (include "triton-detectors.fullname" .)) .Values.apiKey.existingSecret }}
{{- end }}

{{/* The monitoring objects need the Prometheus Operator's API in the cluster. */}}
{{- define "triton-detectors.hasMonitoringApi" -}}
{{- if .Capabilities.APIVersions.Has "monitoring.coreos.com/v1" }}true{{ end }}
{{- end }}

{{/* --gpus: the value, or 0..gpu.count-1. */}}
{{- define "triton-detectors.gpus" -}}
{{- if .Values.server.gpus }}
{{- .Values.server.gpus }}
{{- else }}
{{- $ids := list }}
{{- range $i := until (int .Values.gpu.count) }}
{{- $ids = append $ids (toString $i) }}
{{- end }}
{{- join "," $ids }}
{{- end }}
{{- end }}

{{/* --models: a file on the volume, or in the image (empty: the image's models.toml). */}}
{{- define "triton-detectors.modelsFile" -}}
{{- if eq .Values.models.source "volume" }}
{{- printf "%s/%s" (trimSuffix "/" .Values.models.mountPath) (default "models.toml" .Values.models.modelsFile) }}
{{- else if eq .Values.models.source "image" }}
{{- .Values.models.modelsFile }}
{{- else }}
{{- fail (printf "models.source must be image or volume, not %q" .Values.models.source) }}
{{- end }}
{{- end }}

{{/* The launcher's arguments, one per line of a YAML list. */}}
{{- define "triton-detectors.args" -}}
- --host
- 0.0.0.0
{{- with include "triton-detectors.modelsFile" . }}
- --models
- {{ . | quote }}
{{- end }}
- --target
- {{ .Values.server.target | quote }}
{{- if ne .Values.server.target "cpu" }}
{{- $gpus := include "triton-detectors.gpus" . }}
{{- if not $gpus }}
{{- fail "--target gpu or ngc needs GPUs: set gpu.count (or server.gpus)" }}
{{- end }}
- --gpus
- {{ $gpus | quote }}
{{- end }}
- --workdir
- {{ .Values.workdir.path | quote }}
- --http-port
- {{ .Values.ports.http | quote }}
- --grpc-port
- {{ .Values.ports.grpc | quote }}
- --metrics-port
- {{ .Values.ports.metrics | quote }}
- --supervisor-port
- {{ .Values.ports.supervisor | quote }}
- --max-inflight
- {{ .Values.server.maxInflight | quote }}
{{- range .Values.server.extraArgs }}
- {{ . | quote }}
{{- end }}
{{- end }}
