"""The `streamd` command line. Each command builds options and calls into its module."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from .cli_options import DEFAULT_MODEL, or_exit
from .logsetup import configure_logging
from .run_options import run_options
from .tools.cli import bench, demo, eval_command, keepup, soak
from .tools.eval_summaries_cli import eval_summaries
from .tools.models import models

CONTROL_SOCKET_ENV = "STREAMD_CONTROL_SOCKET"
__all__ = ["DEFAULT_MODEL", "main"]


@click.group(context_settings={"help_option_names": ["-h", "--help"], "show_default": True})
def main() -> None:
    """streamd: one LLM session reading an endless text stream at constant memory.

    \b
    Try it:       streamd demo
    Measure it:   streamd eval --tokens 16384 --max-capacity 256
    Judge it:     streamd eval-summaries /var/log/auth.log --compare
    Run it:       streamd run --config /etc/streamd/streamd.toml
    Feed it:      journalctl -f | streamd send
    Watch it:     streamd status; streamd summaries --follow
    Steer it:     streamd tune --max-capacity 2048; streamd summarize
    Soak it:      streamd soak --duration 600
    Time it:      streamd keepup --rate 5 --duration 600
    Pick a model: streamd models; streamd models --check /srv/models/NAME
    """
    # Every command's events go to stderr: stdout is the summaries', a table's or the
    # JSON of --json (structlog's default printed "model cache entry written" into
    # `streamd eval --json` on a first start). `run` sets its own level and format.
    configure_logging()


# --- the daemon ----------------------------------------------------------------------------


@main.command()
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    envvar="STREAMD_CONFIG",
    show_envvar=True,
    help="TOML config file [default: /etc/streamd/streamd.toml if it exists].",
)
@run_options
def run(config_path: Path | None, **options: Any) -> None:
    """Run the daemon in the foreground until SIGTERM or Ctrl-C.

    Every setting comes, lowest precedence first, from the defaults, the
    --config file, STREAMD_<SECTION>_<KEY> environment variables, then these
    options (each option's help names its key and variable). Text arrives on
    ZeroMQ (`streamd send`) or MQTT; summaries go to stdout, a JSONL file, a
    ZeroMQ PUB socket or an MQTT topic.

    \b
    Example:
      streamd run --max-capacity 2048 --jsonl summaries.jsonl \\
                  --mqtt-host broker.lan --mqtt-topic 'logs/#'

    The first SIGTERM stops intake, ingests what is queued, writes a final
    summary and exits 0; a second one exits at once (1). A setting that
    cannot work exits 2 with one line naming it.
    """
    from .model_source import check_model_name
    from .run_options import load_run_config
    from .service import Service, StartupError

    config = or_exit(lambda: load_run_config(config_path, options))
    # Before torch and transformers load: a model name that cannot work fails in a second.
    or_exit(lambda: check_model_name(config.model.name))
    try:
        sys.exit(Service(config).run())
    except StartupError as error:
        click.echo(f"streamd: {error}", err=True)
        sys.exit(error.exit_code)


@main.command()
@click.option(
    "--connect",
    metavar="ADDR",
    help="The daemon's acked address (its --zmq-acked-bind) [default: ipc://intake.sock "
    "beside the control socket]; with --push, its PULL address (its --zmq-bind) "
    "[default: tcp://127.0.0.1:5555].",
)
@click.option(
    "--push",
    is_flag=True,
    help="Send to a PULL socket (the daemon's --zmq-bind, or any ZeroMQ PULL) without "
    "acknowledgements: at most once (lines in the receiver's buffers at a restart are lost "
    "unseen). Without it, each line counts as sent once the daemon has spooled it, and is "
    "resent across a restart.",
)
@click.option("--mqtt-host", metavar="HOST", help="Publish to this MQTT broker instead.")
@click.option("--mqtt-port", type=click.IntRange(1, 65535), default=1883, help="Broker port.")
@click.option("--mqtt-topic", metavar="TOPIC", help="Topic to publish each line to.")
@click.option("--mqtt-username", metavar="USER", help="MQTT user name.")
@click.option(
    "--mqtt-password",
    metavar="PASSWORD",
    envvar="STREAMD_SOURCES_MQTT_PASSWORD",
    show_envvar=True,
    help="MQTT password (prefer the variable: command lines are visible in ps).",
)
@click.option("--mqtt-tls/--no-mqtt-tls", default=False, help="TLS to the broker.")
@click.option(
    "--mqtt-tls-ca",
    type=click.Path(exists=True, dir_okay=False),
    help="Trust this CA (PEM) for the broker; implies --mqtt-tls.",
)
@click.option(
    "--curve-secret-key",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Our CURVE key pair (NAME.key_secret; its NAME.key must be in the daemon's "
    "security.zmq_curve_authorized_keys). With --curve-server-key.",
)
@click.option(
    "--curve-server-key",
    type=click.Path(dir_okay=False, path_type=Path),
    help="The daemon's public CURVE key file (the NAME.key of its "
    "security.zmq_curve_secret_key_file).",
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=0.01),
    default=5.0,
    help="Seconds a line may wait for the receiver (acked: for an acknowledgement; give "
    "more than a daemon restart takes to ride one out); after one times out, the rest are "
    "tried without waiting long until one goes through.",
)
def send(
    connect: str | None,
    mqtt_host: str | None,
    mqtt_port: int,
    mqtt_topic: str | None,
    mqtt_username: str | None,
    mqtt_password: str | None,
    mqtt_tls: bool,
    mqtt_tls_ca: str | None,
    curve_secret_key: Path | None,
    curve_server_key: Path | None,
    timeout: float,
    push: bool,
) -> None:
    """Send stdin to the daemon, one message per line, until EOF.

    \b
      journalctl -f -o cat | streamd send
      tail -F app.log | streamd send --connect tcp://gpu01:5556 --timeout 120
      tail -F app.log | streamd send --push --connect tcp://gpu01:5555
      tail -F app.log | streamd send --connect tcp://gpu01:5556 \\
          --curve-secret-key me.key_secret --curve-server-key streamd.key
      cat app.log | streamd send --mqtt-host broker.lan --mqtt-topic logs/app

    Blank lines are skipped. By default each line is acknowledged by the daemon
    once spooled (on disk) and resent until it is, across a daemon restart.
    Exits 0 once every line is sent (acknowledged); otherwise 1, with the counts
    and the first reason on stderr.
    """
    from .control import client as commands

    broker = {"host": mqtt_host, "port": mqtt_port, "username": mqtt_username}
    broker |= {"password": mqtt_password, "tls": mqtt_tls, "ca_file": mqtt_tls_ca}
    curve_files = (curve_secret_key, curve_server_key)
    sys.exit(commands.send(connect, mqtt_topic, broker, timeout, curve_files, push))


# --- talking to a running daemon -----------------------------------------------------------

F = TypeVar("F", bound=Callable[..., Any])


def control_options(command: F) -> F:
    """--control-socket and --json, shared by every command that talks to the daemon."""
    command = click.option(
        "--json", "as_json", is_flag=True, help="Print JSON for programs, not text for people."
    )(command)
    return click.option(
        "--control-socket",
        type=click.Path(dir_okay=False, path_type=Path),
        envvar=CONTROL_SOCKET_ENV,
        show_envvar=True,
        help="The daemon's control socket [default: $RUNTIME_DIRECTORY/control.sock, else "
        "$XDG_RUNTIME_DIR/streamd/control.sock, else /run/streamd/control.sock].",
    )(command)


@main.command()
@control_options
def status(control_socket: Path | None, as_json: bool) -> None:
    """Show the running daemon's state, cache, throughput, sources and latencies.

    Exit code: 0 ready, 1 no daemon answers, 3 starting (loading the model) or
    stopping. So `streamd status >/dev/null && ...` waits for nothing but a
    daemon that can take text.
    """
    from .control import client as commands

    sys.exit(commands.status(control_socket, as_json))


@main.command()
@control_options
@click.option(
    "--max-capacity",
    type=int,
    help="Tokens the model sees: pinned prefix + window. Shrinking is instant; growing past "
    "what was allocated reallocates the cache once.",
)
@click.option("--summary-every-tokens", type=int, help="Summarize every N stream tokens (0: off).")
@click.option(
    "--summary-every-seconds", type=float, help="Summarize every S seconds with new text (0: off)."
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=0.1),
    default=60.0,
    help="Seconds to wait for the result. A resize waits for the engine (a summary "
    "running, up to summary.max_seconds); the daemon says at once that it accepted the "
    "change, and if the wait runs out the change still goes on (exit 4).",
)
def tune(
    control_socket: Path | None,
    as_json: bool,
    max_capacity: int | None,
    summary_every_tokens: int | None,
    summary_every_seconds: float | None,
    timeout: float,
) -> None:
    """Change settings of the running daemon, live; prints old -> new.

    \b
      streamd tune --max-capacity 2048
      streamd tune --summary-every-tokens 0 --summary-every-seconds 30

    A value that cannot work is refused with the reason (exit 1), and nothing
    changes. The change lasts until the daemon restarts: put it in the config
    file to keep it.

    Exit code: 0 applied; 1 refused, or no daemon listens; 4 accepted but the
    engine was still busy when --timeout ran out ("busy: summarizing for 40 s"):
    the change is applied when the engine is free.
    """
    from .control import client as commands

    changes = {
        "max_capacity": max_capacity,
        "summary_every_tokens": summary_every_tokens,
        "summary_every_seconds": summary_every_seconds,
    }
    given = {name: value for name, value in changes.items() if value is not None}
    sys.exit(commands.tune(control_socket, as_json, given, timeout))


@main.command()
@control_options
@click.option(
    "--timeout",
    type=click.FloatRange(min=0.1),
    default=120.0,
    help="Seconds to wait: the summary waits for the chunk in flight, then decodes "
    "(at most summary.max_seconds). If the wait runs out, the summary still goes to the "
    "outputs (exit 4).",
)
def summarize(control_socket: Path | None, as_json: bool, timeout: float) -> None:
    """Write a summary of the stream now, and print it.

    It also goes to every output the daemon writes summaries to. If a summary
    is already running, that one is printed (the request joins it).

    Exit code: 0 printed; 1 failed, or no daemon listens; 4 accepted but not
    done when --timeout ran out ("busy: summarizing for 40 s").
    """
    from .control import client as commands

    sys.exit(commands.summarize(control_socket, as_json, timeout))


@main.command()
@control_options
@click.option("--follow", "-f", is_flag=True, help="Keep printing new summaries as they come.")
@click.option(
    "--last",
    type=click.IntRange(min=0),
    help="Print this many recent summaries first [default: 10, or 0 with --follow].",
)
def summaries(control_socket: Path | None, as_json: bool, follow: bool, last: int | None) -> None:
    """Print the recent summaries, or follow new ones (--follow) until Ctrl-C.

    With --json, one JSON object per line (jq-friendly). The daemon keeps the
    last 256; a follower that falls further behind is told how many it missed.
    """
    from .control import client as commands

    sys.exit(commands.summaries(control_socket, as_json, follow, last))


for command in (demo, eval_command, bench, soak, keepup, eval_summaries, models):
    main.add_command(command)

if __name__ == "__main__":
    main()
