#!/usr/bin/env bash
# Installs Debian's Prometheus (/usr/bin/prometheus and /usr/bin/promtool) for the
# observability tests: promtool checks the rule files and the config
# (tests/unit/deploy/test_observability.py); a real Prometheus scrapes the running platform
# and answers every dashboard query (tests/e2e/test_simulated_day.py).
# Idempotent: does nothing when /usr/bin/prometheus is already there. The package's systemd
# service is irrelevant here (the tests start their own Prometheus): policy-rc.d keeps it from
# being started where an init system exists, and a failure to start it is not an error.
set -euo pipefail

PROMETHEUS=/usr/bin/prometheus
if [ -x "$PROMETHEUS" ] && [ -x /usr/bin/promtool ]; then
  exit 0
fi
LOG_NAME=install-prometheus
# shellcheck source=deploy/local/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# Never start the packaged daemon during the install (exit 101: "action forbidden"); only
# when no policy exists yet, and removed afterwards.
POLICY=/usr/sbin/policy-rc.d
ADDED_POLICY=""
if [ ! -e "$POLICY" ]; then
  printf '#!/bin/sh\nexit 101\n' | as_root tee "$POLICY" >/dev/null
  as_root chmod 755 "$POLICY"
  ADDED_POLICY=1
fi
cleanup() { if [ -n "$ADDED_POLICY" ]; then as_root rm -f "$POLICY"; fi; }
trap cleanup EXIT
# --no-install-recommends: the node exporter and friends are not needed.
apt_install --no-install-recommends prometheus || {
  # A postinst that could not start the service leaves the package half-configured; the
  # binaries are there all the same.
  [ -x "$PROMETHEUS" ] || exit 1
  log "the package's service could not be started (ignored)"
}
"$PROMETHEUS" --version 2>&1 | head -1 >&2
