"""Logging: structlog for our code, the stdlib loggers of libraries routed through it.

Events go to stderr (stdout is the summaries'). On a terminal, structlog's console
renderer; otherwise one JSON object per line, prefixed with its syslog priority `<N>` when
journald reads the stream. Values under secret-looking keys
are logged as '***'.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping
from typing import Any, TextIO

import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

# syslog(3) priorities journald understands in a `<N>` prefix.
SYSLOG_PRIORITY = {"debug": 7, "info": 6, "warning": 4, "error": 3, "critical": 2}
SECRET_WORDS = ("password", "passwd", "secret", "credential", "api_key", "private_key")
REDACTED = "***"
# Libraries that are chatty at INFO about things an operator does not act on.
QUIET_LIBRARIES = ("asyncio", "urllib3", "httpx", "httpcore", "filelock")
_HANDLER_NAME = "streamd"


def journald_reads(stream: TextIO) -> bool:
    """True when $JOURNAL_STREAM ("device:inode") is the file behind `stream`."""
    expected = os.environ.get("JOURNAL_STREAM", "")
    try:
        device, inode = (int(part) for part in expected.split(":"))
        stat = os.fstat(stream.fileno())
    except (ValueError, OSError):
        return False
    return (stat.st_dev, stat.st_ino) == (device, inode)


def _looks_secret(key: object) -> bool:
    return isinstance(key, str) and any(word in key.lower() for word in SECRET_WORDS)


def _redacted(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: REDACTED if _looks_secret(k) and v else _redacted(v) for k, v in value.items()}
    return value


def redact_secrets(_logger: WrappedLogger, _method: str, event_dict: EventDict) -> EventDict:
    """Processor: '***' for secret-looking keys, here and in nested mappings."""
    for key, value in event_dict.items():
        event_dict[key] = REDACTED if _looks_secret(key) and value else _redacted(value)
    return event_dict


def _syslog_prefixed(renderer: Processor) -> Processor:
    """Wrap a renderer so its line starts with `<N>` for the event's level."""

    def render(logger: WrappedLogger, method: str, event_dict: EventDict) -> str:
        priority = SYSLOG_PRIORITY.get(str(event_dict.get("level", "info")), 6)
        line = renderer(logger, method, event_dict)
        return f"<{priority}>{line.decode() if isinstance(line, bytes) else line}"

    return render


def _renderers(fmt: str, stream: TextIO) -> list[Processor]:
    """The formatter's last processors: traceback handling and the line itself."""
    if fmt == "auto":
        fmt = "console" if stream.isatty() else "json"
    if fmt == "console":
        return [structlog.dev.ConsoleRenderer(colors=stream.isatty())]
    json_renderer: Processor = structlog.processors.JSONRenderer()
    # journald reads the stream: `<N>` makes `journalctl -p warning` work (journald strips the
    # prefix; SyslogLevelPrefix= is on by default).
    if journald_reads(stream):
        json_renderer = _syslog_prefixed(json_renderer)
    return [structlog.processors.format_exc_info, json_renderer]


def _shared_processors(foreign: bool) -> list[Processor]:
    """What every record goes through, ours and (foreign=True) the libraries' alike."""
    # A stdlib record's extra={...} fields are added before redaction sees them.
    extras: list[Processor] = [structlog.stdlib.ExtraAdder()] if foreign else []
    return [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        *extras,
        redact_secrets,
    ]


def configure_logging(level: str = "info", fmt: str = "auto", stream: TextIO | None = None) -> None:
    """Route structlog and the stdlib root logger to one handler on `stream` (stderr: stdout
    carries the summaries, so `streamd run | jq .text` reads only them).

    level: debug|info|warning|error; fmt: auto|json|console (see the module doc).
    Calling it again replaces the handler it installed before.
    """
    stream = sys.stderr if stream is None else stream
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=_shared_processors(foreign=True),
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            *_renderers(fmt, stream),
        ],
    )
    handler = logging.StreamHandler(stream)
    handler.set_name(_HANDLER_NAME)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == _HANDLER_NAME]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    for name in QUIET_LIBRARIES:
        logging.getLogger(name).setLevel(max(logging.WARNING, root.level))
    structlog.configure(
        processors=[
            *_shared_processors(foreign=False),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        # Not cached: loggers made at import time must follow a later configure_logging().
        cache_logger_on_first_use=False,
    )
    if "transformers" in sys.modules:
        route_transformers_logging()


def route_transformers_logging() -> None:
    """Make transformers log through the root handler instead of its own stderr handler.

    Call it after importing transformers (configure_logging does when it already is);
    it is not imported here because that takes most of a second, too slow for the CLI.
    """
    from transformers.utils import logging as hf_logging

    hf_logging.disable_default_handler()
    hf_logging.enable_propagation()


def remove_logging() -> None:
    """Undo configure_logging: drop our handler and structlog's configuration (tests, reload)."""
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == _HANDLER_NAME]:
        root.removeHandler(old)
    structlog.reset_defaults()
