{{/* Names, labels and the image of the agent chart. */}}

{{- define "portcullis-agent.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "portcullis-agent.fullname" -}}
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

{{- define "portcullis-agent.selectorLabels" -}}
app.kubernetes.io/name: {{ include "portcullis-agent.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: agent
{{- end -}}

{{- define "portcullis-agent.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "portcullis-agent.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: portcullis
{{- end -}}

{{- define "portcullis-agent.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "portcullis-agent.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "portcullis-agent.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
{{- end -}}

{{- define "portcullis-agent.tokenDir" -}}/var/run/secrets/portcullis{{- end -}}

{{/* The agent's file: gateway, token_file and servers from the values, plus .Values.config. */}}
{{- define "portcullis-agent.config" -}}
{{- $cfg := deepCopy (.Values.config | default dict) -}}
{{- range $key := list "gateway" "token_env" "token_file" "servers" -}}
{{- if hasKey $cfg $key -}}
{{- fail (printf "config.%s is set by the chart (gateway, token.existingSecret, servers); remove it from config" $key) -}}
{{- end -}}
{{- end -}}
{{- $_ := set $cfg "gateway" (required "gateway is required: the gateway's wss://…/agent/connect" .Values.gateway) -}}
{{- $_ := set $cfg "token_file" (printf "%s/%s" (include "portcullis-agent.tokenDir" .) .Values.token.key) -}}
{{- if not .Values.servers -}}
{{- fail "servers is required: at least one MCP server this agent carries" -}}
{{- end -}}
{{- $_ := set $cfg "servers" .Values.servers -}}
{{- toYaml $cfg -}}
{{- end -}}
