#!/usr/bin/env bash
# HAPI FHIR's official R4 validator, run offline: fetched from Maven Central (once, with Maven,
# into the shared cache as infra.sh does for Kafka), then run with the machine's Java 17.
#
#   deploy/local/fhir-validator.sh fetch         download the jars and compile the driver (idempotent)
#   deploy/local/fhir-validator.sh serve         one resource per stdin line -> one JSON verdict per line
#   deploy/local/fhir-validator.sh FILE.json...  validate files, print verdicts, exit 1 on any error
#
# Environment: REFLEXE_CACHE_DIR [${XDG_CACHE_HOME:-$HOME/.cache}/reflexe],
#   REFLEXE_HAPI_FHIR_VERSION [8.0.0] (ca.uhn.hapi.fhir, Java 17).
# The R4 core definitions come from hapi-fhir-validation-resources-r4, terminology from the
# validator's in-memory services: no FHIR package registry, no terminology server at run time.
set -euo pipefail

LOG_NAME=fhir-validator
# shellcheck source=deploy/local/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
HAPI_VERSION="${REFLEXE_HAPI_FHIR_VERSION:-8.0.0}"
HOME_DIR="$CACHE_DIR/fhir-validator-$HAPI_VERSION"
LIBS="$HOME_DIR/libs"
SOURCE="$REPO_ROOT/deploy/local/fhir-validator/ValidateFhir.java"
CLASSES="$HOME_DIR/classes-$(sha256sum "$SOURCE" | cut -c1-12)"

fetch() {
    # A JDK: javac compiles the driver.
    command -v javac >/dev/null || apt_install openjdk-17-jdk-headless
    maven_runtime "$HOME_DIR" "HAPI FHIR $HAPI_VERSION validator" "\
    <dependency><groupId>ca.uhn.hapi.fhir</groupId><artifactId>hapi-fhir-structures-r4</artifactId><version>$HAPI_VERSION</version></dependency>
    <dependency><groupId>ca.uhn.hapi.fhir</groupId><artifactId>hapi-fhir-validation</artifactId><version>$HAPI_VERSION</version></dependency>
    <dependency><groupId>ca.uhn.hapi.fhir</groupId><artifactId>hapi-fhir-validation-resources-r4</artifactId><version>$HAPI_VERSION</version></dependency>
    <dependency><groupId>ca.uhn.hapi.fhir</groupId><artifactId>hapi-fhir-caching-caffeine</artifactId><version>$HAPI_VERSION</version></dependency>
    <dependency><groupId>org.slf4j</groupId><artifactId>slf4j-nop</artifactId><version>2.0.17</version></dependency>"
    if [[ ! -f $CLASSES/ValidateFhir.class ]]; then
        mkdir -p "$CLASSES.tmp"
        javac -nowarn -cp "$LIBS/*" -d "$CLASSES.tmp" "$SOURCE" || die "could not compile $SOURCE"
        rm -rf "$CLASSES"
        mv "$CLASSES.tmp" "$CLASSES"
    fi
}

serve() {
    fetch
    exec java -Xss4m -cp "$CLASSES:$LIBS/*" ValidateFhir
}

case "${1:-}" in
    fetch) fetch ;;
    serve) serve ;;
    "") die "usage: $0 fetch | serve | FILE.json..." ;;
    *)
        fetch
        # Each file becomes one line (the driver reads single-line JSON).
        verdicts="$(for f in "$@"; do python3 -c 'import json,sys; print(json.dumps(json.load(open(sys.argv[1]))))' "$f"; done \
                    | java -Xss4m -cp "$CLASSES:$LIBS/*" ValidateFhir | tail -n +2)"
        status=0
        i=0
        files=("$@")
        while IFS= read -r verdict; do
            echo "${files[$i]}: $verdict"
            [[ $verdict == *'"errors": 0,'* ]] || status=1
            i=$((i + 1))
        done <<<"$verdicts"
        exit $status
        ;;
esac
