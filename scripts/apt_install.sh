#!/usr/bin/env bash
# apt_install.sh WHAT PACKAGE...: install Debian packages for a test (with sudo -n when not
# root), or say clearly what is missing. The install_*.sh scripts call it when their tools
# are absent; nothing is downloaded but the distribution's packages.
set -euo pipefail
what="$1"; shift
have() { command -v "$1" >/dev/null 2>&1; }
echo "installing $* (Debian packages) for $what..."
sudo=""
if [ "$(id -u)" != 0 ] && have sudo; then sudo="sudo -n"; fi
if have apt-get \
    && $sudo apt-get update -qq \
    && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends \
        "$@" >/dev/null; then
    exit 0
fi
echo "error: could not install $* with apt-get" >&2
echo "hint: install them with your system's package manager (Debian/Ubuntu: apt-get install" \
    "$*); $what needs them" >&2
exit 1
