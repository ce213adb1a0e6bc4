{{/* The chart name, or nameOverride. */}}
{{- define "kcache-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The prefix of every object's name: fullnameOverride, else "<release>-<chart>", or just
the release name when it already contains the chart name.
*/}}
{{- define "kcache-operator.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 52 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 52 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 52 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/* "name-version" of the chart, for the helm.sh/chart label. */}}
{{- define "kcache-operator.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels that never change for a release's objects: what selectors match. */}}
{{- define "kcache-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "kcache-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* The recommended app.kubernetes.io labels, on every object of the chart. */}}
{{- define "kcache-operator.labels" -}}
helm.sh/chart: {{ include "kcache-operator.chart" . }}
{{ include "kcache-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/component: operator
app.kubernetes.io/part-of: kcache
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* The operator's ServiceAccount. */}}
{{- define "kcache-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "kcache-operator.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The operator image: repository, then @digest or :tag (default: appVersion). */}}
{{- define "kcache-operator.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* The leader election Lease. */}}
{{- define "kcache-operator.leaseName" -}}
{{- default (include "kcache-operator.fullname" .) .Values.leaderElection.leaseName }}
{{- end }}

{{/*
The kcache node alerts (files/alerts/nodes.yaml, which the operator also compiles in for
a CacheCluster's own PrometheusRule), over the series prometheusRule.nodeSelector picks.
*/}}
{{- define "kcache-operator.nodeAlerts" -}}
{{- .Files.Get "files/alerts/nodes.yaml" | replace "KCACHE_SELECTOR" .Values.prometheusRule.nodeSelector }}
{{- end }}
