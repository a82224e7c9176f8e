{{/* Names and labels. */}}
{{- define "modelplane.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "modelplane.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- printf "%s-operator" .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s-operator" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "modelplane.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "modelplane.selectorLabels" -}}
app.kubernetes.io/name: {{ include "modelplane.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}

{{- define "modelplane.labels" -}}
helm.sh/chart: {{ include "modelplane.chart" . }}
{{ include "modelplane.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: modelplane
{{- end }}

{{- define "modelplane.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "modelplane.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "modelplane.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* True (non-empty) when every namespace is watched. */}}
{{- define "modelplane.clusterWide" -}}
{{- if not .Values.watch.namespaces }}true{{ end }}
{{- end }}

{{/* True (non-empty) when replicas need kopf peering. */}}
{{- define "modelplane.peering" -}}
{{- if gt (int .Values.replicas) 1 }}true{{ end }}
{{- end }}

{{- define "modelplane.validate" -}}
{{- if eq (int .Values.metrics.port) (int .Values.health.port) }}
{{- fail (printf "metrics.port and health.port must differ (both are %v)" .Values.metrics.port) }}
{{- end }}
{{- end }}

{{/*
The operator's rules on namespaced resources (identical in content to deploy/rbac.yaml).
*/}}
{{- define "modelplane.namespacedRules" -}}
# The custom resource: read it, write only its status.
- apiGroups: [modelplane.io]
  resources: [modeldeployments]
  verbs: [get, list, watch]
- apiGroups: [modelplane.io]
  resources: [modeldeployments/status]
  verbs: [get, patch]
- apiGroups: [modelplane.io]
  resources: [modeldeployments/finalizers]
  verbs: [update]  # owner references with blockOwnerDeletion
# Children, written by server-side apply (create + patch); deletion is left to the garbage collector.
- apiGroups: [apps]
  resources: [deployments]
  verbs: [get, list, watch, create, patch, delete]  # delete: old revisions beyond revisionHistoryLimit
- apiGroups: [apps]
  resources: [deployments/scale]
  verbs: [patch]
- apiGroups: [""]
  resources: [services]
  verbs: [get, list, watch, create, patch]
- apiGroups: [""]
  resources: [pods]
  verbs: [get, list, watch]
- apiGroups: [""]
  resources: [events]
  verbs: [create]  # core/v1 events, created once per phase change
# Device-claim mode (runtime.gpuClaim): one ResourceClaimTemplate per revision (its spec is
# immutable: created, or deleted and created again), and the pods' claims for status.
- apiGroups: [resource.k8s.io]
  resources: [resourceclaimtemplates]
  verbs: [get, list, create, delete]
- apiGroups: [resource.k8s.io]
  resources: [resourceclaims]
  verbs: [get, list]
{{- if .Values.rbac.registrySecrets }}
# oci:// models in private registries: the named pull secret, read to resolve the tag.
- apiGroups: [""]
  resources: [secrets]
  verbs: [get]
{{- end }}
{{- end }}

{{/*
Cluster-scoped reads the operator needs whatever it watches.
*/}}
{{- define "modelplane.nodeRules" -}}
# GPU budget: the capacity of the GPU nodes.
- apiGroups: [""]
  resources: [nodes]
  verbs: [get, list, watch]
# GPU budget in device-claim mode: the devices the drivers publish, the classes that
# select them, and the claims of every namespace that hold some (read-only).
- apiGroups: [resource.k8s.io]
  resources: [resourceslices, deviceclasses]
  verbs: [get, list, watch]
- apiGroups: [resource.k8s.io]
  resources: [resourceclaims]
  verbs: [list]
{{- end }}

{{- define "modelplane.clusterRules" -}}
# kopf discovers resources and namespaces at run time.
- apiGroups: [apiextensions.k8s.io]
  resources: [customresourcedefinitions]
  verbs: [list, watch]
- apiGroups: [""]
  resources: [namespaces]
  verbs: [list, watch]
{{- end }}
