#!/usr/bin/env bash
# Installs Debian packages without recommends, as root or through sudo: what the
# .ci/install-*.sh scripts share.   bash .ci/apt-install.sh PACKAGE...
set -euo pipefail

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
fi

export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "$@"
