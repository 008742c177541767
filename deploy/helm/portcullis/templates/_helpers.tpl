{{/* Names, labels and the image, as every chart spells them. */}}

{{- define "portcullis.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "portcullis.fullname" -}}
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

{{- define "portcullis.selectorLabels" -}}
app.kubernetes.io/name: {{ include "portcullis.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: gateway
{{- end -}}

{{- define "portcullis.baseLabels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/name: {{ include "portcullis.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: portcullis
{{- end -}}

{{- define "portcullis.labels" -}}
{{ include "portcullis.baseLabels" . }}
app.kubernetes.io/component: gateway
{{- end -}}

{{- define "portcullis.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "portcullis.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "portcullis.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
{{- end -}}

{{/* Where the files are mounted in the containers. */}}
{{- define "portcullis.configPath" -}}/etc/portcullis/config/portcullis.yaml{{- end -}}
{{- define "portcullis.policyDir" -}}/etc/portcullis/policy{{- end -}}

{{/*
The gateway's configuration file: .Values.config with what the chart manages. Refuses the keys the chart sets, and
a grace period that leaves no room for the drain.
*/}}
{{- define "portcullis.config" -}}
{{- $cfg := deepCopy (.Values.config | default dict) -}}
{{- range $key := list "listen" "store" "public_url" -}}
{{- if hasKey $cfg $key -}}
{{- fail (printf "config.%s is set by the chart (listen: containerPort, store: store.existingSecret, public_url: publicUrl); remove it from config" $key) -}}
{{- end -}}
{{- end -}}
{{- $_ := set $cfg "listen" (printf "0.0.0.0:%d" (int .Values.containerPort)) -}}
{{- $_ := set $cfg "store" "env:PORTCULLIS_STORE" -}}
{{- $_ := set $cfg "public_url" (required "publicUrl is required: the URL clients use (token audiences derive from it)" .Values.publicUrl) -}}
{{- if .Values.auditSigningKey.existingSecret -}}
{{- $rec := get $cfg "recording" | default dict -}}
{{- $_ := set $rec "signing_key_env" "PORTCULLIS_AUDIT_SIGNING_KEY" -}}
{{- $_ := set $cfg "recording" $rec -}}
{{- end -}}
{{- if .Values.pseudonymKey.existingSecret -}}
{{- $mask := get $cfg "masking" | default dict -}}
{{- $_ := set $mask "pseudonym_key_env" "PORTCULLIS_PSEUDONYM_KEY" -}}
{{- $_ := set $cfg "masking" $mask -}}
{{- end -}}
{{- if .Values.policy -}}
{{- $pol := get $cfg "policy" | default dict -}}
{{- if hasKey $pol "file" -}}
{{- fail "config.policy.file is set by the chart when `policy` is given; remove it from config" -}}
{{- end -}}
{{- $_ := set $pol "file" (printf "%s/policy.yaml" (include "portcullis.policyDir" .)) -}}
{{- $_ := set $cfg "policy" $pol -}}
{{- end -}}
{{- $drain := int (dig "limits" "drain_timeout" 20 $cfg) -}}
{{- $grace := int .Values.terminationGracePeriodSeconds -}}
{{- $pre := int .Values.preStopSleepSeconds -}}
{{- if le $grace (add $pre $drain) -}}
{{- fail (printf "terminationGracePeriodSeconds (%d) must be above preStopSleepSeconds + config.limits.drain_timeout (%d + %d): in-flight calls would be killed before they finish" $grace $pre $drain) -}}
{{- end -}}
{{- toYaml $cfg -}}
{{- end -}}

{{/* The environment of the gateway's containers (and of the migration, which loads the same file). */}}
{{- define "portcullis.env" -}}
- name: PORTCULLIS_STORE
  valueFrom:
    secretKeyRef:
      name: {{ required "store.existingSecret is required: a Secret with the postgresql:// URL" .Values.store.existingSecret }}
      key: {{ .Values.store.key }}
{{- with .Values.auditSigningKey.existingSecret }}
- name: PORTCULLIS_AUDIT_SIGNING_KEY
  valueFrom:
    secretKeyRef:
      name: {{ . }}
      key: {{ $.Values.auditSigningKey.key }}
{{- end }}
{{- with .Values.pseudonymKey.existingSecret }}
- name: PORTCULLIS_PSEUDONYM_KEY
  valueFrom:
    secretKeyRef:
      name: {{ . }}
      key: {{ $.Values.pseudonymKey.key }}
{{- end }}
{{- with .Values.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end -}}
