#!/bin/sh
# Installs the Debian packages listed in deps/debian-packages.txt (the one
# list both the README and .ci/run use). Needs root or sudo; a no-op when
# everything is already installed.
set -eu
list="$(dirname "$0")/debian-packages.txt"
pkgs=$(grep -v '^#' "$list" | grep -v '^[[:space:]]*$' | tr '\n' ' ')
missing=""
for p in $pkgs; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' ||
        missing="$missing $p"
done
if [ -z "$missing" ] && command -v npm >/dev/null 2>&1; then
    exit 0
fi
if [ "$(id -u)" -eq 0 ]; then
    SUDO=""
elif command -v sudo >/dev/null 2>&1; then
    SUDO="sudo"
else
    echo "deps/install.sh: need root (or sudo) to install:$missing" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
if [ -n "$missing" ]; then
    # shellcheck disable=SC2086
    $SUDO apt-get install -y -qq --no-install-recommends $missing
fi
# Debian's nodejs comes without npm (a separate package); other builds of
# nodejs bundle it and conflict with Debian's npm, so add it only if missing.
if ! command -v npm >/dev/null 2>&1; then
    $SUDO apt-get install -y -qq --no-install-recommends npm
fi
