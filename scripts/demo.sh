#!/usr/bin/env bash
# The main job, end to end: prepare the lab (Debian's own cloud kernel and its source), build a
# rebootless update from examples/proc-version-banner.patch, boot that kernel in QEMU and, in the
# running guest, show /proc/version, apply the update live, show it changed, view it, undo it
# and show it back. Installs what it needs on first run (npm packages, Debian packages).
set -euo pipefail
cd "$(dirname "$0")/.."
PATCH=${1:-examples/proc-version-banner.patch}
[ -x node_modules/.bin/tsc ] || npm ci --no-audit --no-fund
npm run --silent build
echo "== preparing the lab (first run downloads ~180 MB and prepares the source, a few minutes)"
SRC=$(bin/ksplice lab prepare | tail -n 1)
OUT=$(mktemp -d /tmp/ksplice-demo.XXXXXX)
trap 'rm -rf "$OUT"' EXIT
echo "== ksplice create --src $SRC --patch $PATCH"
# create prints progress on stderr and the package path last on stdout: show both, keep the path.
bin/ksplice create --src "$SRC" --patch "$PATCH" --output-dir "$OUT" >"$OUT/create.out"
cat "$OUT/create.out"
PKG=$(tail -n 1 "$OUT/create.out")
ID=$(basename "$PKG" .tar.gz); ID=${ID#ksplice-}
echo "== booting Debian's kernel in QEMU and updating it live"
bin/ksplice lab run --with "$OUT" -- sh -c "
set -e
echo '--- before: cat /proc/version'; cat /proc/version
echo '--- ksplice apply'; ksplice apply $PKG
echo '--- after: cat /proc/version'; cat /proc/version
echo '--- ksplice view'; ksplice view
echo '--- ksplice undo $ID'; ksplice undo $ID
echo '--- undone: cat /proc/version'; cat /proc/version
echo '--- ksplice view'; ksplice view
echo '--- kernel log'; dmesg | grep 'ksplice: Update'
if dmesg | grep -E 'WARNING|Oops|Call Trace|BUG:'; then echo 'the kernel log shows a problem'; exit 1; fi
"
echo "== done: the running kernel was updated and restored without a reboot"
