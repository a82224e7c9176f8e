#!/usr/bin/env bash
# Builds the local control plane (etcd, kube-apiserver, kube-controller-manager,
# kube-scheduler, kubectl), kwok, helm and the real node's kubelet, kube-proxy, CoreDNS,
# metrics-server and containerd from the Go module proxy into a cache
# outside the repository. Each tool lands in $MODELPLANE_CACHE/bin/<tool>-<key>, the key
# of the pinned versions (hack/versions.env), and is rebuilt only when one of them
# changes. Prints the bin folder.
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

build_module_tool() { # build_module_tool NAME MODULE VERSION PACKAGE
  local name=$1 module=$2 version=$3 pkg=$4
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
    (cd "$dir" && go build -trimpath -ldflags "-s -w" -o "$bin/$name-$version.part" "$pkg")
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

# Every other tool comes from one wrapper module that requires them all, built by one
# `go build`. The tools share most of their dependencies (client-go, apimachinery, the
# Kubernetes API types, grpc, protobuf, otel) but each pins its own versions: built one by
# one, a cold cache compiled those libraries up to six times. In one module Go's minimum
# version selection picks one version of each (Kubernetes' staging modules are pinned to
# its release below), so each library compiles once. The binaries are keyed by every
# version and wrapper source together: one change rebuilds the set (quick with a warm
# Go build cache).
KUBERNETES_TOOLS=(kube-apiserver kube-controller-manager kube-scheduler kubectl kubelet kube-proxy)
CONTAINERD_TOOLS=(containerd containerd-shim-runc-v2 ctr)
GO_TOOLS=(etcd "${KUBERNETES_TOOLS[@]}" coredns metrics-server kwok helm "${CONTAINERD_TOOLS[@]}" kstatus)
# The commands of required modules, as go.mod `tool` lines: `go mod tidy` keeps what
# they need (a command cannot be imported, so without them tidy drops those modules).
GO_TOOL_PACKAGES=(
  "${KUBERNETES_TOOLS[@]/#/k8s.io/kubernetes/cmd/}"
  "${CONTAINERD_TOOLS[@]/#/github.com/containerd/containerd/v2/cmd/}"
  sigs.k8s.io/metrics-server/cmd/metrics-server sigs.k8s.io/kwok/cmd/kwok helm.sh/helm/v3/cmd/helm
)

go_tools_key() { # the versions, the wrapper sources and the Go release the set is built from
  {
    # Only the pins the module requires: a registry or kind bump leaves the set alone.
    printf '%s\n' "$KUBERNETES_VERSION" "$ETCD_VERSION" "$COREDNS_VERSION" "$METRICS_SERVER_VERSION" \
      "$KWOK_VERSION" "$HELM_VERSION" "$CONTAINERD_VERSION" "$KSTATUS_CLI_UTILS_VERSION"
    cat "$here/kstatus/main.go"
    declare -f write_go_tools_module go_tools_ldflags build_go_tools
    go env GOVERSION
  } | sha256sum | cut -c1-12
}

kubernetes_replaces() { # k8s.io/kubernetes requires its staging modules at v0.0.0 and
  # relies on replace lines in its own go.mod; a wrapper must pin each one itself.
  local staging="v0.${KUBERNETES_VERSION#v1.}"
  curl -fsSL "${GOPROXY_URL:-https://proxy.golang.org}/k8s.io/kubernetes/@v/$KUBERNETES_VERSION.mod" \
    | awk -v v="$staging" '$1 ~ /^k8s\.io\// && $2 == "v0.0.0" {printf "\t%s => %s %s\n", $1, $1, v}'
}

write_go_tools_module() { # write_go_tools_module DIR
  local dir=$1
  mkdir -p "$dir/etcd" "$dir/coredns" "$dir/kstatus"
  cat >"$dir/go.mod" <<MOD
module modelplane.local/tools

go 1.26.0

require (
	k8s.io/kubernetes $KUBERNETES_VERSION
	go.etcd.io/etcd/server/v3 $ETCD_VERSION
	github.com/coredns/coredns $COREDNS_VERSION
	sigs.k8s.io/metrics-server $METRICS_SERVER_VERSION
	sigs.k8s.io/kwok $KWOK_VERSION
	helm.sh/helm/v3 $HELM_VERSION
	github.com/containerd/containerd/v2 $CONTAINERD_VERSION
	sigs.k8s.io/cli-utils $KSTATUS_CLI_UTILS_VERSION
)

replace (
$(kubernetes_replaces)
)

tool (
$(printf '\t%s\n' "${GO_TOOL_PACKAGES[@]}")
)
MOD
  # The etcd server module carries replace directives, so it cannot be required for its
  # command; a main package that calls etcdmain can be built.
  cat >"$dir/etcd/main.go" <<'SRC'
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
SRC
  # A CoreDNS with only the plugins the local cluster uses (CoreDNS's documented way to
  # pick plugins at build time): far fewer packages than the full server.
  cat >"$dir/coredns/main.go" <<'SRC'
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
  # Our own small helper over the kstatus library.
  cp "$here/kstatus/main.go" "$dir/kstatus/main.go"
}

go_tools_ldflags() { # the version each tool reports; -X on a package a binary lacks is a no-op
  local minor=${KUBERNETES_VERSION#v1.} pkg flags="-s -w"
  minor=${minor%%.*}
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    flags+=" -X $pkg.gitVersion=$KUBERNETES_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
    flags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
  done
  flags+=" -X sigs.k8s.io/kwok/pkg/consts.Version=$KWOK_VERSION"
  flags+=" -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION"
  flags+=" -X github.com/containerd/containerd/v2/version.Version=$CONTAINERD_VERSION"
  echo "$flags"
}

build_go_tools() {
  local key t missing=0
  key=$(go_tools_key)
  for t in "${GO_TOOLS[@]}"; do have "$t" "$key" || missing=1; done
  if [ "$missing" = 1 ]; then
    log "building ${GO_TOOLS[*]} (set $key; cold: about 25 minutes on 2 cores)"
    local dir="$work/tools-$key"
    write_go_tools_module "$dir"
    # CGO is off, so containerd's btrfs snapshotter (the one plugin that needs cgo) is left
    # out by tag, as are devmapper and zfs: node-0 uses overlayfs. -dwarf=false: the
    # linker strips debug information anyway (-w), so the compiler need not write it.
    (
      cd "$dir"
      go mod tidy >&2
      mkdir -p out
      go build -trimpath -tags "no_btrfs no_devmapper no_zfs" -gcflags=all=-dwarf=false \
        -ldflags "$(go_tools_ldflags)" -o out/ ./etcd ./coredns ./kstatus "${GO_TOOL_PACKAGES[@]}"
      for t in "${GO_TOOLS[@]}"; do mv "out/$t" "$bin/$t-$key"; done
    )
    drop_older_go_tools "$key"
  fi
  for t in "${GO_TOOLS[@]}"; do link "$t" "$key"; done
}

drop_older_go_tools() { # drop_older_go_tools KEY: the previous set's binaries and build folder
  local previous t
  previous=$(cat "$bin/.go-tools" 2>/dev/null || true)
  if [ -n "$previous" ] && [ "$previous" != "$1" ]; then
    for t in "${GO_TOOLS[@]}"; do rm -f "$bin/$t-$previous"; done
    rm -rf "$work/tools-$previous"
  fi
  echo "$1" >"$bin/.go-tools"
}

build_go_tools
# The local cluster's OCI registries (hack/localcluster/registries.py, images.py).
build_registry
echo "$bin"
