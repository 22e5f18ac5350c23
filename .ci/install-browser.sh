#!/usr/bin/env bash
# Installs Debian's headless Chromium and its WebDriver for the kiosk dashboard test.
# Idempotent: does nothing when both are already present. Needs root (or sudo) and apt.
#   sudo .ci/install-browser.sh        (before .ci/test.sh, with CI=true set for the tests)
set -euo pipefail

if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then
    echo "chromium and chromedriver already installed: $(chromium --version 2>/dev/null || true)"
    exit 0
fi

# chromium-driver ships /usr/bin/chromedriver matched to the chromium version
bash "$(dirname "$0")/apt-install.sh" chromium chromium-driver fonts-dejavu-core

chromium --version
chromedriver --version
