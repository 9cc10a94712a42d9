#!/usr/bin/env bash
# The project's container images, one command each (docs/scaling-out.md):
#
#   scripts/image.sh cpu            triton-detectors:cpu: Debian 12, the embedded Triton of
#                                   the pytriton wheel, the project and its built models
#                                   (podman; built and run on a plain Debian machine)
#   scripts/image.sh ngc            triton-detectors:ngc: NVIDIA's server image plus the
#                                   project (needs NVIDIA's registry: docker or podman)
#   scripts/image.sh check [IMAGE]  run the cpu image on loopback ports and check that it
#                                   answers the contract (deploy/images/check.py)
#   scripts/image.sh kube [IMAGE]   the same checks on the chart's Deployment (cpu values)
#                                   started by podman kube play
#   scripts/image.sh sources        print the apt sources a debootstrapped base image gets
#                                   (this machine's own mirrors)
#
# Both images start the project's one launcher (python -m ensemble.server) as uid 1000.
# Host networking only: builds and runs use --network=host; no container network is
# ever created.
set -euo pipefail
cd "$(dirname "$0")/.."
WHAT=${1:-cpu}
NAME=${IMAGE_NAME:-triton-detectors}
OUT=build/image
PY=.venv/bin/python
log() { printf '[image] %s\n' "$*"; }
die() { printf '[image] error: %s\n' "$*" >&2; exit 1; }

# The image's revision: the commit, marked -dirty when what goes into the image differs
# from it (a tag must not name a commit the image was not built from).
IMAGE_FILES=(ensemble client models.toml pyproject.toml requirements.txt
    requirements-export.txt deploy/images .dockerignore)
revision() {
    local sha
    sha=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
    if [ -n "$(git status --porcelain -- "${IMAGE_FILES[@]}" 2>/dev/null)" ]; then
        sha="$sha-dirty"
    fi
    echo "$sha"
}

# --- podman on a plain Debian machine ------------------------------------------------

apt_install() {
    log "installing $* (apt)"
    if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "$@" >/dev/null
}

