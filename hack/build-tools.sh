#!/usr/bin/env bash
# Builds the local control plane (etcd, kube-apiserver, kube-controller-manager,
# kube-scheduler, kubectl), kwok, helm and the real node's kubelet, kube-proxy, CoreDNS,
# metrics-server and containerd from the Go module proxy into a cache
# outside the repository. Each tool lands in $MODELPLANE_CACHE/bin/<tool>-<version>
# and is rebuilt only when its pinned version changes. Prints the bin folder.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=hack/versions.env
source "$here/versions.env"

cache=${MODELPLANE_CACHE:-$HOME/.cache/modelplane}
bin="$cache/bin"
work="$cache/build"
mkdir -p "$bin" "$work"

export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-mod=mod
log() { printf '[build-tools] %s\n' "$*" >&2; }

have() { # have TOOL VERSION -> true when the cached binary exists
  [ -x "$bin/$1-$2" ]
}

link() { # link TOOL VERSION: stable name -> versioned binary
  ln -sf "$1-$2" "$bin/$1"
}

build_etcd() {
  have etcd "$ETCD_VERSION" && { link etcd "$ETCD_VERSION"; return; }
  log "building etcd $ETCD_VERSION"
  local dir="$work/etcd-$ETCD_VERSION"
  mkdir -p "$dir"
  # The etcd server module carries replace directives, so it cannot be
  # `go install`ed directly; a wrapper module that calls etcdmain can be built.
  cat >"$dir/go.mod" <<MOD
module modelplane.local/etcd

go 1.26.0

require go.etcd.io/etcd/server/v3 $ETCD_VERSION
MOD
  cat >"$dir/main.go" <<'SRC'
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
SRC
  (cd "$dir" && go mod tidy >&2 && go build -trimpath -ldflags "-s -w" -o "$bin/etcd-$ETCD_VERSION" .)
  link etcd "$ETCD_VERSION"
}

