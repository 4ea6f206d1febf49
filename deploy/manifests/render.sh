#!/bin/sh
# Regenerates deploy/manifests/qscale.yaml from the Helm chart with its
# default values, for users who deploy with kubectl instead of Helm.
# Run it after every change to deploy/helm/qscale (needs `helm` on PATH):
#
#   sh deploy/manifests/render.sh
#
# The only edits to Helm's output: a Namespace is prepended, and the
# managed-by label says kubectl, since Helm will not manage these objects.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
chart="$here/../helm/qscale"
out="$here/qscale.yaml"
tmp="$out.tmp"

{
    cat <<'HEADER'
# qscale: plain Kubernetes manifests for clusters without Helm.
#
# Produced by deploy/manifests/render.sh: `helm template qscale
# deploy/helm/qscale --namespace qscale` with the chart's default values,
# plus the Namespace below and managed-by=kubectl. Do not edit by hand:
# change the chart and re-render, so that the two never drift. (The copy in
# the repository was last rendered with the template engine of Helm v4.2.3.)
#
# Before applying, edit the ConfigMap `qscale` (your [[scaler]] tables) and
# the image; on EKS add the IRSA annotation to the ServiceAccount (see
# docs/deploy.md). Then:
#
#   kubectl apply -f deploy/manifests/qscale.yaml
#
# kubectl does not roll the pods when only the ConfigMap changes: run
# `kubectl -n qscale rollout restart deployment/qscale` after editing it.
---
apiVersion: v1
kind: Namespace
metadata:
  name: qscale
  labels:
    app.kubernetes.io/name: qscale
    app.kubernetes.io/part-of: qscale
    # qscale needs nothing privileged: hold the namespace to the strictest
    # Pod Security Standard.
    pod-security.kubernetes.io/enforce: restricted
    pod-security.kubernetes.io/warn: restricted
HEADER
    helm template qscale "$chart" --namespace qscale |
        sed -e 's|app.kubernetes.io/managed-by: Helm|app.kubernetes.io/managed-by: kubectl|'
} > "$tmp"
mv "$tmp" "$out"
echo "wrote $out"
