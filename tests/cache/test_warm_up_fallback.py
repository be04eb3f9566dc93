"""Without a working torch.compile toolchain, captures fall back to the eager forward."""

from __future__ import annotations

import logging
from collections.abc import Callable

import pytest

from streamd.cache.capture import warm_up_or_unfused


def _calls() -> tuple[list[str], Callable[[str], Callable[[], None]]]:
    seen: list[str] = []

    def named(name: str) -> Callable[[], None]:
        def run() -> None:
            seen.append(name)
            if name == "broken":
                raise RuntimeError("InductorError: no working C compiler")

        return run

    return seen, named


def test_a_compile_that_fails_falls_back_to_eager_with_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    seen, named = _calls()
    eager = named("eager")
    with caplog.at_level(logging.WARNING):
        chosen = warm_up_or_unfused(named("broken"), eager, lambda fn: fn(), "the decode step")
    assert chosen is eager
    assert seen == ["broken", "eager"]
    assert "torch.compile of the decode step failed" in caplog.text
    assert "no working C compiler" in caplog.text


def test_a_working_compile_is_kept_and_eager_never_runs() -> None:
    seen, named = _calls()
    compiled = named("compiled")
    assert warm_up_or_unfused(compiled, named("eager"), lambda fn: fn(), "x") is compiled
    assert seen == ["compiled"]


def test_an_eager_failure_is_raised_not_hidden() -> None:
    _, named = _calls()
    broken = named("broken")
    with pytest.raises(RuntimeError, match="no working C compiler"):
        warm_up_or_unfused(broken, broken, lambda fn: fn(), "x")


def test_an_eager_bound_method_is_recognised_as_eager() -> None:
    """`obj.method` makes a new bound method at every access: the check is equality."""

    class Runner:
        def __init__(self) -> None:
            self.calls = 0
            self.capturable = self.forward

        def forward(self) -> None:
            self.calls += 1
            raise RuntimeError("CUDA out of memory")

    runner = Runner()
    with pytest.raises(RuntimeError, match="out of memory"):
        warm_up_or_unfused(runner.capturable, runner.forward, lambda fn: fn(), "x")
    assert runner.calls == 1  # not retried as if a compile had failed
