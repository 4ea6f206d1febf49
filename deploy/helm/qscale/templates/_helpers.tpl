{{/*
Shared names, labels and decisions of the qscale chart.
*/}}

{{/* Chart name, overridable. */}}
{{- define "qscale.name" -}}
{{- .Values.nameOverride | default .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/*
Full name of the release's objects: the release name when it already
contains the chart name (so `helm install qscale` gives "qscale", not
"qscale-qscale"), else "<release>-<chart>". Kubernetes names stop at 63.
*/}}
{{- define "qscale.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $chart := include "qscale.name" . -}}
{{- if contains $chart .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $chart | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* Labels that select the pods: never change them on upgrade. */}}
{{- define "qscale.selectorLabels" -}}
app.kubernetes.io/name: {{ include "qscale.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* Labels on every object. */}}
{{- define "qscale.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "qscale.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | quote }}
app.kubernetes.io/component: autoscaler
app.kubernetes.io/part-of: qscale
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "qscale.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- .Values.serviceAccount.name | default (include "qscale.fullname" .) -}}
{{- else -}}
{{- .Values.serviceAccount.name | default "default" -}}
{{- end -}}
{{- end -}}

{{/* Image reference: a digest, when given, pins it. */}}
{{- define "qscale.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) -}}
{{- end -}}
{{- end -}}

{{/*
"true" or "false": is leader election on? null (the default) means "on when
more than one replica runs". Several replicas without it would each resize
the same targets, so that combination is refused outright.
*/}}
{{- define "qscale.leaderElection" -}}
{{- $on := .Values.leaderElection.enabled -}}
{{- if kindIs "invalid" $on -}}
{{- $on = gt (int .Values.replicaCount) 1 -}}
{{- end -}}
{{- if and (not $on) (gt (int .Values.replicaCount) 1) -}}
{{- fail "replicaCount > 1 needs leaderElection.enabled (null or true): uncoordinated replicas would fight over the same targets" -}}
{{- end -}}
{{- ternary "true" "false" (eq (toString $on) "true") -}}
{{- end -}}

{{- define "qscale.leaseName" -}}
{{- .Values.leaderElection.leaseName | default (include "qscale.fullname" .) -}}
{{- end -}}

{{/*
YAML list of the Lease names qscale uses: <leaseName> with one shard,
<leaseName>-0 .. <leaseName>-<n-1> with n shards. get/update on Leases are
limited to these names (create cannot be limited by name in RBAC).
*/}}
{{- define "qscale.leaseNames" -}}
{{- $base := include "qscale.leaseName" . -}}
{{- $shards := int .Values.leaderElection.shards -}}
{{- $names := list $base -}}
{{- if gt $shards 1 -}}
{{- $names = list -}}
{{- range $i := until $shards -}}
{{- $names = append $names (printf "%s-%d" $base $i) -}}
{{- end -}}
{{- /* With shards, live replicas heartbeat in this Lease (src/leader.rs). */ -}}
{{- $names = append $names (printf "%s-members" $base) -}}
{{- end -}}
{{- toYaml $names -}}
{{- end -}}

{{/*
RBAC rules for the scale targets, shared by the ClusterRole and the
per-namespace Roles. qscale reads and writes replica counts only through the
/scale subresource; it reads the workload object itself only for the
qscale.io/paused annotation, and lists HPAs only to warn about a conflicting
HorizontalPodAutoscaler on the same target. No watch, no secrets, no pods.
*/}}
{{- define "qscale.scaleRules" -}}
- apiGroups: ["apps"]
  resources: ["deployments/scale", "statefulsets/scale"]
  verbs: ["get", "update"]
- apiGroups: ["apps"]
  resources: ["deployments", "statefulsets"]
  verbs: ["get"]
{{- range .Values.rbac.extraScaleResources }}
- apiGroups: [{{ required "rbac.extraScaleResources[].apiGroup is required" .apiGroup | quote }}]
  resources: [{{ printf "%s/scale" (required "rbac.extraScaleResources[].resource is required" .resource) | quote }}]
  verbs: ["get", "update"]
- apiGroups: [{{ .apiGroup | quote }}]
  resources: [{{ .resource | quote }}]
  verbs: ["get"]
{{- end }}
- apiGroups: ["autoscaling"]
  resources: ["horizontalpodautoscalers"]
  verbs: ["list"]
- apiGroups: ["keda.sh"]
  resources: ["scaledobjects"]
  verbs: ["list"]
{{- end -}}
