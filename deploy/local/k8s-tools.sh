#!/usr/bin/env bash
# Installs the tools that build and validate the Kubernetes manifests (deploy/k8s/) into the
# project's cache dir, once per cache dir, and prints the directory holding them:
#   kustomize   builds each overlay (the same kustomize that `kubectl kustomize` embeds)
#   kubeconform validates the built manifests strictly, offline, against the Kubernetes
#               schemas and the operators' CRD schemas (deploy/k8s/schemas/)
# Both are built with `go install` from their Go modules (the Go module proxy), so the Go
# toolchain is needed (installed with apt as golang-go when missing).
#   BIN=$(deploy/local/k8s-tools.sh) && "$BIN/kustomize" build deploy/k8s/overlays/prod
# Environment: REFLEXE_CACHE_DIR [${XDG_CACHE_HOME:-$HOME/.cache}/reflexe].
set -euo pipefail

KUSTOMIZE_VERSION=v5.5.0
KUBECONFORM_VERSION=v0.7.0

LOG_NAME=k8s-tools
# shellcheck source=deploy/local/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
HOME_DIR="$CACHE_DIR/k8s-tools-kustomize-$KUSTOMIZE_VERSION-kubeconform-$KUBECONFORM_VERSION"
BIN="$HOME_DIR/bin"

if [[ ! -f $BIN/.complete ]]; then
    mkdir -p "$HOME_DIR"
    # Several clones or test sessions may share the cache: one builds, the others wait.
    exec 9>"$HOME_DIR/.lock"
    flock 9
    if [[ ! -f $BIN/.complete ]]; then
        GO=$(command -v go || true)
        [[ -z $GO && -x /usr/local/go/bin/go ]] && GO=/usr/local/go/bin/go
        if [[ -z $GO ]]; then apt_install golang-go; GO=$(command -v go); fi
        log "building kustomize $KUSTOMIZE_VERSION and kubeconform $KUBECONFORM_VERSION (once per cache dir)"
        rm -rf "$BIN.tmp"
        # The module and build caches stay beside the binaries, out of the user's GOPATH.
        GOBIN="$BIN.tmp" GOPATH="$HOME_DIR/gopath" GOCACHE="$HOME_DIR/gocache" GOFLAGS=-modcacherw \
            "$GO" install "sigs.k8s.io/kustomize/kustomize/v5@$KUSTOMIZE_VERSION" \
            >"$HOME_DIR/build.log" 2>&1 \
            || { tail -n 30 "$HOME_DIR/build.log" >&2; die "could not build kustomize"; }
        GOBIN="$BIN.tmp" GOPATH="$HOME_DIR/gopath" GOCACHE="$HOME_DIR/gocache" GOFLAGS=-modcacherw \
            "$GO" install "github.com/yannh/kubeconform/cmd/kubeconform@$KUBECONFORM_VERSION" \
            >>"$HOME_DIR/build.log" 2>&1 \
            || { tail -n 30 "$HOME_DIR/build.log" >&2; die "could not build kubeconform"; }
        rm -rf "$BIN" "$HOME_DIR/gocache"
        mv "$BIN.tmp" "$BIN"
        touch "$BIN/.complete"
    fi
    flock -u 9
fi
echo "$BIN"
