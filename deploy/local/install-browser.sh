#!/usr/bin/env bash
# Installs Debian's headless-capable Chromium for the pages' browser tests
# (tests/e2e/test_desk_page.py drives it through Playwright with executable_path).
# Idempotent: does nothing when /usr/bin/chromium is already there. Never downloads a
# browser build of its own (`playwright install` is not used).
set -euo pipefail
LOG_NAME=install-browser
# shellcheck source=deploy/local/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

CHROMIUM=/usr/bin/chromium
[ -x "$CHROMIUM" ] && exit 0
apt_install --no-install-recommends chromium fonts-dejavu-core
"$CHROMIUM" --version >&2
