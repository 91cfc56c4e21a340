#!/usr/bin/env bash
# Installs Debian's chromium and chromium-driver when they are missing: the browser test
# (tests/test_shipping_browser.py) drives the draw-a-digit page in headless Chromium through the
# system chromedriver. Nothing is downloaded but the distribution's packages. `make test` runs it.
set -euo pipefail
have() { command -v "$1" >/dev/null 2>&1; }
if have chromedriver && { have chromium || have chromium-browser || have google-chrome; }; then
    exit 0
fi
exec bash "$(dirname "$0")/apt_install.sh" "the browser test" chromium chromium-driver
