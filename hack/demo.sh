#!/usr/bin/env bash
# The README's first command (`make demo`): on a fresh machine, sets everything up,
# starts the local cluster (simulated CPU and GPU nodes, one real node), installs the Helm chart,
# runs the operator with the chart's ServiceAccount and
# serves a ModelDeployment, then upgrades it and shows what a GPU shortage looks like.
set -euo pipefail
cd "$(dirname "$0")/.."
export MODELPLANE_CACHE=${MODELPLANE_CACHE:-$HOME/.cache/modelplane}
step() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }

step "Python environment ($MODELPLANE_CACHE/venv)"
make --no-print-directory venv
py="$MODELPLANE_CACHE/venv/bin/python"

step "Control-plane and node binaries (built once into $MODELPLANE_CACHE/bin; cold build ~20 min)"
bash hack/build-tools.sh

step "Images: runtime, storage initializer, operator (buildah, no Docker; cached by content)"
bash hack/images.sh

step "Local cluster: etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kwok, and the real node-0"
"$py" hack/cluster.py up
kubeconfig=$("$py" hack/cluster.py kubeconfig)
kubectl() { "$MODELPLANE_CACHE/bin/kubectl" --kubeconfig "$kubeconfig" "$@"; }
kubectl version

step "Nodes: CPU nodes, and GPU nodes handing GPUs out as extended resources (whole, MIG, shared) or DRA devices"
kubectl get nodes -o custom-columns='NAME:.metadata.name,TYPE:.metadata.labels.node\.kubernetes\.io/instance-type,GPUS:.status.allocatable.nvidia\.com/gpu,MIG-1G:.status.allocatable.nvidia\.com/mig-1g\.10gb,SHARED:.status.allocatable.nvidia\.com/gpu\.shared,PRODUCT:.metadata.labels.nvidia\.com/gpu\.product,TAINT:.spec.taints[*].key'
kubectl get resourceslices,deviceclasses

step "Helm chart: the operator's ServiceAccount, least-privilege RBAC, Deployment and metrics Service"
helm() { "$MODELPLANE_CACHE/bin/helm" --kubeconfig "$kubeconfig" "$@"; }
# The CRD comes from crds/ (the cluster may hold it from earlier runs, outside Helm).
helm upgrade --install demo charts/modelplane -n modelplane-demo --create-namespace \
  --set crds.enabled=false --wait --timeout=120s
kubectl -n modelplane-demo get deploy,sa,svc -l app.kubernetes.io/instance=demo

step "The operator: its pod above is simulated, so the same operator runs here with the chart's ServiceAccount token"
oplog="$MODELPLANE_CACHE/clusters/modelplane/operator.log"
MODELPLANE_OPERATOR_SA=modelplane-demo/demo-modelplane-operator \
  "$py" hack/run-operator.py --metrics-port=0 --health-port=18181 >"$oplog" 2>&1 &
operator_pid=$!
trap 'kill $operator_pid 2>/dev/null || true' EXIT
for _ in $(seq 60); do curl -fs http://127.0.0.1:18181/healthz >/dev/null && break; sleep 0.5; done
echo "operator running (log: $oplog)"

step "A ModelDeployment: 2 replicas, 1 GPU each"
kubectl create namespace demo --dry-run=client -o yaml | kubectl apply -f - >/dev/null
kubectl -n demo apply -f examples/modeldeployment.yaml
kubectl -n demo wait --for=condition=Ready md/resnet --timeout=60s
kubectl -n demo get md resnet -o wide
kubectl -n demo get deploy,svc,pods -l modelplane.io/deployment=resnet -o wide

step "Upgrade to version 1.1.0: a new revision, rolled out with capacity kept (maxUnavailable 0)"
kubectl -n demo patch md resnet --type=merge -p '{"spec":{"model":{"version":"1.1.0","uri":"s3://models/resnet/1.1.0"}}}'
kubectl -n demo wait --for=jsonpath='{.status.currentVersion}'=1.1.0 md/resnet --timeout=60s
kubectl -n demo get md resnet -o wide
kubectl -n demo get deploy -l modelplane.io/deployment=resnet

step "Version 1.2.0 crashes (simulated): the operator rolls back to 1.1.0 by itself; the spec stays"
kubectl -n demo patch md resnet --type=merge -p '{"spec":{"model":{"version":"1.2.0","uri":"s3://models/resnet/1.2.0"},"pod":{"labels":{"sim.modelplane.io/fail":"crash"}}}}'
kubectl -n demo wait --for=jsonpath='{.status.conditions[?(@.type=="Ready")].reason}'=RolledBack md/resnet --timeout=60s
kubectl -n demo get md resnet -o wide
echo "spec.model.version is still: $(kubectl -n demo get md resnet -o jsonpath='{.spec.model.version}')"
kubectl -n demo get md resnet -o jsonpath='{range .status.conditions[*]}  {.type}={.status} {.reason}{"\n"}{end}'

step "Declarative rollback: back to version 1.0.0 reuses kept revision 1"
kubectl -n demo patch md resnet --type=json -p '[{"op":"remove","path":"/spec/pod"},{"op":"replace","path":"/spec/model/version","value":"1.0.0"},{"op":"replace","path":"/spec/model/uri","value":"s3://models/resnet/1.0.0"}]'
kubectl -n demo wait --for=jsonpath='{.status.currentVersion}'=1.0.0 md/resnet --timeout=60s
kubectl -n demo get md resnet -o wide
kubectl -n demo get deploy -l modelplane.io/deployment=resnet
echo "history:"
kubectl -n demo get md resnet -o jsonpath='{range .status.history[*]}  revision {.revision}: {.version} {.outcome}{"\n"}{end}'

step "Asking for more GPUs than any node has: the status says why"
kubectl -n demo patch md resnet --type=merge -p '{"spec":{"replicas":3,"runtime":{"gpu":{"count":4}}}}'
kubectl -n demo wait --for=jsonpath='{.status.conditions[?(@.type=="Ready")].reason}'=InsufficientGPU md/resnet --timeout=60s
kubectl -n demo get md resnet
kubectl -n demo get md resnet -o jsonpath='{.status.conditions[?(@.type=="Ready")].message}{"\n"}'

step "Back to one GPU per replica"
kubectl -n demo patch md resnet --type=merge -p '{"spec":{"replicas":2,"runtime":{"gpu":{"count":1}}}}'
kubectl -n demo wait --for=condition=Ready md/resnet --timeout=60s
kubectl -n demo get md resnet
kubectl -n demo get events --field-selector involvedObject.kind=ModelDeployment --sort-by=.lastTimestamp | tail -8

step "GPUs through DRA: each pod gets its own ResourceClaim, allocated by the scheduler from dra-0's ResourceSlice"
kubectl -n demo apply -f examples/gpu-device-claim.yaml
kubectl -n demo wait --for=condition=Ready md/llm-dra --timeout=90s
kubectl -n demo get md llm-dra -o wide
kubectl -n demo get resourceclaimtemplates,resourceclaims
kubectl -n demo get md llm-dra -o jsonpath='allocated: {.status.gpuAllocation.allocated} x {.status.gpuAllocation.products[*]}{"\n"}'
kubectl -n demo delete md llm-dra --wait=true >/dev/null

step "The same runtime as a local process (no cluster): modelplane package, storage initializer, inference"
"$py" hack/demo_inference.py

# The real part: modelplane's images in real pods on node-0, a Service, a rollout under load.
"$py" hack/demo_node.py

step "Done"
echo "The cluster keeps running:  export KUBECONFIG=$kubeconfig"
echo "Run the operator again:     make operator"
echo "Stop the cluster:           make cluster-down"
