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

{{/* The restricted APIs' key in plain text: apiKey.value; else the key the cluster's
Secret holds (lookup: the existingSecret, or the chart's own Secret from an earlier
install); else, with apiKey.generate, a new random one; else "" for an existingSecret
that lookup cannot read (`helm template` reads no cluster; or it is not created yet),
and a failure for the chart's own Secret, which would have no key. Resolved once per
render and kept in .Values.apiKey.resolved (one map, shared by every template): the
Secret's data and the pods' checksum/api-key must agree, and each call of
randAlphaNum gives another key. */}}
{{- define "triton-detectors.apiKey" -}}
{{- $apiKey := .Values.apiKey }}
{{- if not (hasKey $apiKey "resolved") }}
{{- $key := $apiKey.value }}
{{- if not $key }}
{{- $secret := lookup "v1" "Secret" .Release.Namespace (include "triton-detectors.secretName" .) }}
{{- $key = dig "data" $apiKey.apiKeyKey "" $secret | b64dec }}
{{- end }}
{{- if and (not $key) (not $apiKey.existingSecret) }}
{{- if $apiKey.generate }}
{{- $key = randAlphaNum 40 }}
{{- else }}
{{- fail (printf "no key for the restricted APIs: set apiKey.existingSecret (a Secret you create, holding the key under %q) or apiKey.value, or apiKey.generate=true for `helm install` to make one (kept on upgrades; not under `helm template` or GitOps, where each render would make a new one)" $apiKey.apiKeyKey) }}
{{- end }}
{{- end }}
{{- $_ := set $apiKey "resolved" $key }}
{{- end }}
{{- $apiKey.resolved }}
{{- end }}

{{/* The monitoring objects need the Prometheus Operator's API in the cluster. */}}
{{- define "triton-detectors.hasMonitoringApi" -}}
{{- if .Capabilities.APIVersions.Has "monitoring.coreos.com/v1" }}true{{ end }}
{{- end }}

{{/* --gpus: 0..gpu.count-1. The device plugin renumbers a pod's GPUs from 0 inside the
container, so the ids follow from the count and cannot disagree with the limit. */}}
{{- define "triton-detectors.gpus" -}}
{{- $ids := list }}
{{- range $i := until (int .Values.gpu.count) }}
{{- $ids = append $ids (toString $i) }}
{{- end }}
{{- join "," $ids }}
{{- end }}

{{/* The fewest pods the Deployment runs: the HPA's floor, or the fixed count. */}}
{{- define "triton-detectors.fewestReplicas" -}}
{{- if .Values.autoscaling.enabled }}{{ int .Values.autoscaling.minReplicas }}{{ else }}{{ int .Values.replicaCount }}{{ end }}
{{- end }}

{{/* Checks that compare two values, which values.schema.json cannot express (JSON
schema validates each value on its own). Included by the Deployment: any install or
`helm template` renders it, and fails with the message. */}}
{{- define "triton-detectors.validate" -}}
{{- $v := .Values }}
{{- if ge (int $v.preStopSeconds) (int $v.terminationGracePeriodSeconds) }}
{{- fail (printf "preStopSeconds (%d) must be below terminationGracePeriodSeconds (%d): the kubelet kills the pod at the end of the grace period, before the launcher could drain" (int $v.preStopSeconds) (int $v.terminationGracePeriodSeconds)) }}
{{- end }}
{{- if and (eq $v.server.target "cpu") (gt (int $v.gpu.count) 0) }}
{{- fail (printf "server.target cpu uses no GPU, but gpu.count is %d: set server.target gpu or ngc, or gpu.count 0" (int $v.gpu.count)) }}
{{- end }}
{{- if and (ne $v.server.target "cpu") (eq (int $v.gpu.count) 0) }}
{{- fail (printf "server.target %s needs GPUs: set gpu.count" $v.server.target) }}
{{- end }}
{{- if and $v.apiKey.value $v.apiKey.existingSecret }}
{{- fail (printf "apiKey.value and apiKey.existingSecret (%s) are both set: keep one (values-cpu.yaml and values-gpu.yaml name an existingSecret; set it to \"\" to give a value)" $v.apiKey.existingSecret) }}
{{- end }}
{{- if and $v.apiKey.generate (or $v.apiKey.value $v.apiKey.existingSecret) }}
{{- fail "apiKey.generate makes a key for the chart's own Secret only: drop it, or apiKey.value and apiKey.existingSecret" }}
{{- end }}
{{- if hasKey (default dict $v.resources.limits) "nvidia.com/gpu" }}
{{- fail "resources.limits must not name nvidia.com/gpu: set gpu.count, which also gives --gpus" }}
{{- end }}
{{- if and $v.autoscaling.enabled (gt (int $v.autoscaling.minReplicas) (int $v.autoscaling.maxReplicas)) }}
{{- fail (printf "autoscaling.minReplicas (%d) is above autoscaling.maxReplicas (%d)" (int $v.autoscaling.minReplicas) (int $v.autoscaling.maxReplicas)) }}
{{- end }}
{{- $fewest := int (include "triton-detectors.fewestReplicas" .) }}
{{- $unavailable := dig "rollingUpdate" "maxUnavailable" 0 $v.strategy }}
{{- /* A percentage is rounded by the controller: only a count is checked here. */}}
{{- if and (not (kindIs "string" $unavailable)) (ge (int $unavailable) $fewest) }}
{{- fail (printf "strategy.rollingUpdate.maxUnavailable (%d) would let a rollout stop all %d pods: lower it (maxUnavailable 0 with maxSurge 1 starts a new pod before an old one stops) or run more replicas" (int $unavailable) $fewest) }}
{{- end }}
{{- $pdb := $v.podDisruptionBudget }}
{{- if and $pdb.enabled (not (hasKey $pdb "minAvailable")) (ge (int $pdb.maxUnavailable) $fewest) }}
{{- fail (printf "podDisruptionBudget.maxUnavailable (%d) would let a drain evict all %d pods: run at least %d replicas, or set podDisruptionBudget.minAvailable (a drain then waits for a replacement)" (int $pdb.maxUnavailable) $fewest (add1 (int $pdb.maxUnavailable))) }}
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
- --gpus
- {{ include "triton-detectors.gpus" . | quote }}
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
- --grpc-max-connection-age
- {{ .Values.server.grpcMaxConnectionAgeSeconds | quote }}
{{- /* Triton's log and the front's errors on the container's output too (`kubectl logs`);
the files in the workdir stay. */}}
- --log-stdout
{{- range .Values.server.extraArgs }}
- {{ . | quote }}
{{- end }}
{{- end }}