build_kubernetes() { # build_kubernetes TOOL...: commands of k8s.io/kubernetes/cmd
  local tools=("$@")
  local missing=0 t
  for t in "${tools[@]}"; do have "$t" "$KUBERNETES_VERSION" || missing=1; done
  if [ "$missing" = 1 ]; then
    log "building ${tools[*]} $KUBERNETES_VERSION (cold: 15-25 minutes on 2 cores)"
    local dir="$work/kubernetes-$KUBERNETES_VERSION"
    local staging="v0.${KUBERNETES_VERSION#v1.}"
    mkdir -p "$dir"
    # k8s.io/kubernetes requires its staging modules at v0.0.0 and relies on
    # replace lines in its own go.mod; a wrapper must pin each one itself.
    local replaces
    replaces=$(curl -fsSL "${GOPROXY_URL:-https://proxy.golang.org}/k8s.io/kubernetes/@v/$KUBERNETES_VERSION.mod" \
      | awk -v v="$staging" '$1 ~ /^k8s\.io\// && $2 == "v0.0.0" {printf "\t%s => %s %s\n", $1, $1, v}')
    cat >"$dir/go.mod" <<MOD
module modelplane.local/kubernetes

go 1.26.0

require k8s.io/kubernetes $KUBERNETES_VERSION

replace (
$replaces
)
MOD
    local ldflags="-s -w"
    local minor=${KUBERNETES_VERSION#v1.}; minor=${minor%%.*}
    for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
      ldflags+=" -X $pkg.gitVersion=$KUBERNETES_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
      ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
    done
    (
      cd "$dir"
      local out="$dir/out" pkgs=()
      mkdir -p "$out"
      for t in "${tools[@]}"; do pkgs+=("k8s.io/kubernetes/cmd/$t"); done
      go build -trimpath -ldflags "$ldflags" -o "$out/" "${pkgs[@]}"
      for t in "${tools[@]}"; do mv "$out/$t" "$bin/$t-$KUBERNETES_VERSION"; done
    )
  fi
  for t in "${tools[@]}"; do link "$t" "$KUBERNETES_VERSION"; done
}

build_module_tool() { # build_module_tool NAME MODULE VERSION PACKAGE [LDFLAGS]
  local name=$1 module=$2 version=$3 pkg=$4 extra=${5:-}
  have "$name" "$version" && { link "$name" "$version"; return; }
  # Two builds may want one tool at once (CI's images.sh needs the registry while this
  # script runs beside it): one builds, the other waits and finds it.
  local lock
  exec {lock}>"$bin/.$name.lock"
  flock "$lock"
  if ! have "$name" "$version"; then
    log "building $name $version"
    local dir="$work/$name-$version"
    mkdir -p "$dir"
    printf 'module modelplane.local/%s\n\ngo 1.26.0\n\nrequire %s %s\n' "$name" "$module" "$version" >"$dir/go.mod"
    (cd "$dir" && go build -trimpath -ldflags "-s -w $extra" -o "$bin/$name-$version.part" "$pkg")
    mv "$bin/$name-$version.part" "$bin/$name-$version"
  fi
  exec {lock}>&-
  link "$name" "$version"
}

build_registry() { # CNCF distribution: the cluster's registries and the image store
  build_module_tool registry github.com/distribution/distribution/v3 "$DISTRIBUTION_VERSION" \
    github.com/distribution/distribution/v3/cmd/registry
}

# `build-tools.sh registry`: only the registry (hack/images.sh pushes through one).
if [ "${1:-}" = registry ]; then
  build_registry
  echo "$bin"
  exit 0
fi

build_containerd() {
  # containerd, its runc shim and ctr, from one wrapper module. CGO off: the btrfs
  # snapshotter (the one plugin that needs cgo) is left out, as are devmapper and zfs;
  # node-0 uses overlayfs.
  local tools=(containerd containerd-shim-runc-v2 ctr) missing=0 t
  for t in "${tools[@]}"; do have "$t" "$CONTAINERD_VERSION" || missing=1; done
  if [ "$missing" = 1 ]; then
    log "building containerd $CONTAINERD_VERSION"
    local dir="$work/containerd-$CONTAINERD_VERSION" pkgs=()
    mkdir -p "$dir/out"
    printf 'module modelplane.local/containerd\n\ngo 1.26.0\n\nrequire github.com/containerd/containerd/v2 %s\n' \
      "$CONTAINERD_VERSION" >"$dir/go.mod"
    for t in "${tools[@]}"; do pkgs+=("github.com/containerd/containerd/v2/cmd/$t"); done
    (cd "$dir" && go build -trimpath -tags "no_btrfs no_devmapper no_zfs" \
      -ldflags "-s -w -X github.com/containerd/containerd/v2/version.Version=$CONTAINERD_VERSION" \
      -o out/ "${pkgs[@]}")
    for t in "${tools[@]}"; do mv "$dir/out/$t" "$bin/$t-$CONTAINERD_VERSION"; done
  fi
  for t in "${tools[@]}"; do link "$t" "$CONTAINERD_VERSION"; done
}

build_kstatus() {
  # Our own small helper (hack/kstatus/main.go) over the kstatus library; keyed by
  # the library version and the source's hash.
  local src="$here/kstatus/main.go"
  local key
  key="$KSTATUS_CLI_UTILS_VERSION-$(sha256sum "$src" | cut -c1-8)"
  have kstatus "$key" && { link kstatus "$key"; return; }
  log "building kstatus (cli-utils $KSTATUS_CLI_UTILS_VERSION)"
  local dir="$work/kstatus-$key"
  mkdir -p "$dir"
  cp "$src" "$dir/main.go"
  printf 'module modelplane.local/kstatus\n\ngo 1.26.0\n\nrequire sigs.k8s.io/cli-utils %s\n' \
    "$KSTATUS_CLI_UTILS_VERSION" >"$dir/go.mod"
  (cd "$dir" && go mod tidy >&2 && go build -trimpath -ldflags "-s -w" -o "$bin/kstatus-$key" .)
  link kstatus "$key"
}

build_coredns() {
  # A CoreDNS with only the plugins the local cluster uses (CoreDNS's documented way to
  # pick plugins at build time): far fewer modules than the full server.
  have coredns "$COREDNS_VERSION" && { link coredns "$COREDNS_VERSION"; return; }
  log "building coredns $COREDNS_VERSION"
  local dir="$work/coredns-$COREDNS_VERSION"
  mkdir -p "$dir"
  printf 'module modelplane.local/coredns\n\ngo 1.26.0\n\nrequire github.com/coredns/coredns %s\n' \
    "$COREDNS_VERSION" >"$dir/go.mod"
  cat >"$dir/main.go" <<'SRC'
package main

import (
	"github.com/coredns/coredns/core/dnsserver"
	"github.com/coredns/coredns/coremain"

	_ "github.com/coredns/coredns/plugin/bind"
	_ "github.com/coredns/coredns/plugin/cache"
	_ "github.com/coredns/coredns/plugin/errors"
	_ "github.com/coredns/coredns/plugin/health"
	_ "github.com/coredns/coredns/plugin/kubernetes"
	_ "github.com/coredns/coredns/plugin/ready"
)

func init() {
	// The order of CoreDNS's plugin.cfg, for the plugins built in.
	dnsserver.Directives = []string{"bind", "ready", "health", "errors", "cache", "kubernetes"}
}

func main() { coremain.Run() }
SRC
  (cd "$dir" && go mod tidy >&2 && go build -trimpath -ldflags "-s -w" -o "$bin/coredns-$COREDNS_VERSION" .)
  link coredns "$COREDNS_VERSION"
}

build_etcd
build_kubernetes kube-apiserver kube-controller-manager kube-scheduler kubectl
# The real node (node-0): same wrapper module, so a warm Go cache makes this ~1 minute.
build_kubernetes kubelet kube-proxy
build_coredns
# metrics-server reads the real kubelet's resource metrics (HorizontalPodAutoscaler tests).
build_module_tool metrics-server sigs.k8s.io/metrics-server "$METRICS_SERVER_VERSION" \
  sigs.k8s.io/metrics-server/cmd/metrics-server
build_module_tool kwok sigs.k8s.io/kwok "$KWOK_VERSION" sigs.k8s.io/kwok/cmd/kwok \
  "-X sigs.k8s.io/kwok/pkg/consts.Version=$KWOK_VERSION"
build_module_tool helm helm.sh/helm/v3 "$HELM_VERSION" helm.sh/helm/v3/cmd/helm \
  "-X helm.sh/helm/v3/internal/version.version=$HELM_VERSION"
# The local cluster's OCI registries (hack/localcluster/registries.py, images.py).
build_registry
build_containerd
build_kstatus
echo "$bin"
