#!/usr/bin/env bash
# `make images`: builds modelplane's images (runtime, storage-initializer, operator, torchserve)
# and the real node's pod sandbox image (hack/pause)
# from the repository's own Dockerfiles without a Docker engine and without Docker Hub:
#   - the base is a local image equivalent to python:3.11-slim-bookworm, made from Debian
#     packages with debootstrap;
#   - buildah (daemonless) builds each Dockerfile from it;
#   - pip installs from a wheelhouse downloaded on the host (inside a build step the
#     registries' certificate is trusted only by the host's CA bundle, which must never be
#     baked into an image), mounted read-only into the build.
# Each image is tagged by the hash of everything it is built from and pushed once into
# the image store, a registry whose storage lives in $MODELPLANE_CACHE/images/registry
# (hack/localcluster/imagestore.py), so a warm run rebuilds and pushes nothing. The real
# node's containerd pulls from that store, served read-only on node-0's address; when that
# containerd is running, this script has it pull them at once.
# Writes $MODELPLANE_CACHE/images/images.env with the image references.
set -euo pipefail
shopt -s inherit_errexit  # a failed build inside $(...) fails the script
cd "$(dirname "$0")/.."
cache=${MODELPLANE_CACHE:-$HOME/.cache/modelplane}
images="$cache/images"
wheels="$cache/wheelhouse"
py=${PY:-$cache/venv/bin/python}
mkdir -p "$images" "$wheels"
log() { printf '[images] %s\n' "$*" >&2; }
if [ "$(id -u)" != 0 ]; then
  # Without root there is no real node to run them either (tests/*/node skip).
  [ "${MODELPLANE_REAL_NODE:-}" = 1 ] && { echo "make images needs root (buildah, overlay)" >&2; exit 1; }
  log "not root: no images built (the real node needs root too)"
  exit 0
fi
bash hack/node-prereqs.sh
# The image store's registry is needed only at the first push: cold, its Go build runs
# beside the base image, the wheelhouse and the first image build instead of before them
# (the writer below waits for it: build-tools.sh holds a lock while it builds).
bash hack/build-tools.sh registry >/dev/null &

# buildah's own storage in the cache (layers are reused across builds: --layers).
bud() { buildah --storage-driver overlay --root "$cache/buildah/root" --runroot /run/modelplane-buildah "$@"; }

# ---------------------------------------------------------------- the base image
# Debian bookworm's python3 (3.11.2) with venv and CA certificates: what the Dockerfiles
# need of python:3.11-slim-bookworm. Keyed by the package list.
BASE_PACKAGES="python3,python3-venv,python-is-python3,ca-certificates,libstdc++6"
base_key=$(printf 'bookworm %s' "$BASE_PACKAGES" | sha256sum | cut -c1-12)
base_image="localhost/modelplane/python:3.11-bookworm-$base_key"
if ! bud inspect --type image "$base_image" >/dev/null 2>&1; then
  log "base image $base_image (debootstrap bookworm: $BASE_PACKAGES)"
  root="$images/base-rootfs"
  rm -rf "$root"
  debootstrap --variant=minbase --include="$BASE_PACKAGES" bookworm "$root" http://deb.debian.org/debian >&2
  chroot "$root" apt-get clean
  rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*
  tar -C "$root" -cf "$images/base-rootfs.tar" .
  ctr=$(bud from scratch)
  bud add "$ctr" "$images/base-rootfs.tar" / >/dev/null
  bud config --env LANG=C.UTF-8 --cmd python3 "$ctr"
  bud commit --rm "$ctr" "$base_image" >/dev/null
  rm -rf "$root" "$images/base-rootfs.tar"
fi

# ------------------------------------------------------------------ the wheelhouse
# Everything the images pip-install, for CPython 3.11 on x86-64 Linux (the same
# wheels the host's 3.11 uses). PyPI's torch is the CUDA build: the CPU index is not
# reachable here, so TORCH_INDEX_URL is a build argument (docs/images.md).
torch_version=$(sed -n 's/.*"torch==\([^"]*\)".*/\1/p' pyproject.toml | head -1)
wheel_key=$(cat pyproject.toml | sha256sum | cut -c1-12)
extras() { # extras NAME...: the requirements of those extras of pyproject.toml
  "$py" -c 'import sys, tomllib
extras = tomllib.load(open("pyproject.toml", "rb"))["project"]["optional-dependencies"]
print("\n".join(r for name in sys.argv[1:] for r in extras[name]))' "$@"
}
if [ ! -e "$wheels/.complete-$wheel_key" ]; then
  log "wheelhouse for pyproject.toml $wheel_key"
  # The runtime's and operator's closure pinned to what the venv resolved (make venv): no
  # second resolution, the same versions. The storage extras (s3fs, gcsfs: not in the
  # venv) resolve on their own; their image installs nothing else.
  "$py" -m pip download --quiet --dest "$wheels" --only-binary=:all: \
    -c <("$py" -m pip freeze --exclude-editable) \
    "setuptools>=77" wheel "torch==$torch_version" -r <(extras runtime operator torchserve) >&2
  "$py" -m pip download --quiet --dest "$wheels" --only-binary=:all: \
    -r <(extras storage s3 gcs) >&2
  touch "$wheels/.complete-$wheel_key"
