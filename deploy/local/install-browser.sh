#!/usr/bin/env bash
# Installs Debian's headless-capable Chromium for the desk page's browser test
# (tests/e2e/test_desk_page.py drives it through Playwright with executable_path).
# Idempotent: does nothing when /usr/bin/chromium is already there. Never downloads a
# browser build of its own (`playwright install` is not used).
set -euo pipefail

CHROMIUM=/usr/bin/chromium
if [ -x "$CHROMIUM" ]; then
  exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null 2>&1 || { echo "install-browser: root or sudo is needed to install chromium" >&2; exit 1; }
  SUDO="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q
$SUDO apt-get install -y -q --no-install-recommends chromium fonts-dejavu-core
"$CHROMIUM" --version >&2
