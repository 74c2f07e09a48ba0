#!/usr/bin/env bash
# Installs the Debian packages sparsec's tests need, when missing. Idempotent.
# Each backend adds what it needs to PACKAGES with the command that proves it is there.
set -euo pipefail
PACKAGES=()
need() {  # need <command> <debian package>
  command -v "$1" >/dev/null 2>&1 || PACKAGES+=("$2")
}
# (filled in by the backends that need system tools)
if [ ${#PACKAGES[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  echo "sysdeps: installing ${PACKAGES[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${PACKAGES[@]}" >/dev/null
fi
