#!/usr/bin/env bash
# `make image`: build the worker image with podman from Debian's packages alone, then run it
# against a real Apache Kafka on loopback. For machines with no registry to pull a base from:
#   1. the base is a debootstrapped Debian bookworm with its own Python 3.11, imported into podman;
#   2. deploy/Containerfile is built on it (torch from PyPI unless TORCH_INDEX says otherwise);
#   3. smoke test: a container runs `gopwatch serve` on the host's loopback network, a synthetic
#      stream is published, and the test waits for /readyz, a risk event and the HEALTHCHECK, then
#      stops the container with SIGTERM and expects a clean exit.
# Settings: TAG, BASE_TAG, TORCH_INDEX, MIRROR, CACHE (rootfs and logs), SMOKE=0 to skip step 3,
# LOCAL_CA (the host's own CA certificates, e.g. a TLS-inspecting egress proxy's: the base trusts
# them as the host does, or nothing can be fetched over HTTPS during the build).
set -euo pipefail
cd "$(dirname "$0")/.."

TAG=${TAG:-localhost/gopwatch:dev}
BASE_TAG=${BASE_TAG:-localhost/gopwatch-base:bookworm-py311}
TORCH_INDEX=${TORCH_INDEX:-https://pypi.org/simple}
MIRROR=${MIRROR:-http://deb.debian.org/debian}
CACHE=${CACHE:-.cache/image}
LOCAL_CA=${LOCAL_CA:-/usr/local/share/ca-certificates}
SMOKE=${SMOKE:-1}
GW=${GW:-.venv/bin/gopwatch}
say() { printf '\033[1m[image]\033[0m %s\n' "$*"; }

# This kind of VM mixes cgroup v1 and v2, which crun refuses; runc runs there. Its rlimits must
# stay under the host's hard ones, which podman's defaults (1,048,576 files) exceed.
RUNTIME=(--runtime "$(command -v runc)")
LIMITS=(--ulimit "nofile=$(ulimit -Hn):$(ulimit -Hn)" --ulimit nproc=4096:4096)

need() { command -v "$1" >/dev/null || { echo "image: $1 is missing (apt-get install $2)" >&2; exit 2; }; }
need podman podman
need runc runc
need debootstrap debootstrap
mkdir -p "$CACHE"

if ! podman image exists "$BASE_TAG"; then
  say "base: debootstrap bookworm (minbase, python3.11) into $CACHE/rootfs"
  rm -rf "$CACHE/rootfs"
  debootstrap --variant=minbase --include=python3,python3-venv,python-is-python3,ca-certificates \
    bookworm "$CACHE/rootfs" "$MIRROR" >"$CACHE/debootstrap.log"
  if compgen -G "$LOCAL_CA/*.crt" >/dev/null; then
    cp "$LOCAL_CA"/*.crt "$CACHE/rootfs/usr/local/share/ca-certificates/"
    chroot "$CACHE/rootfs" update-ca-certificates >/dev/null
  fi
  rm -rf "$CACHE"/rootfs/var/cache/apt/archives/*.deb "$CACHE"/rootfs/var/lib/apt/lists/*
  tar -C "$CACHE/rootfs" -c . | podman import --change 'CMD ["python3"]' - "$BASE_TAG" >/dev/null
  rm -rf "$CACHE/rootfs"
fi

say "build $TAG on $BASE_TAG (torch from $TORCH_INDEX)"
start=$(date +%s)
# docker format: the OCI image format has no HEALTHCHECK, and podman would drop it
podman build "${RUNTIME[@]}" "${LIMITS[@]}" --format docker --network host -f deploy/Containerfile \
  --build-arg "BASE=$BASE_TAG" --build-arg "TORCH_INDEX=$TORCH_INDEX" -t "$TAG" . >"$CACHE/build.log" 2>&1 \
  || { tail -n 30 "$CACHE/build.log"; exit 1; }
say "built in $(($(date +%s) - start)) s, $(podman image inspect "$TAG" --format '{{.Size}}' | numfmt --to=iec) ($CACHE/build.log)"
[[ "$SMOKE" == 1 ]] || exit 0

say "smoke: the image's user, entrypoint and help"
user=$(podman image inspect "$TAG" --format '{{.Config.User}}')
[[ "$user" == 10001 ]] || { echo "image: runs as '$user', expected 10001" >&2; exit 1; }
# without systemd podman logs that it cannot set the HEALTHCHECK's timer (harmless): kept apart
podman run "${RUNTIME[@]}" "${LIMITS[@]}" --rm "$TAG" --help >/dev/null 2>>"$CACHE/podman.log"

port=$("$(dirname "$GW")/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
# the image's own HEALTHCHECK probes 9464, so the smoke keeps that port (on loopback)
metrics=9464
if curl -s "http://127.0.0.1:$metrics/" >/dev/null 2>&1; then echo "image: 127.0.0.1:9464 is taken" >&2; exit 1; fi
work=$(mktemp -d)
name=gopwatch-smoke-$$
cleanup() {
  podman rm -f "$name" >/dev/null 2>&1 || true
  [[ -n "${broker:-}" ]] && kill "$broker" 2>/dev/null && wait "$broker" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

say "smoke: Apache Kafka on 127.0.0.1:$port"
"$GW" broker start --port "$port" --workdir "$work/kafka" >"$work/broker.out" 2>&1 &
broker=$!
for _ in $(seq 120); do grep -q "127.0.0.1:$port" "$work/broker.out" && break; sleep 1; done
"$GW" topics -b "127.0.0.1:$port" >/dev/null

say "smoke: the container serves (host network, loopback only)"
podman run "${RUNTIME[@]}" "${LIMITS[@]}" -d --name "$name" --network host \
  -e GOPWATCH_KAFKA_BOOTSTRAP="127.0.0.1:$port" -e GOPWATCH_METRICS_HOST=127.0.0.1 \
  -e GOPWATCH_METRICS_PORT="$metrics" "$TAG" serve >/dev/null 2>>"$CACHE/podman.log"
ready=""
for i in $(seq 180); do
  if curl -fsS "http://127.0.0.1:$metrics/readyz" >/dev/null 2>&1; then ready=$i; break; fi
  sleep 1
done
[[ -n "$ready" ]] || { podman logs --tail 20 "$name"; echo "image: /readyz never answered 200" >&2; exit 1; }
say "ready after about $ready s"

say "smoke: a synthetic stream with a risk in, events out"
# seed 3's first 30 s hold a red flash and a QR code; 360p keeps it quick
"$GW" synth --seed 3 --minutes 0.5 --width 640 --height 360 --out "$work/synth" >"$work/synth.log" 2>&1
"$GW" publish "$work/synth/synth-3/segments" -s smoke-3 -b "127.0.0.1:$port" >"$work/publish.log" 2>&1
events=$("$GW" tail --topic events --count 50 --timeout-s 60 -b "127.0.0.1:$port" 2>/dev/null \
  | grep -o '"category": *"[a-z_]*"' | cut -d'"' -f4 | sort | uniq -c | awk '{printf " %s x%s", $2, $1}' || true)
[[ -n "$events" ]] || { podman logs --tail 20 "$name"; echo "image: no event came out" >&2; exit 1; }
say "event records:$events"
curl -fsS "http://127.0.0.1:$metrics/metrics" | grep '^gopwatch_segments_total' || true

say "smoke: HEALTHCHECK and SIGTERM"
podman healthcheck run "$name"
podman stop -t 30 "$name" >/dev/null 2>>"$CACHE/podman.log"
code=$(podman inspect "$name" --format '{{.State.ExitCode}}')
[[ "$code" == 0 ]] || { podman logs --tail 20 "$name"; echo "image: exit code $code after SIGTERM" >&2; exit 1; }
say "ok: $TAG built, served, published an event and stopped cleanly"
