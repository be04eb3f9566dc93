"""Benchmark FactsTracker.observe: lines/s and memory over a stream of mostly distinct lines.

The lines are made from the bundled fail2ban sample: IPs, numbers and user names varied,
and a random word put into each, so that nearly every line (and masked line) is new: the
worst case. `--source varied` keeps the sample's events with other values (templates repeat,
values vary, as in real logs); `--source sample` replays the sample as it is. Usage:
    .venv/bin/python scripts/bench_facts.py [--lines N] [--source synthetic|varied|sample]
On a shared machine, pin it to one core: taskset -c 1 ... (it is single-threaded).
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import random
import re
import resource
import time
from collections.abc import Iterator
from pathlib import Path

from streamd.facts.entities import scan_line
from streamd.facts.tracker import FactsTracker

SAMPLE = Path(__file__).resolve().parents[1] / "daemon" / "data" / "fail2ban-sample.log"
# The varied parts of a line: IPv4 addresses, other numbers, and user names (found per line).
_VARIABLE = re.compile(r"(?<![\w.])(\d{1,3}(?:\.\d{1,3}){3})(?![\w.])|(?<![\w.:-])(\d+)(?![\w.:-])")
# The leading timestamp stays as it is (its numbers are not varied).
_LEADING_TIME = re.compile(r".{0,24}?\d\d:\d\d:\d\d\S*")


def _pieces(line: str) -> list[str | int]:
    """The line cut at its variable parts: text, then a kind (0 ip, 1 number, 2 user)."""
    users = {value for kind, value in scan_line(line).entities if kind == "user" and len(value) > 2}
    pattern = _VARIABLE.pattern
    if users:
        names = "|".join(re.escape(u) for u in sorted(users, key=len, reverse=True))
        pattern += rf"|(?<![\w.@-])({names})(?![\w.@-])"
    stamp = _LEADING_TIME.match(line)
    last = stamp.end() if stamp else 0
    pieces: list[str | int] = [line[:last]]
    for match in re.compile(pattern).finditer(line, last):
        pieces.append(line[last : match.start()])
        pieces.append(match.lastindex - 1 if match.lastindex else 1)
        last = match.end()
    pieces.append(line[last:])
    return pieces


def synthetic_lines(count: int, seed: int = 1, new_word: bool = True) -> Iterator[str]:
    rng = random.Random(seed)
    letters = "abcdefghijklmnopqrstuvwxyz"
    words = ["".join(rng.choices(letters, k=rng.randint(4, 9))) for _ in range(20_000)]
    users = ["".join(rng.choices(letters, k=rng.randint(3, 8))) for _ in range(5_000)]
    sources = [_pieces(line) for line in SAMPLE.read_text().splitlines() if line.strip()]
    for _ in range(count):
        out = []
        for piece in rng.choice(sources):
            if isinstance(piece, str):
                out.append(piece)
            elif piece == 0:
                out.append(".".join(str(rng.randint(1, 254)) for _ in range(4)))
            elif piece == 1:
                out.append(str(rng.randint(1, 65535)))
            else:
                out.append(rng.choice(users))
        if not new_word:
            yield "".join(out)
            continue
        tokens = "".join(out).split(" ")
        # a random word among the message's last words: the masked line is new too
        at = rng.randint(max(len(tokens) // 2, 1), len(tokens))
        tokens.insert(at, rng.choice(words))
        yield " ".join(tokens)


def source_lines(source: str, count: int) -> Iterator[str]:
    """synthetic: nearly every line new; varied: the sample's events with other addresses,
    numbers and users; sample: the sample's lines as they are, over and over."""
    if source != "sample":
        yield from synthetic_lines(count, new_word=source == "synthetic")
        return
    lines = [line for line in SAMPLE.read_text().splitlines() if line.strip()]
    for at in range(count):
        yield lines[at % len(lines)]


def _rss_mib() -> float:
    with open("/proc/self/statm") as statm:
        pages = int(statm.read().split()[1])
    return pages * resource.getpagesize() / 2**20


def run(total: int, batch_size: int, close_every: int, source: str = "synthetic") -> None:
    tracker = FactsTracker()
    lines = source_lines(source, total)
    spent = cpu = 0.0
    done = 0
    rss_by_tenth: list[float] = []
    batches = 0
    while done < total:
        batch = [next(lines) for _ in range(min(batch_size, total - done))]
        start, start_cpu = time.perf_counter(), time.process_time()
        tracker.observe(batch)
        spent += time.perf_counter() - start
        cpu += time.process_time() - start_cpu
        done += len(batch)
        batches += 1
        if close_every and batches % close_every == 0:
            tracker.period_facts()
            tracker.close_period()
        if done >= (len(rss_by_tenth) + 1) * total // 10:
            rss_by_tenth.append(_rss_mib())
    start = time.perf_counter()
    facts = tracker.period_facts()
    facts_s = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"lines: {done:,} in batches of {batch_size}; observe: {spent:.1f} s")
    # CPU seconds leave out the time other processes had the core (a shared machine)
    print(f"throughput: {done / spent:,.0f} lines/s, {done / cpu:,.0f} lines per CPU second")
    print(
        f"RSS at 10%: {rss_by_tenth[0]:.0f} MiB, at 100%: {_rss_mib():.0f} MiB, peak {peak:.0f} MiB"
    )
    print("RSS each tenth (MiB):", " ".join(f"{rss:.0f}" for rss in rss_by_tenth))
    print(f"clusters alive {tracker.miner.alive}, evicted {tracker.miner.evicted}")
    print(f"period_facts(): {facts_s * 1000:.0f} ms, {len(facts.templates)} templates shown")
    _print_distinct(min(total, 100_000), source)


def _print_distinct(count: int, source: str) -> None:
    """How distinct the stream is (measured after the run: it keeps the lines)."""
    raw = list(source_lines(source, count))
    masked = {scan_line(line).masked for line in raw}
    print(f"distinct in the first {count:,}: lines {len(set(raw)) / count:.1%}, ", end="")
    print(f"masked lines {len(masked) / count:.1%}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--batch", type=int, default=40)
    parser.add_argument("--close-every", type=int, default=0, help="batches per period (0: never)")
    parser.add_argument("--source", choices=("synthetic", "varied", "sample"), default="synthetic")
    parser.add_argument("--profile", action="store_true", help="print a cProfile of the run")
    args = parser.parse_args()
    if args.profile:
        profiler = cProfile.Profile()
        profiler.runcall(run, args.lines, args.batch, args.close_every, args.source)
        pstats.Stats(profiler).sort_stats("tottime").print_stats(25)
    else:
        run(args.lines, args.batch, args.close_every, args.source)


if __name__ == "__main__":
    main()
