#!/usr/bin/env bash
# Installs the Debian packages the tool and its tests use, only when something is missing.
# Idempotent and quiet when all is there. `ksplice lab prepare` installs the lab's own set.
set -euo pipefail
need=()
# chromium, prometheus and prometheus-node-exporter: the manager's browser and monitoring tests.
for pkg in gcc-12 binutils elfutils make patch procps iproute2 chromium prometheus prometheus-node-exporter; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  echo "install-deps: installing ${need[*]}" >&2
  $SUDO apt-get update -q >/dev/null
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q "${need[@]}" >/dev/null
fi