fi

# --------------------------------------------------------------------- the images
sources_hash() { # the content every image copies (its dockerignore keeps only these)
  find pyproject.toml operator/modelplane_operator runtime/modelplane_runtime runtime/modelplane_oci runtime/torchserve \
    -type f ! -path '*__pycache__*' ! -name '*.pyc' -print0 | sort -z | xargs -0 sha256sum | sha256sum | cut -c1-12
}
src=$(sources_hash)

# ------------------------------------------------------------------ disk space
# The runtime image carries torch's CUDA libraries: building it needs its venv once in
# buildah's storage, once in the image store and once more in containerd's store. A cache
# that keeps older builds besides fills a CI disk, so older builds go before a new one.
GIB=$((1 << 30))
ROOM_GIB_RUNTIME=${ROOM_GIB_RUNTIME:-24}
ROOM_GIB_OTHER=${ROOM_GIB_OTHER:-2}
free_gib() { echo $(( $(df --output=avail -B1 "$cache" | tail -1) / GIB )); }
last_deps="$cache/buildah/last-wheel-key"

older_builds() { # older_builds NAME TAG: buildah's other tags of NAME
  bud images --format '{{.Name}}:{{.Tag}}' | grep "^localhost/modelplane/$1:" | grep -v ":$2\$" || true
}

