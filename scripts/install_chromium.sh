#!/usr/bin/env bash
# Install Debian's chromium (/usr/bin/chromium) for the browser e2e test
# (tests/e2e/test_ui.py) when it is absent and apt is available. Idempotent and quiet:
# silent when chromium is there; one line when it installs, or when it cannot (no apt,
# not root) and the test will therefore be skipped. Exits non-zero only if apt-get fails.
# Never downloads a browser build of its own.
set -euo pipefail

[ -x /usr/bin/chromium ] && exit 0

if ! command -v apt-get >/dev/null 2>&1; then
    echo "install_chromium: no apt-get here; the browser test will be skipped" >&2
    exit 0
fi
SUDO=""
if [ "$(id -u)" != 0 ]; then
    if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
        SUDO="sudo -n"
    else
        echo "install_chromium: not root and no sudo; the browser test will be skipped" >&2
        exit 0
    fi
fi

echo "install_chromium: installing Debian's chromium with apt-get" >&2
export DEBIAN_FRONTEND=noninteractive
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
if ! { $SUDO apt-get update -qq && \
       $SUDO apt-get install -y -qq --no-install-recommends chromium; } >"$log" 2>&1; then
    tail -n 20 "$log" >&2
    echo "install_chromium: apt-get failed (output above)" >&2
    exit 1
fi
