#!/usr/bin/env bash
# For users with a Docker engine: a kind cluster shaped like the local test cluster, with
# modelplane's images built and loaded.
# kind runs real kubelets, so there are no simulated pod failures; one worker gets
# fake nvidia.com/gpu capacity (a status patch), the GPU product label and taint,
# so GPU scheduling behaves as on a GPU node. Then run the tests against it:
#   MODELPLANE_TEST_KUBECONFIG=$(bash hack/kind.sh) make test
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
source "$here/versions.env"
cache=${MODELPLANE_CACHE:-$HOME/.cache/modelplane}
name=${KIND_CLUSTER_NAME:-modelplane}
kind="$cache/bin/kind-$KIND_VERSION"
kubeconfig="$cache/kind-$name.kubeconfig"

docker info >/dev/null 2>&1 || { echo "kind needs a running Docker engine" >&2; exit 1; }
if [ ! -x "$kind" ]; then
  mkdir -p "$cache/bin"
  GOTOOLCHAIN=local CGO_ENABLED=0 GOBIN="$cache/build/kind-bin" go install "sigs.k8s.io/kind@$KIND_VERSION" >&2
  mv "$cache/build/kind-bin/kind" "$kind"
fi
bash "$here/build-tools.sh" >/dev/null  # kubectl

if ! "$kind" get clusters 2>/dev/null | grep -qx "$name"; then
  printf 'kind: Cluster\napiVersion: kind.x-k8s.io/v1alpha4\nnodes:\n- role: control-plane\n- role: worker\n- role: worker\n' \
    | "$kind" create cluster --name "$name" --kubeconfig "$kubeconfig" --config - >&2
fi
"$kind" get kubeconfig --name "$name" >"$kubeconfig"

# modelplane's images, built from the repository's Dockerfiles and loaded into the kind
# nodes under the names the chart and the operator default to (pull policy IfNotPresent),
# so `helm install` and CPU ModelDeployments need no registry. Docker's layer cache makes
# a warm run quick. The CUDA runtime image (runtime/Dockerfile.cuda) is not built here.
version=$(sed -n 's/^version = "\(.*\)"/\1/p' "$here/../pyproject.toml")
build() { # build TAG DOCKERFILE [TARGET]
  docker build -q -f "$here/../$2" ${3:+--target "$3"} -t "$1" "$here/.." >&2
  "$kind" load docker-image --name "$name" "$1" >&2
}
build "ghcr.io/modelplane/runtime:$version" runtime/Dockerfile runtime
build "ghcr.io/modelplane/storage-initializer:$version" runtime/Dockerfile storage
build "ghcr.io/modelplane/operator:$version" operator/Dockerfile
kubectl() { "$cache/bin/kubectl" --kubeconfig "$kubeconfig" "$@"; }
gpu_node=$(kubectl get nodes -l '!node-role.kubernetes.io/control-plane' -o jsonpath='{.items[0].metadata.name}')
kubectl patch node "$gpu_node" --subresource=status --type=merge \
  -p '{"status":{"capacity":{"nvidia.com/gpu":"4"},"allocatable":{"nvidia.com/gpu":"4"}}}' >&2
kubectl label node "$gpu_node" --overwrite nvidia.com/gpu.present=true \
  nvidia.com/gpu.product=NVIDIA-A100-SXM4-80GB nvidia.com/gpu.count=4 >&2
kubectl taint node "$gpu_node" --overwrite nvidia.com/gpu=present:NoSchedule >&2
echo "$kubeconfig"
