"""What the engine is doing and how far behind it is, in words: `status`'s table rows and
the `busy: ...` a control command prints when its wait runs out."""

from __future__ import annotations

from typing import Any


def seconds_text(value: float) -> str:
    return f"{value:.0f} s" if value < 120 else f"{value / 60:.0f} min"


def doing_text(engine: dict[str, Any]) -> str:
    """'summarizing (seconds) for 40 s', from `status`'s engine section."""
    doing = str(engine.get("doing", "?"))
    if engine.get("summary_trigger") and doing == "summarizing":
        doing += f" ({engine['summary_trigger']})"
    return f"{doing} for {seconds_text(float(engine.get('for_s') or 0))}"


def engine_text(engine: dict[str, Any] | None) -> str:
    """'summarizing (seconds) for 40 s; summaries 24% of engine time (at most 25% while
    behind)'. Also the `busy: ...` a control command prints when its wait runs out."""
    if not engine:
        return "-"
    text = doing_text(engine)
    share = engine.get("summary_share")
    if share is not None:
        most = engine["summary_share_max"]
        text += f"; summaries {100 * share:.0f}% of engine time (at most {100 * most:.0f}%"
        text += " while behind)"
    held = engine.get("summaries_held_back")
    if held:
        text += f"; {', '.join(held)} summary held back: ingest is owed "
        text += f"{seconds_text(engine['ingest_owed_s'])} first"
    return text


def lag_text(lag: dict[str, Any] | None) -> str:
    if not lag:
        return "-"
    oldest = lag["oldest_unread_s"]
    if oldest is None:
        return "keeping up (nothing waits)"
    verdict = "keeping up" if lag["keeps_up"] else f"BEHIND (over {seconds_text(lag['max_lag_s'])})"
    return (
        f"{verdict}: oldest unread {seconds_text(oldest)} old, {lag['queued_messages']} messages, "
        f"{lag['queued_chars']} chars (~{lag['queued_tokens_estimate']} tokens) queued"
    )
