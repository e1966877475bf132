#!/usr/bin/env bash
# Build docker/Dockerfile's CPU variant on this machine and run the suite's checks inside it,
# with no Docker daemon and no container registry: podman builds the image (chroot
# isolation), debootstrap makes its Debian base from the package mirror, and buildah runs
# `make test-fast` and `python tools/demo.py --quick` in the image, as its non-root user, with
# the demo's tables written to a mounted folder on the host.
#
#   bash tools/docker_check.sh                      # build (cached layers) + both checks
#   DETECTRON2_SRC=~/src/detectron2 bash tools/docker_check.sh   # offline: a git checkout
#                                                   # or mirror holding the pinned commit
#
# The CUDA image (the default of the same Dockerfile) needs a GPU machine with Docker:
# docker/compose.yaml. Environment:
#   VICREGL_DOCKER_OUT  host folder for the checks' outputs and logs (default:
#                       work_dirs/docker_check in this clone); it gets docker_check.json with
#                       the timings, the logs, and demo_quick/ (the demo's tables)
#   DETECTRON2_SRC      a git repository (work tree or bare mirror) that has the pinned
#                       DETECTRON2_COMMIT; without it the build clones GitHub
#   DEBIAN_MIRROR       debootstrap's mirror (default http://deb.debian.org/debian)
#   MAX_JOBS            compile jobs in the build (default: all cores)
#   CHECKS              what to run inside: "test-fast demo" (default), or a subset
# Cached between runs: the base image, the image's layers (a code change rebuilds only the
# project layer) and the mmcv wheel (a build cache mount). Cold, on 2 cores: about
# 18 minutes; warm: about 5 (docs/suites.md has the measured times).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out="${VICREGL_DOCKER_OUT:-$root/work_dirs/docker_check}"
mirror="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
jobs="${MAX_JOBS:-$(nproc)}"
checks="${CHECKS:-test-fast demo}"
suite="bookworm"
# this machine's own CAs (an intercepting proxy's, say) go into the base: the tag follows them
cas=(/usr/local/share/ca-certificates/*.crt)
[ -e "${cas[0]}" ] || cas=()
ca_key="$(cat /dev/null "${cas[@]}" | sha256sum | cut -c1-8)"
base="localhost/vicregl-base:debian-$suite-$ca_key"
torch="$(sed -n 's/^torch==\(.*\)$/\1/p' "$root/requirements/pretrain.txt")"
image="localhost/vicregl-suite:torch$torch-cpu"
commit="$(sed -n 's/^DETECTRON2_COMMIT = "\([0-9a-f]\{40\}\)".*/\1/p' \
  "$root/transfer/detectron2_pin.py")"
uid="$(sed -n 's/^ARG USER_UID=\([0-9]*\)$/\1/p' "$root/docker/Dockerfile")"

log() { echo "[docker_check] $*" >&2; }
die() { log "error: $*"; exit 1; }
now() { date +%s; }

for check in $checks; do
  case "$check" in test-fast|demo) ;; *) die "CHECKS: unknown check '$check' (test-fast, demo)";; esac
done
[ -n "$commit" ] || die "no DETECTRON2_COMMIT in transfer/detectron2_pin.py"
[ -n "$uid" ] || die "docker/Dockerfile has no 'ARG USER_UID=<number>'"

# 1. The tools: Debian packages (podman brings buildah's engine; buildah runs the checks).
missing=()
for tool in podman buildah debootstrap; do
  command -v "$tool" >/dev/null || missing+=("$tool")
done
if [ "${#missing[@]}" -gt 0 ]; then
  [ "$(id -u)" = 0 ] || die "${missing[*]} missing; install them (apt-get install podman buildah debootstrap) or run as root"
  log "installing ${missing[*]}"
  apt-get update -q >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
    podman buildah debootstrap >&2
fi

mkdir -p "$out"
timings="$out/docker_check.json"
declare -A seconds=()

# 2. The base image: a minimal Debian from the package mirror (no registry).
start=$(now)
if podman image exists "$base"; then
  log "base image $base exists"
