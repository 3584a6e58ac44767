{{/*
Labels every object of the release carries: those kustomize adds in manifests/
(app.kubernetes.io/part-of) and Helm's own.
*/}}
{{- define "roomwire.labels" -}}
app.kubernetes.io/part-of: roomwire
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/instance: {{ .Release.Name }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end }}

{{/* An image reference: {repository, tag} with the chart's appVersion as the default tag. */}}
{{- define "roomwire.image" -}}
{{- $tag := .image.tag | default .root.Chart.AppVersion -}}
image: {{ printf "%s:%s" .image.repository $tag | quote }}
{{- with .image.pullPolicy }}
imagePullPolicy: {{ . }}
{{- end }}
{{- end }}

{{/* The Redis URL when it is given as a value (not from a Secret). */}}
{{- define "roomwire.redisUrl" -}}
{{- if .Values.redis.url -}}
{{- .Values.redis.url -}}
{{- else if .Values.redis.deploy -}}
redis://roomwire:$(REDIS_PASSWORD)@redis:6379/0
{{- else -}}
{{- fail "redis.deploy is false: set redis.url or redis.urlSecret.name" -}}
{{- end -}}
{{- end }}

{{/* The value part of an env entry holding the Redis URL. */}}
{{- define "roomwire.redisUrlEnv" -}}
{{- if .Values.redis.urlSecret.name -}}
valueFrom:
  secretKeyRef:
    name: {{ .Values.redis.urlSecret.name }}
    key: {{ .Values.redis.urlSecret.key }}
{{- else -}}
value: {{ include "roomwire.redisUrl" . }}
{{- end -}}
{{- end }}

{{/* The name of the Secret holding the control secret. */}}
{{- define "roomwire.controlSecretName" -}}
{{- .Values.controlSecret.existingSecret | default "roomwire-control" -}}
{{- end }}

{{/* The value part of an env entry holding the control secret. */}}
{{- define "roomwire.controlSecretEnv" -}}
valueFrom:
  secretKeyRef:
    name: {{ include "roomwire.controlSecretName" . }}
    key: {{ .Values.controlSecret.key }}
{{- end }}

{{/* The Nacos server the signaling pods register in ("" for none). */}}
{{- define "roomwire.nacosServer" -}}
{{- if .Values.nacos.server -}}
{{- .Values.nacos.server -}}
{{- else if .Values.nacos.deploy -}}
nacos:8848
{{- end -}}
{{- end }}

{{/* The name of the Secret holding the password of Redis' ACL user. */}}
{{- define "roomwire.redisSecretName" -}}
{{- .Values.redis.auth.existingSecret | default "roomwire-redis" -}}
{{- end }}

{{/* With the release's Redis: the env entry REDIS_PASSWORD, which the Redis URL
expands (Kubernetes' $(VAR)); it comes before the URL. */}}
{{- define "roomwire.redisPasswordEnv" -}}
{{- if .Values.redis.deploy -}}
- name: REDIS_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ include "roomwire.redisSecretName" . }}
      key: {{ .Values.redis.auth.key }}
{{- end -}}
{{- end }}

{{/* NetworkPolicy egress to Redis: its pods when the release runs it; else any address
on the port of redis.url (networkPolicy.externalRedisPort with redis.urlSecret). */}}
{{- define "roomwire.redisEgress" -}}
{{- if .Values.redis.deploy -}}
- to:
    - podSelector:
        matchLabels:
          app.kubernetes.io/name: redis
  ports:
    - port: redis
      protocol: TCP
{{- else -}}
{{- $port := .Values.networkPolicy.externalRedisPort -}}
{{- if .Values.redis.url -}}
{{- $host := (urlParse .Values.redis.url).host -}}
{{- $port = ternary (last (splitList ":" $host) | atoi) 6379 (contains ":" $host) -}}
{{- end -}}
- ports:
    - port: {{ $port }}
      protocol: TCP
{{- end -}}
{{- end }}

{{/* NetworkPolicy egress to a Nacos outside the release (nacos.server): its port and port + 1000. */}}
{{- define "roomwire.externalNacosEgress" -}}
{{- if and .Values.nacos.server (not .Values.nacos.deploy) -}}
{{- $server := first (splitList "," .Values.nacos.server) -}}
{{- $port := 8848 -}}
{{- if contains ":" $server -}}
{{- $port = last (splitList ":" $server) | atoi -}}
{{- end -}}
- ports:
    - port: {{ $port }}
      protocol: TCP
    - port: {{ add $port 1000 }}
      protocol: TCP
{{- end -}}
{{- end }}

{{/* NetworkPolicy egress to DNS, wherever the cluster's resolver runs. */}}
{{- define "roomwire.dnsEgress" -}}
- ports:
    - port: 53
      protocol: UDP
    - port: 53
      protocol: TCP
{{- end }}
