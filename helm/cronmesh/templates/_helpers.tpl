{{/* Names and labels shared by every template. */}}
{{- define "cronmesh.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "cronmesh.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "cronmesh.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: cronmesh
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end -}}

{{- define "cronmesh.selectorLabels" -}}
app.kubernetes.io/name: {{ include "cronmesh.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: node
{{- end -}}

{{- define "cronmesh.etcdSelectorLabels" -}}
app.kubernetes.io/name: {{ include "cronmesh.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: etcd
{{- end -}}

{{- define "cronmesh.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "cronmesh.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "cronmesh.etcdName" -}}
{{- printf "%s-etcd" (include "cronmesh.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* etcd endpoints the peers use: the bundled members or the external list. */}}
{{- define "cronmesh.etcdEndpoints" -}}
{{- if .Values.etcd.enabled -}}
{{- $name := include "cronmesh.etcdName" . -}}
{{- $ns := .Release.Namespace -}}
{{- $eps := list -}}
{{- $scheme := ternary "https" "http" .Values.etcd.tls.enabled -}}
{{- range $i := until (int .Values.etcd.replicas) -}}
{{- $eps = append $eps (printf "%s://%s-%d.%s.%s.svc:2379" $scheme $name $i $name $ns) -}}
{{- end -}}
{{- join "," $eps -}}
{{- else -}}
{{- join "," .Values.etcd.externalEndpoints -}}
{{- end -}}
{{- end -}}

{{- define "cronmesh.s3SecretName" -}}
{{- default (printf "%s-s3" (include "cronmesh.fullname" .)) .Values.logStore.existingSecret -}}
{{- end -}}

{{- define "cronmesh.securitySecretName" -}}
{{- default (printf "%s-security" (include "cronmesh.fullname" .)) .Values.security.existingSecret -}}
{{- end -}}

{{- define "cronmesh.hasS3Secret" -}}
{{- if or .Values.logStore.existingSecret .Values.logStore.accessKeyId -}}true{{- end -}}
{{- end -}}

{{- define "cronmesh.hasSecuritySecret" -}}
{{- if or .Values.security.existingSecret .Values.security.nodeSecret .Values.security.adminPassword -}}true{{- end -}}
{{- end -}}

{{/* node.properties as k=v,k=v (CRONMESH_PROPERTIES). */}}
{{- define "cronmesh.properties" -}}
{{- $out := list -}}
{{- range $k, $v := .Values.node.properties -}}
{{- $out = append $out (printf "%s=%v" $k $v) -}}
{{- end -}}
{{- join "," $out -}}
{{- end -}}

{{- define "cronmesh.jobEnv" -}}
{{- $out := list -}}
{{- range $k, $v := .Values.node.jobEnv -}}
{{- $out = append $out (printf "%s=%v" $k $v) -}}
{{- end -}}
{{- join "," $out -}}
{{- end -}}

{{- define "cronmesh.smtpSecretName" -}}
{{- default (printf "%s-smtp" (include "cronmesh.fullname" .)) .Values.notifications.existingSecret -}}
{{- end -}}

{{/* The Secret holding the token /metrics and /status need (key "token"; D166). */}}
{{- define "cronmesh.metricsSecretName" -}}
{{- default (printf "%s-metrics" (include "cronmesh.fullname" .)) .Values.metrics.existingSecret -}}
{{- end -}}

{{/* The Secret with the generated first-admin password, when none is configured (D169). */}}
{{- define "cronmesh.adminSecretName" -}}
{{- printf "%s-admin" (include "cronmesh.fullname" .) -}}
{{- end -}}

{{/* The bundled etcd's auth Secret (root-password, node-password) and TLS Secret. */}}
{{- define "cronmesh.etcdAuthSecretName" -}}
{{- default (printf "%s-auth" (include "cronmesh.etcdName" .)) .Values.etcd.auth.existingSecret -}}
{{- end -}}

{{- define "cronmesh.etcdTlsSecretName" -}}
{{- default (printf "%s-tls" (include "cronmesh.etcdName" .)) .Values.etcd.tls.existingSecret -}}
{{- end -}}

{{- define "cronmesh.etcdAuth" -}}
{{- if and .Values.etcd.enabled .Values.etcd.auth.enabled -}}true{{- end -}}
{{- end -}}

{{- define "cronmesh.etcdTls" -}}
{{- if and .Values.etcd.enabled .Values.etcd.tls.enabled -}}true{{- end -}}
{{- end -}}

{{- define "cronmesh.secretsKeyName" -}}
{{- default (printf "%s-secrets-key" (include "cronmesh.fullname" .)) .Values.secretsKey.existingSecret -}}
{{- end -}}

{{- define "cronmesh.hasSecretsKey" -}}
{{- if or .Values.secretsKey.existingSecret .Values.secretsKey.create -}}true{{- end -}}
{{- end -}}
