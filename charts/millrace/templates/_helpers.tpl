{{/* The release's name for everything this chart makes, at most 63 characters. */}}
{{- define "millrace.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "millrace.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}-operator
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "millrace.labels" -}}
{{ include "millrace.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{- define "millrace.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "millrace.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* Leader election: as set, or on when more than one replica runs. */}}
{{- define "millrace.leaderElection" -}}
{{- if kindIs "bool" .Values.leaderElection.enabled -}}
{{- .Values.leaderElection.enabled -}}
{{- else -}}
{{- gt (int .Values.replicas) 1 -}}
{{- end -}}
{{- end -}}

{{/* What the operator does to the pipelines and their children: the same
rules for a ClusterRole (all namespaces) and a Role (one namespace). */}}
{{- define "millrace.pipelineRules" -}}
- apiGroups: [millrace.io]
  resources: [streampipelines]
  verbs: [get, list, watch, patch, update]
- apiGroups: [millrace.io]
  resources: [streampipelines/status]
  verbs: [get, patch, update]
- apiGroups: [apps]
  resources: [deployments, statefulsets]
  verbs: [get, list, watch, create, patch, delete]
- apiGroups: [""]
  resources: [configmaps, services]
  verbs: [get, list, watch, create, patch, delete]
- apiGroups: [policy]
  resources: [poddisruptionbudgets]
  verbs: [get, list, watch, create, patch, delete]
- apiGroups: [""]
  resources: [persistentvolumeclaims]
  verbs: [get, create, patch, delete]
- apiGroups: [events.k8s.io]
  resources: [events]
  verbs: [create, patch]
{{- end -}}

{{/* The generated Grafana admin Secret: made once, removed with Grafana. */}}
{{- define "millrace.secretRules" -}}
- apiGroups: [""]
  resources: [secrets]
  verbs: [get, create, delete]
{{- end -}}

{{/* Who the RBAC bindings grant to: the operator's ServiceAccount. */}}
{{- define "millrace.subjects" -}}
- kind: ServiceAccount
  name: {{ include "millrace.serviceAccountName" . }}
  namespace: {{ .Release.Namespace }}
{{- end -}}
