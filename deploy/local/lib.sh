# Helpers shared by the deploy/local scripts (sourced, not run). The sourcing script sets
# LOG_NAME (its prefix in messages). Messages go to stderr: a script's stdout may carry only what
# its caller evaluates or reads.

# The clone; the state dir (servers' data, logs, pid files: one per running set); the cache dir
# (downloads, shared by every clone and state dir).
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
STATE_DIR="$(realpath -m "${REFLEXE_STATE_DIR:-$REPO_ROOT/.local/infra}")"
CACHE_DIR="$(realpath -m "${REFLEXE_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/reflexe}")"

log() { printf '[%s] %s\n' "$LOG_NAME" "$*" >&2; }
die() { printf '[%s] ERROR: %s\n' "$LOG_NAME" "$*" >&2; exit 1; }

is_root() { [[ $EUID -eq 0 ]]; }

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# wait_until SECONDS INTERVAL COMMAND...: runs COMMAND every INTERVAL seconds until it succeeds;
# fails if it has not within SECONDS. The one wait loop of the scripts (a server answering).
wait_until() {
    local deadline=$((SECONDS + $1)) interval=$2
    shift 2
    until "$@"; do
        ((SECONDS < deadline)) || return 1
        sleep "$interval"
    done
}

process_gone() { ! kill -0 "$1" 2>/dev/null; }

# await_exit_or_kill DEADLINE NAME PID: waits for PID, already sent SIGTERM, to exit; still
# running at DEADLINE (a value of $SECONDS, shared when several stop side by side), it is killed.
await_exit_or_kill() {
    local deadline=$1 name=$2 pid=$3
    until process_gone "$pid"; do
        if ((SECONDS >= deadline)); then
            log "$name did not stop in time, killing it"
            kill -KILL "$pid" 2>/dev/null || true
            return 0
        fi
        sleep 0.2
    done
}

# as_root CMD...: runs CMD as root, through sudo when this user is not root.
as_root() {
    if is_root; then "$@"
    elif command -v sudo >/dev/null; then sudo "$@"
    else die "root or sudo is needed to run: $*"
    fi
}

# apt_install [apt-get options] PACKAGE...: Debian packages, installed non-interactively.
apt_install() {
    log "installing $* with apt-get"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >&2
}

# maven_runtime HOME NAME DEPENDENCIES: the runtime jars of DEPENDENCIES (<dependency> elements)
# copied by Maven into HOME/libs, once per cache directory. Several clones or test sessions may
# share the cache, so the download is serialised, and only a complete set is swapped in: an
# interrupted download is simply retried.
maven_runtime() {
    local home=$1 name=$2 dependencies=$3 libs="$1/libs"
    [[ -f $libs/.complete ]] && return 0
    command -v mvn >/dev/null || apt_install maven
    mkdir -p "$home"
    exec 9>"$home/.lock"
    flock 9
    if [[ ! -f $libs/.complete ]]; then
        log "downloading $name and its runtime dependencies (once per cache dir)"
        cat >"$home/pom.xml" <<POM
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>local.reflexe</groupId>
  <artifactId>runtime</artifactId>
  <version>1</version>
  <packaging>pom</packaging>
  <dependencies>
$dependencies
  </dependencies>
  <build><plugins><plugin>
    <groupId>org.apache.maven.plugins</groupId><artifactId>maven-dependency-plugin</artifactId><version>3.8.1</version>
  </plugin></plugins></build>
</project>
POM
        rm -rf "$libs.tmp"
        mvn -B -q -f "$home/pom.xml" -Dmaven.repo.local="$CACHE_DIR/m2" \
            dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory="$libs.tmp" \
            >"$home/maven.log" 2>&1 \
            || { tail -n 30 "$home/maven.log" >&2; die "maven could not fetch $name"; }
        rm -rf "$libs"
        mv "$libs.tmp" "$libs"
        touch "$libs/.complete"
    fi
    flock -u 9
}
