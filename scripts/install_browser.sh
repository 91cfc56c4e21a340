#!/usr/bin/env bash
# Installs Debian's chromium and chromium-driver when they are missing: the browser test
# (tests/test_shipping_browser.py) drives the draw-a-digit page in headless Chromium through the
# system chromedriver. Nothing is downloaded but the distribution's packages. `make test` runs it.
set -euo pipefail
have() { command -v "$1" >/dev/null 2>&1; }
if have chromedriver && { have chromium || have chromium-browser || have google-chrome; }; then
    exit 0
fi
echo "installing chromium and chromium-driver (Debian packages) for the browser test..."
sudo=""
if [ "$(id -u)" != 0 ] && have sudo; then sudo="sudo -n"; fi
if have apt-get \
    && $sudo apt-get update -qq \
    && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends \
        chromium chromium-driver >/dev/null; then
    exit 0
fi
echo "error: could not install chromium and chromium-driver with apt-get" >&2
echo "hint: install Chromium and its chromedriver (Debian/Ubuntu: apt-get install chromium" \
    "chromium-driver; elsewhere put chromium and chromedriver on PATH); the browser test needs" \
    "them" >&2
exit 1