make_room() { # make_room NAME TAG: drop what older builds of NAME hold; fail clearly if short
  local name=$1 tag=$2 old
  rm -f "$images/$name-"*.oci.tar
  # New dependencies: older builds and their cached layers (unnamed parents) are useless.
  # With the same dependencies they stay until the new build is made, since removing an
  # image removes its unnamed parents too: the dependency layer the new build reuses.
  if [ "$(cat "$last_deps" 2>/dev/null)" != "$wheel_key" ]; then
    old=$(older_builds "$name" "$tag")
    [ -z "$old" ] || bud rmi $old >/dev/null 2>&1 || true
    bud rmi --prune >/dev/null 2>&1 || true
  fi
  local need=$ROOM_GIB_OTHER
  [ "$name" != runtime ] || need=$ROOM_GIB_RUNTIME
  if [ "$(free_gib)" -lt "$need" ]; then
    log "not enough disk for the $name image: $(free_gib) GiB free under $cache, about $need GiB needed"
    du -sh "$cache"/* 2>/dev/null | sort -h | tail -6 | sed 's/^/[images]   /' >&2
    exit 1
  fi
}

# ------------------------------------------------------------------ the image store
# A writer instance over the store's storage, on a free port, started at the first push
# (buildah skips the layers the store has); the cluster's instance serves it read-only.
store_state="$images/.writer"
store_host=$("$py" -c 'import sys; sys.path.insert(0, "hack")
from localcluster import imagestore; print(imagestore.host())')
writer() { # prints the writer's address, starting it when needed
  if [ ! -s "$store_state/address" ]; then
    local registry
    registry="$(bash hack/build-tools.sh registry)/registry"
    mkdir -p "$store_state"
    local address
    address=$("$py" -c 'import sys; sys.path.insert(0, "hack")
from pathlib import Path
from localcluster import imagestore, processes
address = f"127.0.0.1:{processes.free_port()}"
imagestore.write_config(Path(sys.argv[1]), address, read_only=False)
print(address)' "$store_state/config.yml")
    "$registry" serve "$store_state/config.yml" >"$store_state/log" 2>&1 &
    echo $! >"$store_state/pid"
    for _ in $(seq 100); do
      curl -fsS "http://$address/v2/" >/dev/null 2>&1 && break
      sleep 0.1
    done
    echo "$address" >"$store_state/address"
  fi
  cat "$store_state/address"
}
stop_writer() { # then collect what older tags left (no writer may run meanwhile)
  [ -s "$store_state/pid" ] || return 0
  local pid
  pid=$(cat "$store_state/pid")
  kill "$pid" 2>/dev/null || true
  for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  "$(bash hack/build-tools.sh registry)/registry" garbage-collect --delete-untagged \
    "$store_state/config.yml" >>"$store_state/log" 2>&1 || log "garbage collection failed: $store_state/log"
  rm -rf "$store_state"
}
rm -rf "$store_state"  # a writer an interrupted run left is gone with that run's shell
trap stop_writer EXIT

push() { # push REF NAME TAG: into the store, uncompressed (loopback: gzip would only cost CPU)
  local address
  address=$(writer)
  bud push --quiet --tls-verify=false --disable-compression "$1" "docker://$address/modelplane/$2:$3"
}

build() { # build NAME DOCKERFILE TARGET -> prints the image reference
  local name=$1 dockerfile=$2 target=$3
  local tag
  tag=$(printf '%s %s %s %s %s' "$src" "$base_image" "$target" \
    "$(sha256sum "$dockerfile" "$dockerfile.dockerignore" | cut -c1-64 | tr '\n' ' ')" "$wheel_key" \
    | sha256sum | cut -c1-12)
  local ref="localhost/modelplane/$name:$tag" pushed="$images/$name-$tag.pushed"
  if [ ! -e "$pushed" ]; then
    local t0=$SECONDS
    if ! bud inspect --type image "$ref" >/dev/null 2>&1; then
      make_room "$name" "$tag"
      log "building $ref ($dockerfile, target $target)"
      bud bud --layers --isolation chroot --network host --quiet \
        -f "$dockerfile" --ignorefile "$dockerfile.dockerignore" ${target:+--target "$target"} \
        --build-arg PYTHON_IMAGE="$base_image" \
        --build-arg TORCH_INDEX_URL=https://pypi.org/simple \
        --build-arg PIP_NO_INDEX=1 --build-arg PIP_FIND_LINKS=/wheels \
        -v "$wheels:/wheels:ro" -t "$ref" . >/dev/null
    fi
    log "pushing $ref to the image store"
    push "$ref" "$name" "$tag"
    rm -f "$images/$name-"*.pushed "$images/$name-"*.oci.tar
    touch "$pushed"
    printf '%s %s %s\n' "$name" "$tag" "$((SECONDS - t0))" >>"$images/build-times.log"
    local old
    old=$(older_builds "$name" "$tag")
    [ -z "$old" ] || bud rmi $old >/dev/null 2>&1 || true
  fi
  echo "$store_host/modelplane/$name:$tag"
}

pause_image() { # the pod sandbox process (hack/pause), a static Go binary in an empty image
  local tag
  tag=$(cat hack/pause/main.go hack/pause/go.mod | sha256sum | cut -c1-12)
  local ref="localhost/modelplane/pause:$tag" pushed="$images/pause-$tag.pushed"
  if [ ! -e "$pushed" ]; then
    if ! bud inspect --type image "$ref" >/dev/null 2>&1; then
      log "building $ref"
      (cd hack/pause && CGO_ENABLED=0 GOTOOLCHAIN=local go build -trimpath -ldflags "-s -w" -o "$images/pause" .)
      local ctr
      ctr=$(bud from scratch)
      bud copy "$ctr" "$images/pause" /pause >/dev/null
      bud config --entrypoint '["/pause"]' --user 65535:65535 "$ctr"
      bud commit --rm --quiet "$ctr" "$ref" >/dev/null
    fi
    push "$ref" pause "$tag"
    rm -f "$images/pause-"*.pushed "$images/pause-"*.oci.tar
    touch "$pushed"
  fi
  echo "$store_host/modelplane/pause:$tag"
}

# The runtime first: its build is the longest, and its push is the first use of the store.
runtime=$(build runtime runtime/Dockerfile runtime)
pause=$(pause_image)
storage=$(build storage-initializer runtime/Dockerfile storage)
torchserve=$(build torchserve runtime/Dockerfile torchserve)
operator=$(build operator operator/Dockerfile "")
mkdir -p "$(dirname "$last_deps")" && echo "$wheel_key" >"$last_deps"
cat >"$images/images.env" <<ENV
MODELPLANE_PAUSE_IMAGE=$pause
MODELPLANE_RUNTIME_IMAGE=$runtime
MODELPLANE_STORAGE_IMAGE=$storage
MODELPLANE_OPERATOR_IMAGE=$operator
MODELPLANE_TORCHSERVE_IMAGE=$torchserve
ENV
log "images: $runtime $storage $operator $torchserve"

# Older tags leave the store: deleted through the writer, their blobs collected on exit.
if [ -s "$store_state/address" ]; then
  "$py" -c 'import sys; sys.path.insert(0, "hack")
from localcluster import imagestore
for ref in imagestore.prune(sys.argv[1], dict(a.split("=") for a in sys.argv[2:])):
    print(f"[images] dropped {ref} from the image store", file=sys.stderr)' "$(cat "$store_state/address")" \
    "pause=${pause##*:}" "runtime=${runtime##*:}" "storage-initializer=${storage##*:}" "operator=${operator##*:}" "torchserve=${torchserve##*:}"
fi
stop_writer

# The real node's containerd, when it runs, pulls them now (else at node start).
if [ -S /run/modelplane/containerd/containerd.sock ]; then
  "$py" hack/cluster.py pull-images
fi
echo "$images/images.env"
