#!/usr/bin/env bash
# `make test-container`: the Dockerfile and compose.yaml, built and run for real with rootful
# podman and podman-compose, following ../shared/CONTAINERS.md:
#   1. podman, podman-compose, runc, debootstrap (apt-get installs what is missing);
#   2. the base image debian:bookworm-slim, made with debootstrap when podman's store lacks it
#      (no registry is reachable); it stays in the store, so later runs skip this;
#   3. podman build (layers cached between runs), the host's CA bundle given to pip as a secret;
#   4. the image: non-root, a healthcheck, no compilers, nothing of the build machine;
#   5. podman-compose up from compose.yaml, the compose healthcheck turns healthy, the openai SDK
#      streams a chat (tests/container/smoke.py), a model is added to the volume;
#   6. SIGTERM stops the server cleanly within seconds;
#   7. down, then up again: the model added to the volume is still there and answers;
# and always (trap): down, the test's volume removed, images that earlier runs left untagged
# pruned. Environment: GGUF_HOST_PORT (default 11434, or a free port when that one is busy),
# GGUF_IMAGE (default localhost/gguf-serve:test), HOST_CA_BUNDLE (the CA bundle pip trusts).
set -euo pipefail
cd "$(dirname "$0")/../.."
repo=$PWD
python=${PYTHON:-$repo/.venv/bin/python}
export CONTAINERS_CONF=$repo/tests/container/containers.conf
export GGUF_IMAGE=${GGUF_IMAGE:-localhost/gguf-serve:test}
base_image=docker.io/library/debian:bookworm-slim
host_ca=${HOST_CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}
project=gguf-serve-test-$$
logs=$repo/.cache/container
mkdir -p "$logs"
passed=0

step() { printf '\n== %s (at %ds)\n' "$*" "$SECONDS"; }
ok() { passed=$((passed + 1)); printf 'ok %d - %s\n' "$passed" "$*"; }
fail() { printf 'FAILED: %s\n' "$*" >&2; exit 1; }
compose() { podman-compose -p "$project" "$@"; }
container() {  # the service's container (one; none before up and after down)
    local names
    names=$(podman ps -a --filter "label=io.podman.compose.project=$project" --format '{{.Names}}')
    echo "${names%%$'\n'*}"
}

