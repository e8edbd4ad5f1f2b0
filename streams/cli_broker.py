"""``docstreams broker start|stop|status``: the local single-node Kafka broker."""

from __future__ import annotations

import json
import os
import sys
from typing import Any

import click

from streams import broker as local_broker
from streams.errors import DocstreamsError
from streams.settings import Settings

__all__ = ["broker"]


class _BrokerGroup(click.Group):
    """A DocstreamsError becomes one clear message and exit code 1, never a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except DocstreamsError as exc:
            raise click.ClickException(str(exc)) from None


def _settings() -> Settings:
    return Settings.from_env(os.environ)


def _progress(message: str) -> None:
    click.echo(message, err=True)


@click.group(cls=_BrokerGroup)
def broker() -> None:
    """Run a local single-node Kafka broker for Docstreams (KRaft, no ZooKeeper).

    \b
    The broker is one Java process (Java 17+) built from the Kafka jars, which Maven
    fetches once from Maven Central. Its state lives under $DOCSTREAMS_HOME/broker
    (default ./.docstreams/broker): libs/ (jars), data/ (topics), logs/server.log,
    server.properties and broker.json (pid and ports). It keeps running after the
    command returns, keeps its data and, where the port is free, its address across
    restarts. `docstreams run` starts it on its own when needed.

    \b
    To use a real cluster instead, set DOCSTREAMS_BOOTSTRAP=host:port[,host:port]
    (and DOCSTREAMS_SECURITY_PROTOCOL, DOCSTREAMS_SASL_*, DOCSTREAMS_SSL_* as needed);
    then no local broker is started.
    """


@broker.command("start", short_help="Start the local broker and wait until it is ready.")
@click.option("--timeout", type=float, default=60.0, show_default=True,
              help="Seconds to wait for the broker to answer metadata requests.")
def start_command(timeout: float) -> None:
    """Start the local broker (or find it running) and wait until it is ready.

    The first start downloads the jars and formats the data directory; later starts
    reuse both. Prints the bootstrap address that Docstreams commands will use.
    """
    settings = _settings()
    if settings.bootstrap:
        click.echo(f"DOCSTREAMS_BOOTSTRAP is set ({settings.bootstrap}): Docstreams uses that "
                   "cluster, so no local broker is started. Unset it to use a local one.")
        return
    info = local_broker.start(settings, timeout=timeout, progress=_progress)
    if info.launched:
        click.echo(f"Kafka broker ready at {info.bootstrap} "
                   f"(pid {info.pid}, ready in {info.ready_seconds:.1f} s).")
    else:
        click.echo(f"Kafka broker already running at {info.bootstrap} (pid {info.pid}).")
    click.echo(f"  data: {info.data_dir}\n  log:  {info.log_file}")
    click.echo("Stop it with `docstreams broker stop`.")


@broker.command("stop", short_help="Stop the local broker (its data stays).")
@click.option("--timeout", type=float, default=20.0, show_default=True,
              help="Seconds to wait after SIGTERM before sending SIGKILL.")
def stop_command(timeout: float) -> None:
    """Stop the local broker. Its data stays, for the next `docstreams broker start`.

    To start over from empty topics, stop it and delete $DOCSTREAMS_HOME/broker/data.
    """
    settings = _settings()
    if local_broker.stop(settings, timeout=timeout):
        click.echo("Kafka broker stopped.")
    else:
        click.echo(f"No local Kafka broker running (home {settings.home}).")


@broker.command("status", short_help="Is it running and answering? Where?")
@click.option("--json", "as_json", is_flag=True, help="Print the status as JSON.")
def status_command(as_json: bool) -> None:
    """Show whether the broker runs and answers, with its address, pid and paths.

    With DOCSTREAMS_BOOTSTRAP set, checks that cluster instead of the local broker.
    Exits 0 when the broker answers and 1 when it does not, so scripts can wait on it.
    """
    report = local_broker.status(_settings())
    click.echo(json.dumps(report, indent=2) if as_json else _describe(report))
    if not report["ready"]:
        sys.exit(1)


def _describe(report: dict[str, Any]) -> str:
    if report["mode"] == "external":
        answer = "answers" if report["ready"] else "does NOT answer"
        return f"Using the cluster at DOCSTREAMS_BOOTSTRAP={report['bootstrap']}: it {answer}."
    if not report["running"]:
        return ("Local Kafka broker: not running. Start it with `docstreams broker start`.\n"
                f"  data: {report['data_dir']}")
    state = "running and ready" if report["ready"] else "running, NOT answering yet"
    return "\n".join([
        f"Local Kafka broker: {state}",
        f"  bootstrap: {report['bootstrap']}",
        f"  pid:       {report['pid']} (since {report['started_at']})",
        f"  data:      {report['data_dir']}",
        f"  log:       {report['log_file']}",
    ])
