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
# kopf: watch OrtModels; its progress and diff-base annotations are patches of the object.
- apiGroups: [ortkube.io]
  resources: [ortmodels]
  verbs: [list, watch, patch]
# handlers.publish: phase, conditions and counts go to the status subresource.
- apiGroups: [ortkube.io]
  resources: [ortmodels/status]
  verbs: [patch]
# Children carry blockOwnerDeletion owner references; clusters that enforce
# OwnerReferencesPermissionEnforcement require update on the owner's finalizers for that.
- apiGroups: [ortkube.io]
  resources: [ortmodels/finalizers]
  verbs: [update]
# reconcile.apply_children: server-side apply (patch; create when the child is new).
- apiGroups: [""]
  resources: [services]
  verbs: [create, patch]
# One runtime ConfigMap per config revision: applied, listed and the superseded ones deleted
# (reconcile._delete_superseded_configs).
- apiGroups: [""]
  resources: [configmaps]
  verbs: [list, create, patch, delete]
# reconcile.observe reads the Deployment back.
- apiGroups: [apps]
  resources: [deployments]
  verbs: [get, create, patch]
# Optional children: applied, and deleted (after a get for the owner) when the spec drops them.
- apiGroups: [""]
  resources: [persistentvolumeclaims]
  verbs: [get, create, patch, delete]
- apiGroups: [autoscaling]
  resources: [horizontalpodautoscalers]
  verbs: [get, create, patch, delete]
- apiGroups: [policy]
  resources: [poddisruptionbudgets]
  verbs: [get, create, patch, delete]
# The engine pre-build Job: applied, read for its outcome, superseded ones listed and deleted.
- apiGroups: [batch]
  resources: [jobs]
  verbs: [get, list, create, patch, delete]
# reconcile.observe lists the model's pods (and the build Job's) by label.
- apiGroups: [""]
  resources: [pods]
  verbs: [list]
# kopf.event / kopf.warn: phase transitions and refusals, posted as core/v1 Events.
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
