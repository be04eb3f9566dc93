#!/usr/bin/env bash
# `systemd-analyze verify` on the units as `scripts/install.sh --system` installs them, in a
# throwaway root: no user, file or service of this machine changes. Run after install.sh
# (it needs .venv). CI runs it; so does tests/daemon/test_systemd_units.py.
set -euo pipefail
cd "$(dirname "$0")/.."

root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
if ! log=$(bash scripts/install.sh --system --root "$root" --skip-venv 2>&1); then
    echo "$log" >&2
    exit 1
fi
# verify resolves the units' dependencies (sysinit.target, ...) inside the root.
units=/usr/lib/systemd/system
[[ -d $units ]] || units=/lib/systemd/system
mkdir -p "$root/usr/lib/systemd"
cp -r "$units" "$root/usr/lib/systemd/"
# Building the venv takes minutes of pip, so its streamd script is stood in by this
# checkout's, at the path install.sh links /usr/local/bin/streamd to: a unit whose
# ExecStart is not where install.sh puts streamd fails here.
target=$(readlink "$root/usr/local/bin/streamd")
install -D -m 0755 .venv/bin/streamd "$root$target"
for unit in streamd.service streamd@0.service; do
    # verify exits 0 on unknown keys and unparsable values, printing a warning: any
    # output at all is a finding.
    if ! found=$(systemd-analyze verify --man=no --root="$root" "$unit" 2>&1) || [[ -n $found ]]; then
        echo "verify_units: $unit:" >&2
        echo "$found" >&2
        exit 1
    fi
done
echo "verify_units: streamd.service and streamd@.service verify as installed" >&2
