# lib.sh - shell functions shared by scripts/run, scripts/test and bench/run.
# Sourced, not run. Expects ROOT (the checkout) to be set.

# Debian packages farebox builds and tests with.
FAREBOX_APT_PACKAGES=(
    cmake make gcc pkg-config git ca-certificates curl openssl
    libh2o-dev libuv1-dev libssl-dev libzmq3-dev libczmq-dev libmsgpack-dev
    libsecp256k1-dev libsodium-dev libpq-dev libcurl4-openssl-dev libjansson-dev libjsmn-dev nettle-dev
    postgresql nghttp2-client nodejs npm clang-format clang libclang-rt-dev
)

fb_say() { printf '%s\n' "farebox: $*" >&2; }
fb_die() { printf '%s\n' "farebox: $*" >&2; exit 1; }

# Runs a command as root: directly when we are root, through sudo otherwise.
fb_as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

# fb_install_apt PKG... - installs the packages that are missing.
fb_install_apt() {
    local missing=() p
    for p in "$@"; do
        # node and npm may come from outside Debian (nodesource, nvm): accept the commands
        if [ "$p" = nodejs ] && command -v node >/dev/null; then continue; fi
        if [ "$p" = npm ] && command -v npm >/dev/null; then continue; fi
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    [ "${#missing[@]}" -eq 0 ] && return 0
    fb_say "installing Debian packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    if ! fb_as_root apt-get install -y -q --no-install-recommends "${missing[@]}" >/tmp/farebox-apt.log 2>&1; then
        fb_as_root apt-get update -q >>/tmp/farebox-apt.log 2>&1 || true
        fb_as_root apt-get install -y -q --no-install-recommends "${missing[@]}" >>/tmp/farebox-apt.log 2>&1 ||
            { tail -20 /tmp/farebox-apt.log >&2; fb_die "apt-get install failed (log: /tmp/farebox-apt.log)"; }
    fi
}

# fb_install_npm - the pinned Node packages of tests/ (package-lock.json).
fb_install_npm() {
    local dir="$ROOT/tests"
    if [ -f "$dir/node_modules/.package-lock.json" ] &&
        [ "$dir/node_modules/.package-lock.json" -nt "$dir/package-lock.json" ]; then
        return 0
    fi
    fb_say "installing Node packages from tests/package-lock.json"
    # `npm ci` refuses this lock file because the registry mirror lacks other
    # platforms' optional packages; `npm install` with the lock installs exactly
    # the locked versions.
    (cd "$dir" && npm install --no-audit --no-fund --loglevel=error >/tmp/farebox-npm.log 2>&1) ||
        { tail -20 /tmp/farebox-npm.log >&2; fb_die "npm install failed (log: /tmp/farebox-npm.log)"; }
}

fb_install_deps() {
    [ "${FAREBOX_SKIP_INSTALL:-0}" = 1 ] && return 0
    fb_install_apt "${FAREBOX_APT_PACKAGES[@]}" "$@"
    fb_install_npm
}

# fb_build DIR [cmake args...] - configure (once) and build.
fb_build() {
    local dir=$1
    shift
    if [ ! -f "$dir/CMakeCache.txt" ]; then
        cmake -S "$ROOT" -B "$dir" "$@" >/dev/null || fb_die "cmake configure failed"
    fi
    cmake --build "$dir" -j"$(nproc)" -- --no-print-directory >/tmp/farebox-build.log 2>&1 ||
        { grep -E "error|Error" /tmp/farebox-build.log | head -30 >&2; fb_die "build failed (log: /tmp/farebox-build.log)"; }
}

# fb_pg_bindir - the PostgreSQL server binaries.
fb_pg_bindir() {
    local d
    for d in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -rV); do
        [ -x "$d/initdb" ] && { echo "$d"; return 0; }
    done
    fb_die "PostgreSQL server binaries not found (apt install postgresql)"
}

# fb_pg_user_run CMD... - runs a PostgreSQL server command as the cluster's
# owner: as root that is the postgres system user (initdb refuses root).
# setpriv execs in place, so the pid stays the server's and signals reach it.
fb_pg_user_run() {
    if [ "$(id -u)" -eq 0 ]; then
        setpriv --reuid=postgres --regid=postgres --init-groups -- "$@"
    else
        "$@"
    fi
}

# fb_random_hex N - N random bytes as hex.
fb_random_hex() { openssl rand -hex "$1"; }

# Packages of the deployment test (tests/deploy): a Docker engine, compose v1, debootstrap.
FAREBOX_DOCKER_PACKAGES=(docker.io docker-compose debootstrap)

# fb_docker_ready - a Docker engine that answers (dockerd is started when we are root and none
# does) and the base image the Dockerfiles name, debian:bookworm-slim: pulled where a registry
# answers, else made with debootstrap from this machine's Debian mirror and docker import.
fb_docker_ready() {
    if ! docker info >/dev/null 2>&1; then
        [ "$(id -u)" -eq 0 ] || fb_die "no Docker engine answers: start dockerd (or run as root, and this script will)"
        fb_say "starting dockerd (log: /tmp/farebox-dockerd.log)"
        (setsid dockerd >/tmp/farebox-dockerd.log 2>&1 &)
        local i
        for i in $(seq 1 120); do docker info >/dev/null 2>&1 && break; sleep 0.5; done
        docker info >/dev/null 2>&1 || { tail -20 /tmp/farebox-dockerd.log >&2; fb_die "dockerd did not start"; }
    fi
    if ! docker image inspect debian:bookworm-slim >/dev/null 2>&1 &&
        ! timeout 60 docker pull -q debian:bookworm-slim >/dev/null 2>&1; then
        local mirror dir
        mirror=$(awk '/^URIs:/ && $2 !~ /security/ {print $2; exit}' /etc/apt/sources.list.d/*.sources 2>/dev/null)
        [ -n "$mirror" ] || mirror=$(awk '$1 == "deb" && $2 !~ /security/ {print $2; exit}' /etc/apt/sources.list 2>/dev/null)
        [ -n "$mirror" ] || mirror=http://deb.debian.org/debian
        fb_say "making the base image debian:bookworm-slim with debootstrap from $mirror"
        dir=$(mktemp -d)
        fb_as_root debootstrap --variant=minbase bookworm "$dir" "$mirror" >/tmp/farebox-debootstrap.log 2>&1 ||
            { tail -20 /tmp/farebox-debootstrap.log >&2; fb_die "debootstrap failed"; }
        fb_as_root tar -C "$dir" -c . | docker import - debian:bookworm-slim >/dev/null
        fb_as_root rm -rf "$dir"
    fi
    # the devchain image installs npm packages while it builds: trust the CAs this machine
    # trusts locally (a TLS-inspecting proxy's, say) there too
    cp /usr/local/share/ca-certificates/*.crt "$ROOT/deploy/certs/" 2>/dev/null || true
}
