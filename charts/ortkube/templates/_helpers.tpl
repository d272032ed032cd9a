{{/* The release's full name, cut to 63 characters (a DNS label). */}}
{{- define "ortkube.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* Labels that select the operator's pods; never changed after install. */}}
{{- define "ortkube.selectorLabels" -}}
app.kubernetes.io/name: ortkube-operator
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* Labels of every object the chart creates. */}}
{{- define "ortkube.labels" -}}
{{ include "ortkube.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/component: operator
app.kubernetes.io/part-of: ortkube
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{- define "ortkube.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "ortkube.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* The namespaces a namespace-scoped operator watches: the listed ones, else the release's. */}}
{{- define "ortkube.watchNamespaces" -}}
{{- if .Values.watch.namespaces -}}
{{- toJson (uniq .Values.watch.namespaces) -}}
{{- else -}}
{{- toJson (list .Release.Namespace) -}}
{{- end -}}
{{- end -}}

{{- define "ortkube.clusterwide" -}}
{{- if eq .Values.watch.scope "cluster" }}true{{ end -}}
{{- end -}}

{{- define "ortkube.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{- define "ortkube.runtimeImage" -}}
{{- printf "%s:%s" .Values.runtime.image.repository (default .Chart.AppVersion .Values.runtime.image.tag) -}}
{{- end -}}

{{/*
Rules for the namespaced kinds, each tied to the code that needs it (operator/ortkube/operator/).
A verb the operator stops using should leave here too: tests/integration/test_chart.py runs the
operator under exactly these rules and fails on any forbidden request.
*/}}
{{- define "ortkube.namespacedRules" -}}
# Watched (list, watch) into the operator's indexes; patch only to take the finalizer of
# older operator versions off (reconcile.LEGACY_FINALIZER).
- apiGroups: [ortkube.io]
  resources: [ortmodels]
  verbs: [list, watch, patch]
# reconcile._publish: phase, conditions and counts go to the status subresource.
- apiGroups: [ortkube.io]
  resources: [ortmodels/status]
  verbs: [patch]
# Children carry blockOwnerDeletion owner references; clusters that enforce
# OwnerReferencesPermissionEnforcement require update on the owner's finalizers for that.
- apiGroups: [ortkube.io]
  resources: [ortmodels/finalizers]
  verbs: [update]
# Every child is watched by label (list, watch), server-side applied when it differs from the
# render (patch; create when new); ConfigMaps, optional children and superseded Jobs deleted.
- apiGroups: [""]
  resources: [services]
  verbs: [list, watch, create, patch]
- apiGroups: [""]
  resources: [configmaps, persistentvolumeclaims]
  verbs: [list, watch, create, patch, delete]
- apiGroups: [apps]
  resources: [deployments]
  verbs: [list, watch, create, patch]
- apiGroups: [autoscaling]
  resources: [horizontalpodautoscalers]
  verbs: [list, watch, create, patch, delete]
- apiGroups: [policy]
  resources: [poddisruptionbudgets]
  verbs: [list, watch, create, patch, delete]
- apiGroups: [batch]
  resources: [jobs]
  verbs: [list, watch, create, patch, delete]
# Runtime pods and pre-build Job pods: watched only (readiness, the scheduler's reasons).
- apiGroups: [""]
  resources: [pods]
  verbs: [list, watch]
# Phase transitions and refusals, posted as core/v1 Events.
- apiGroups: [""]
  resources: [events]
  verbs: [create]
{{- if and .Values.ha.enabled (not (include "ortkube.clusterwide" .)) }}
# kopf peering (--peering): keep-alives in the KopfPeering object of each watched namespace.
- apiGroups: [kopf.dev]
  resources: [kopfpeerings]
  verbs: [list, watch, patch]
{{- end }}
{{- end -}}