# podman's settings for this machine, unless the user has their own containers.conf:
# runc (crun refuses some cgroup layouts, such as a VM's cgroup v1 without systemd) and
# ulimits the container may have without CAP_SYS_RESOURCE: podman's defaults ask for
# more than the hard limits, which fails. nproc counts the threads of uid 1000 (a full
# server has about 600): this shell's hard limit, at most kernel.pid_max (on the VM this
# was written on 32768 = pid_max worked, 32769 was refused). Passed through
# $CONTAINERS_CONF; /etc is left alone.
podman_setup() {
    local need=()
    command -v podman >/dev/null || need+=(podman)
    command -v runc >/dev/null || need+=(runc)
    [ ${#need[@]} -eq 0 ] || apt_install "${need[@]}"
    if [ -z "${CONTAINERS_CONF:-}" ] && [ ! -e /etc/containers/containers.conf ] \
        && [ ! -e "${XDG_CONFIG_HOME:-$HOME/.config}/containers/containers.conf" ]; then
        local nofile nproc pid_max
        nofile=$(ulimit -Hn); nproc=$(ulimit -Hu); pid_max=$(cat /proc/sys/kernel/pid_max)
        [ "$nofile" = unlimited ] && nofile=1048576
        if [ "$nproc" = unlimited ] || [ "$nproc" -gt "$pid_max" ]; then nproc=$pid_max; fi
        mkdir -p "$OUT"
        cat > "$OUT/containers.conf" <<EOF
# Written by scripts/image.sh: podman's settings for building and running the images.
[containers]
default_ulimits = ["nofile=$nofile:$nofile", "nproc=$nproc:$nproc"]
[engine]
runtime = "runc"
EOF
        export CONTAINERS_CONF=$PWD/$OUT/containers.conf
    fi
    POLICY=()
    if [ ! -e /etc/containers/policy.json ] \
        && [ ! -e "${XDG_CONFIG_HOME:-$HOME/.config}/containers/policy.json" ]; then
        # Debian's podman ships one; without any, a build refuses even local images.
        mkdir -p "$OUT"
        echo '{"default": [{"type": "insecureAcceptAnything"}]}' > "$OUT/policy.json"
        POLICY=(--signature-policy "$OUT/policy.json")
    fi
}

# FROM debian:bookworm-slim with no registry: a Debian 12 root filesystem made by
# debootstrap from the host's Debian mirror, imported under that name (podman keeps it
# as localhost/debian:bookworm-slim, which the short name finds first). A host whose
# podman resolves the short name to a registry it can reach (its registries.conf)
# pulls the real one instead; the name of that registry is the host's, not ours.
BASE=debian:bookworm-slim
# The URI this machine's apt takes suite $1 (a codename: bookworm-security) from, empty
# when it has none. Its sources are read as written (no apt-get update needed); those
# that name the suite by an alias (oldstable-security) match through the codename in
# the Release file apt-get update fetched for them.
apt_uri() {
    {
        apt-get indextargets --no-release-info --format '$(REPO_URI) $(RELEASE)' 'Created-By: Packages'
        apt-get indextargets --format '$(REPO_URI) $(CODENAME)' 'Created-By: Packages'
    } 2>/dev/null | awk -v suite="$1" '$2 == suite { print $1; exit }'
}

# deb822 sources for the image: the suites of Docker Hub's debian image (bookworm, its
# updates, security), each from the URI this machine's apt takes it from, as
# debian.sources lists them. A suite this machine has no source for is left out.
debian_sources() {
    local suite uri
    for suite in bookworm bookworm-updates bookworm-security; do
        uri=$(apt_uri "$suite")
        [ -n "$uri" ] || { log "no $suite in this machine's apt sources: the image has none" >&2; continue; }
        printf 'Types: deb\nURIs: %s\nSuites: %s\nComponents: main\nSigned-By: %s\n\n' \
            "${uri%/}" "$suite" /usr/share/keyrings/debian-archive-keyring.gpg
    done
}

base_image() {
    podman image exists "$BASE" && return
    if podman pull -q "$BASE" >/dev/null 2>&1; then log "pulled $BASE"; return; fi
    command -v debootstrap >/dev/null || apt_install debootstrap
    [ "$(id -u)" = 0 ] || die "debootstrap needs root to make $BASE (or pull it on a host with a registry)"
    local mirror rootfs=$OUT/rootfs
    # This machine's own apt sources name the mirrors (no host is written here).
    mirror=$(apt_uri bookworm)
    [ -n "$mirror" ] || die "no bookworm source in this machine's apt configuration"
    log "no $BASE here and no registry: debootstrap bookworm from $mirror"
    rm -rf "$rootfs"
    debootstrap --variant=minbase bookworm "$rootfs" "$mirror" >"$OUT/debootstrap.log" 2>&1 \
        || { tail -20 "$OUT/debootstrap.log" >&2; die "debootstrap failed (log: $OUT/debootstrap.log)"; }
    rm -f "$rootfs/etc/apt/sources.list"
    debian_sources > "$rootfs/etc/apt/sources.list.d/debian.sources"
    rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
    tar -C "$rootfs" -c . | podman import -q --change 'CMD ["bash"]' - "$BASE" >/dev/null
    rm -rf "$rootfs"
    log "made $BASE with debootstrap ($(podman image inspect -f '{{.Size}}' "$BASE" | numfmt --to=iec))"
}

# --- the cpu image's Python packages -------------------------------------------------

# What the server needs at run time, out of requirements.txt (the pins stay there): the
# pytriton wheel's Triton, the three detectors' frameworks, the pre/post-processing,
# the supervisor, onnx (the launcher reads an ONNX detector's labels from its metadata)
# and the client (the contract check runs it inside too). Left out: the model
# conversion tools, the web demo, benchmarks, tests and lint.
CPU_PACKAGES=(nvidia-pytriton tritonclient numpy torch tensorflow-cpu onnxruntime
    opencv-python-headless pillow onnx psutil prometheus_client tqdm)

# A wheelhouse of those packages at the versions the project's .venv has (its pip
# freeze constrains every dependency too), fetched on the host with the host's own pip
# settings: the build installs from it with --no-index, so no index, proxy or
# certificate is needed inside. Cached under build/image/wheels, keyed by its inputs.
wheelhouse() {
    [ -x "$PY" ] || die "no .venv: run make setup"
    local dir=$OUT/wheels req key
    mkdir -p "$OUT"
    req=$OUT/requirements.txt
    local pattern
    pattern=$(printf '%s\n' "${CPU_PACKAGES[@]}" | paste -sd'|')
    grep -E "^($pattern)(\[[^]]*\])?==" requirements.txt > "$req.tmp"
    [ "$(wc -l < "$req.tmp")" = "${#CPU_PACKAGES[@]}" ] \
        || die "not every one of ${CPU_PACKAGES[*]} is pinned in requirements.txt"
    mv "$req.tmp" "$req"
    # Local version labels (torch's +cpu) dropped: ==2.13.0 still matches 2.13.0+cpu.
    "$PY" -m pip freeze --exclude-editable | sed 's/+[^ ;]*//' > "$OUT/constraints.txt"
    key=$(cat "$req" "$OUT/constraints.txt" | sha256sum | cut -c1-16)
    if [ "$(cat "$dir/.key" 2>/dev/null)" = "$key" ]; then
        log "reusing the wheelhouse $dir ($(du -sh "$dir" | cut -f1))"
        return
    fi
    log "fetching the wheelhouse into $dir (requirements changed or first run)"
    rm -rf "$dir"
    mkdir -p "$dir"
    # pip wheel, not download: a dependency published only as source is built here.
    if ! "$PY" -m pip wheel --quiet --wheel-dir "$dir" \
            -r "$req" -c "$OUT/constraints.txt" >"$OUT/pip-wheel.log" 2>&1; then
        tail -20 "$OUT/pip-wheel.log" >&2
        die "pip wheel failed (log: $OUT/pip-wheel.log)"
    fi
    cp "$req" "$dir/requirements.txt"
    echo "$key" > "$dir/.key"
    log "wheelhouse: $(find "$dir" -name '*.whl' | wc -l) wheels, $(du -sh "$dir" | cut -f1)"
}

# The native backends' sources for the image's build stage: a copy of
# $TRITON_BACKEND_SOURCES (the tarballs, under a megabyte), or nothing, and the stage
# clones them from GitHub at the pinned commits.
native_sources() {
    local dir=$OUT/native-sources
    rm -rf "$dir"
    mkdir -p "$dir"
    if [ -n "${TRITON_BACKEND_SOURCES:-}" ]; then
        cp -r "$TRITON_BACKEND_SOURCES/triton-r24.10" "$TRITON_BACKEND_SOURCES/onnxruntime-1.19-c-api" "$dir/"
        log "native backends' sources: $TRITON_BACKEND_SOURCES"
    else
        log "native backends' sources: none given (\$TRITON_BACKEND_SOURCES); the build clones them"
    fi
}

labels() {
    local created version
    created=$(date -u +%Y-%m-%dT%H:%M:%SZ)
    version=$(sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)
    printf -- '--label\0%s\0' \
        "org.opencontainers.image.revision=$(revision)" \
        "org.opencontainers.image.created=$created" \
        "org.opencontainers.image.version=$version"
}

build_cpu() {
    podman_setup
    [ -f .cache/models/manifest.json ] || die "no built models in .cache/models: run make setup"
    base_image
    wheelhouse
    native_sources
    local tag=$NAME:cpu rev start size
    rev=$(revision)
    mapfile -d '' label_args < <(labels)
    log "building $tag (podman, --network=host; log: $OUT/build-cpu.log)"
    start=$(date +%s)
    if ! podman build --pull=never --network=host "${POLICY[@]}" "${label_args[@]}" \
            -f deploy/images/cpu.Dockerfile -t "$tag" -t "$NAME:cpu-$rev" . \
            >"$OUT/build-cpu.log" 2>&1; then
        tail -30 "$OUT/build-cpu.log" >&2
        die "podman build failed (log: $OUT/build-cpu.log)"
    fi
    size=$(podman image inspect -f '{{.Size}}' "$tag" | numfmt --to=iec)
    log "built localhost/$tag (also :cpu-$rev) in $(( $(date +%s) - start )) s, $size"
    log "run it: podman run --rm --network=host localhost/$tag   (check it: make image TARGET=check)"
}

# NOT BUILT HERE: NVIDIA's registry cannot be reached from the machine this repository
# was made on, so this path has only been read, never run. It builds with whichever of
# docker (with a running engine) or podman exists, and stops before building when the
# Dockerfile's TRITON_IMAGE cannot be pulled.
build_ngc() {
    local tool="" tag=$NAME:ngc rev
    rev=$(revision)
    if command -v docker >/dev/null && docker info >/dev/null 2>&1; then tool=docker
    elif command -v podman >/dev/null; then tool=podman; podman_setup
    fi
    [ -f .cache/models/manifest.json ] || die "no built models in .cache/models: run make setup"
    mapfile -d '' label_args < <(labels)
    local cmd=("${tool:-docker}" build --network=host "${label_args[@]}"
        -f deploy/images/ngc.Dockerfile -t "$tag" -t "$NAME:ngc-$rev" .)
    local from
    from=$(sed -n 's/^ARG TRITON_IMAGE=//p' deploy/images/ngc.Dockerfile)
    log "would run: ${cmd[*]}"
    [ -n "$tool" ] || die "neither a docker engine nor podman here"
    if ! "$tool" pull -q "$from" >/dev/null 2>&1; then
        die "cannot pull $from (no access to ${from%%/*} from here): the ngc image was not built"
    fi
    "${cmd[@]}"
    log "built $tag (also :ngc-$rev); on a GPU host: docker compose up"
}

case "$WHAT" in
    cpu) build_cpu ;;
    ngc) build_ngc ;;
    check|kube)
        podman_setup
        [ -x "$PY" ] || die "no .venv: run make setup"
        "$PY" deploy/images/check.py $([ "$WHAT" = kube ] && echo --kube) "${2:-localhost/$NAME:cpu}"
        ;;
    sources) debian_sources ;;
    *) die "unknown target '$WHAT': cpu, ngc, check, kube or sources" ;;
esac