else
  rootfs="$(mktemp -d)"
  trap 'rm -rf "$rootfs"' EXIT
  log "debootstrap $suite from $mirror into $rootfs"
  debootstrap --variant=minbase "$suite" "$rootfs" "$mirror" > "$out/debootstrap.log" 2>&1 \
    || die "debootstrap failed: $out/debootstrap.log"
  # the image's apt reads the same mirror; its ca-certificates package adds these CAs
  echo "deb $mirror $suite main" > "$rootfs/etc/apt/sources.list"
  if [ "${#cas[@]}" -gt 0 ]; then
    mkdir -p "$rootfs/usr/local/share/ca-certificates"
    cp "${cas[@]}" "$rootfs/usr/local/share/ca-certificates/"
  fi
  tar -C "$rootfs" -c . | podman import --change 'CMD ["/bin/bash"]' - "$base" >&2
  rm -rf "$rootfs"
  trap - EXIT
fi
seconds[base]=$(( $(now) - start ))

# 3. detectron2's source at the pinned commit, exported from the given repository.
build_args=(--build-arg "BASE_IMAGE=$base" --build-arg OPS=cpu
            --build-arg "MAX_JOBS=$jobs")
d2="$out/detectron2-src"  # the export, mounted into the build; removed after it
rm -rf "$d2"
if [ -n "${DETECTRON2_SRC:-}" ]; then
  git -C "$DETECTRON2_SRC" cat-file -e "$commit^{commit}" 2>/dev/null \
    || die "DETECTRON2_SRC=$DETECTRON2_SRC is not a git repository holding commit $commit"
  mkdir -p "$d2"
  git -C "$DETECTRON2_SRC" archive "$commit" | tar -x -C "$d2"
  build_args+=(-v "$d2:/opt/detectron2-src:ro" --build-arg DETECTRON2_SRC=/opt/detectron2-src)
fi

# 4. The image: the CPU variant of the one Dockerfile (its layers are podman's cache).
start=$(now)
log "building $image (log: $out/build.log)"
if ! podman build --isolation chroot --layers -f "$root/docker/Dockerfile" \
    --ignorefile "$root/docker/Dockerfile.dockerignore" "${build_args[@]}" \
    -t "$image" "$root" > "$out/build.log" 2>&1; then
  tail -n 30 "$out/build.log" >&2
  rm -rf "$d2"
  die "the build failed: $out/build.log"
fi
seconds[build]=$(( $(now) - start ))
rm -rf "$d2"

# 5. The checks, in the image as its user. podman run needs cgroups and rlimits that some
#    machines refuse; buildah's chroot isolation needs neither.
container="$(buildah from --pull-never "$image")"
trap 'buildah rm "$container" >/dev/null 2>&1 || true' EXIT
chown "$uid:$uid" "$out" 2>/dev/null || chmod a+rwx "$out"
inside() {  # inside NAME COMMAND...: run in the container, log to $out/NAME.log, time it
  local name="$1" start status=0
  shift
  start=$(now)
  log "$name: $* (log: $out/$name.log)"
  buildah run --isolation chroot --user "$uid:$uid" -v "$out:/work_dirs" "$container" -- \
    "$@" > "$out/$name.log" 2>&1 || status=$?
  seconds[$name]=$(( $(now) - start ))
  tail -n 5 "$out/$name.log" >&2
  [ "$status" = 0 ] || die "$name failed (exit $status): $out/$name.log"
}
for check in $checks; do
  case "$check" in
    test-fast) inside test-fast make test-fast ;;
    demo) rm -rf "$out/demo_quick"
          inside demo python tools/demo.py --quick --out /work_dirs/demo_quick ;;
  esac
done

{
  echo "{"
  echo "  \"image\": \"$image\", \"image_id\": \"$(podman image inspect --format '{{.Id}}' "$image")\","
  echo "  \"commit\": \"$(git -C "$root" rev-parse HEAD 2>/dev/null || echo unknown)\","
  echo "  \"cores\": $(nproc),"
  echo "  \"seconds\": {$(for k in "${!seconds[@]}"; do printf '"%s": %s, ' "$k" "${seconds[$k]}"; done | sed 's/, $//')}"
  echo "}"
} > "$timings"
log "passed: $(tr -d '\n' < "$timings")"
