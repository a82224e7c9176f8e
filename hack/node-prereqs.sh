#!/usr/bin/env bash
# What the real node (node-0) and `make images` need from Debian's packages: runc, the
# CNI plugins, iptables and conntrack (kube-proxy), buildah (daemonless
# image builds), debootstrap (the local base image) and apache2-utils (htpasswd, for
# the private registry). containerd is not among them: node-0 runs containerd 2.x, built
# from Go modules by hack/build-tools.sh. Installs only what is missing,
# and only as root; elsewhere it says what is missing and the real node stays off.
set -euo pipefail
need=()
for pair in runc:runc iptables:iptables conntrack:conntrack \
            buildah:buildah debootstrap:debootstrap htpasswd:apache2-utils; do
  command -v "${pair%%:*}" >/dev/null || need+=("${pair#*:}")
done
[ -x /usr/lib/cni/bridge ] || need+=(containernetworking-plugins)
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" != 0 ]; then
  echo "[node-prereqs] not root: the real node needs ${need[*]} (apt-get install); it stays off" >&2
  exit 0
fi
echo "[node-prereqs] installing ${need[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get install -y -qq "${need[@]}" >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq "${need[@]}" >/dev/null; }