cleanup() {
    local status=$?
    trap - EXIT INT TERM
    if [ "$status" -ne 0 ]; then
        local ctr
        ctr=$(container 2>/dev/null || true)
        if [ -n "$ctr" ]; then
            echo "--- last lines of $ctr's log"
            podman logs --tail 40 "$ctr" 2>&1 || true
        fi
    fi
    step "tear down"
    compose down -v >"$logs/down.log" 2>&1 || true
    podman volume rm -f "${project}_models" >/dev/null 2>&1 || true
    # Images untagged by a rebuild (the previous gguf-serve:test and its builder), from before
    # this run: each would keep about 1.5 GB on the disk.
    podman image prune -f --filter "until=${SECONDS}s" >/dev/null 2>&1 || true
    if [ "$status" -eq 0 ]; then
        echo "container: $passed passed, 0 failed"
    else
        echo "container: $passed passed, 1 failed"
    fi
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

wait_healthy() {  # the compose healthcheck, run by hand: podman has no systemd timers here
    local ctr state up_log=$1 deadline=$((SECONDS + 300))
    ctr=$(container)
    [ -n "$ctr" ] || { cat "$up_log"; fail "podman-compose up started no container"; }
    until podman healthcheck run "$ctr" >/dev/null 2>&1; do
        state=$(podman inspect -f '{{.State.Status}}' "$ctr")
        [ "$state" = running ] || { tail -n 5 "$up_log"; fail "$ctr is $state"; }
        [ "$SECONDS" -lt "$deadline" ] || fail "$ctr not healthy after 300 s"
        sleep 1
    done
    [ "$(podman inspect -f '{{.State.Health.Status}}' "$ctr")" = healthy ] || fail "not healthy"
}

step "1. podman, podman-compose, runc, debootstrap"
missing=()
for tool in podman podman-compose runc debootstrap; do
    command -v "$tool" >/dev/null || missing+=("$tool")
done
if [ "${#missing[@]}" -gt 0 ]; then
    [ "$(id -u)" -eq 0 ] || fail "missing ${missing[*]}: install them with apt-get (as root)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq podman podman-compose runc debootstrap \
        >"$logs/apt.log"
fi
podman --version

step "2. base image $base_image"
if podman image exists "$base_image"; then
    echo "already in podman's store"
else
    rootfs=$(mktemp -d /var/tmp/gguf-serve-rootfs.XXXXXX)
    debootstrap --variant=minbase bookworm "$rootfs" >"$logs/debootstrap.log" 2>&1 ||
        { tail -n 20 "$logs/debootstrap.log"; rm -rf "$rootfs"; fail "debootstrap failed"; }
    rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
    tar -C "$rootfs" -c . | podman import --quiet - "$base_image" >/dev/null
    rm -rf "$rootfs"
fi

step "3. podman build -t $GGUF_IMAGE (output in $logs/build.log)"
build=(--isolation chroot --network host --format docker -t "$GGUF_IMAGE")
if [ -r "$host_ca" ]; then
    # pip inside the build trusts what the host trusts. A build secret rather than CONTAINERS.md's
    # `-v CA:/run/host-ca.crt:ro`: podman 4.3 leaves an empty /run/host-ca.crt mount point in
    # every stage's layers, the final image's too (step 4 checks), while a secret reaches only
    # the builder's RUN steps that ask for it.
    build+=(--secret "id=pip_cert,src=$host_ca" --build-arg PIP_CERT=/run/secrets/pip_cert)
fi
for var in PIP_INDEX_URL PIP_EXTRA_INDEX_URL PIP_TRUSTED_HOST; do
    if [ -n "${!var:-}" ]; then build+=(--build-arg "$var=${!var}"); fi
done
# The builder stage gets a tag of its own, so that images left untagged by earlier runs can be
# pruned (see cleanup) without losing the build cache.
if ! { podman build "${build[@]}" --target builder -t "$GGUF_IMAGE-builder" . &&
    podman build "${build[@]}" -t "$GGUF_IMAGE" .; } >"$logs/build.log" 2>&1; then
    tail -n 40 "$logs/build.log"
    fail "podman build failed"
fi
steps=$(grep -cE 'STEP [0-9]+/' "$logs/build.log" || true)
cached=$(grep -c -- '--> Using cache' "$logs/build.log" || true)
ok "the image builds ($steps steps, $cached of them from the cache)"

step "4. the image"
[ "$(podman image inspect -f '{{.Config.User}}' "$GGUF_IMAGE")" = 10001:10001 ] ||
    fail "the image does not run as user 10001"
ok "runs as a non-root user"
healthcheck=$(podman image inspect -f '{{.Config.Healthcheck.Test}}' "$GGUF_IMAGE")
[[ $healthcheck == *gguf-serve-healthcheck* ]] || fail "the image has no HEALTHCHECK"
ok "has a HEALTHCHECK"
build_settings='PIP_(CERT|INDEX_URL|EXTRA_INDEX_URL|TRUSTED_HOST)|host-ca'
history=$(podman history --no-trunc --format '{{.CreatedBy}}' "$GGUF_IMAGE")
if grep -E "$build_settings" <<<"$history"; then
    fail "the image's history mentions the build's pip settings"
fi
if podman image inspect -f '{{.Config.Env}}' "$GGUF_IMAGE" | grep -E "$build_settings"; then
    fail "the image's environment carries the build's pip settings"
fi
podman run --rm --network none --no-healthcheck --entrypoint /bin/sh "$GGUF_IMAGE" -c '
    for path in /run/host-ca.crt /run/secrets /tmp/llama.txt /src /root/.cache /home/gguf/.cache; do
        if [ -e "$path" ]; then echo "$path is in the image"; exit 1; fi
    done
    for tool in gcc g++ cc cmake; do
        if command -v "$tool"; then echo "$tool is in the image"; exit 1; fi
    done
    gguf-serve list' || fail "the image holds build leftovers or no models"
ok "no certificate, pip settings, caches or compilers of the build in the image; models baked in"

step "5. podman-compose up"
if [ -z "${GGUF_HOST_PORT:-}" ]; then  # 11434 unless something here already listens on it
    GGUF_HOST_PORT=$("$python" -c '
import socket
with socket.socket() as s:
    try:
        s.bind(("127.0.0.1", 11434))
    except OSError:
        s.bind(("127.0.0.1", 0))
    print(s.getsockname()[1])')
fi
export GGUF_HOST_PORT
echo "publishing 127.0.0.1:$GGUF_HOST_PORT, project $project"
up_at=$SECONDS
compose up -d --no-build >"$logs/up.log" 2>&1 || { cat "$logs/up.log"; fail "up failed"; }
wait_healthy "$logs/up.log"
ok "healthy $((SECONDS - up_at)) s after up (the compose healthcheck)"
ctr=$(container)
[ "$(podman exec "$ctr" id -u)" = 10001 ] || fail "the server does not run as user 10001"
[ "$(podman inspect -f '{{.HostConfig.RestartPolicy.Name}}' "$ctr")" = unless-stopped ] ||
    fail "restart policy is not unless-stopped"
if podman exec "$ctr" touch /etc/gguf-serve/probe 2>/dev/null; then
    fail "configs/ is mounted writable"
fi
ok "compose settings applied: user 10001, restart unless-stopped, configs/ read-only"
"$python" tests/container/smoke.py --port "$GGUF_HOST_PORT" --model smollm2:135m
ok "the openai SDK streams a chat from the container"
podman exec "$ctr" gguf-serve cp smollm2:135m volume-check:v1
ok "gguf-serve cp inside the container writes to the volume"

step "6. SIGTERM"
start=$(date +%s%N)
podman stop -t 30 "$ctr" >/dev/null 2>>"$logs/podman.log"  # (complaints about systemd timers)
elapsed_ms=$((($(date +%s%N) - start) / 1000000))
code=$(podman inspect -f '{{.State.ExitCode}}' "$ctr")
echo "stopped in ${elapsed_ms} ms, exit status $code"
# uvicorn shuts down, then re-raises SIGTERM: ignored by PID 1 (status 0), fatal under an init
# process (143). 137 would mean SIGKILL after the grace period.
[ "$code" -eq 0 ] || [ "$code" -eq 143 ] || fail "exit status $code after SIGTERM"
[ "$elapsed_ms" -lt 10000 ] || fail "SIGTERM took ${elapsed_ms} ms"
podman logs "$ctr" >"$logs/server.log" 2>&1
grep -q "Application shutdown complete" "$logs/server.log" || fail "no graceful shutdown in the log"
ok "SIGTERM stops the server cleanly in ${elapsed_ms} ms"

step "7. down, up again: the store is on the volume"
compose down >"$logs/down.log" 2>&1 || { cat "$logs/down.log"; fail "down failed"; }
[ -z "$(container)" ] || fail "down left a container"
podman volume exists "${project}_models" || fail "down removed the volume"
compose up -d --no-build >"$logs/up2.log" 2>&1 || { cat "$logs/up2.log"; fail "up failed"; }
wait_healthy "$logs/up2.log"
"$python" tests/container/smoke.py --port "$GGUF_HOST_PORT" --model volume-check:v1 \
    --expect-model smollm2:135m
ok "after down and up the volume still has the models, and they answer"
