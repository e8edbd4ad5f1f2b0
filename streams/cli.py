"""The ``docstreams`` command line. Each command builds :class:`Settings` from the
environment once, here at the edge, and passes it down."""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click
from confluent_kafka import KafkaException
from rich.console import Console
from rich.table import Table

from streams import broker as local_broker
from streams.errors import DocstreamsError
from streams.names import STAGES as STAGE_NAMES
from streams.settings import Settings

# Results on stdout (so `status > file` and pipes work); progress, notices and errors on
# stderr. Off a terminal, tables are not cut to 80 columns unless COLUMNS says so.
_WIDTH = None if sys.stdout.isatty() or os.environ.get("COLUMNS") else 200
console = Console(soft_wrap=True, width=_WIDTH)
err_console = Console(stderr=True, soft_wrap=True)
ENV_HELP = """
\b
Environment:
  DOCSTREAMS_BOOTSTRAP   Kafka bootstrap servers; unset = local broker under .docstreams/
  DOCSTREAMS_HOME        state folder (default ./.docstreams): blobs, outputs, sink, logs
  DOCSTREAMS_SECURITY_PROTOCOL, DOCSTREAMS_SASL_*, DOCSTREAMS_SSL_*   passed to every client
"""


def _settings() -> Settings:
    return Settings.from_env(os.environ)


def _bootstrap_starting(settings: Settings) -> str:
    """The cluster to use; the local broker is started (and said so) if none is set."""
    if settings.bootstrap:
        return settings.bootstrap
    if not local_broker.status(settings).get("ready"):
        err_console.print(f"starting the local broker under {settings.home}/broker ...")
    return local_broker.resolve_bootstrap(settings)


def _fail(exc: DocstreamsError) -> None:
    if "--json" in sys.argv[1:]:
        # A script asked for JSON: give it JSON on failure too.
        click.echo(json.dumps({"error": str(exc), "reason": exc.reason}))
    else:
        err_console.print(f"[red]error:[/] {exc}")
    sys.exit(1)


class _Group(click.Group):
    """Turns DocstreamsError into one clear line and exit code 1, no traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except DocstreamsError as exc:
            _fail(exc)
        except KafkaException as exc:
            # A client call that failed outright (an unreachable cluster, say): one line
            # that says so, not a traceback.
            bootstrap = os.environ.get("DOCSTREAMS_BOOTSTRAP") or "the local broker"
            _fail(DocstreamsError(f"Kafka call failed ({exc}); is {bootstrap} reachable? "
                                  "`docstreams broker status` checks the local one",
                                  reason="broker_unavailable"))


@click.group(cls=_Group, help=f"""Docstreams: long document-processing jobs as an exactly-once,
pausable event stream on Apache Kafka.

\b
Start here:
  docstreams run ./packets --job loan-17     the whole job on a local broker
  docstreams status --job loan-17            where every document is
{ENV_HELP}""")
@click.option("-v", "--verbose", is_flag=True, help="Log what the workers do.")
@click.version_option(package_name="docstreams", message="%(prog)s %(version)s")
def main(verbose: bool) -> None:
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")


def load_passwords(path: Path | None) -> dict[str, str]:
    if path is None:
        return {}
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise DocstreamsError(f"cannot read passwords file {path}: {exc}",
                              reason="bad_request") from exc
    if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
        raise DocstreamsError(f"{path} must be a JSON object of file name -> password",
                              reason="bad_request")
    return data


@main.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option("--job", "job_id", help="Job id (default: the first path's name).")
@click.option("--passwords", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="JSON file mapping file name to password, for encrypted PDFs.")
@click.option("--workers", default=1, show_default=True, help="Worker processes to start.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def run(paths: tuple[Path, ...], job_id: str | None, passwords: Path | None, workers: int,
        as_json: bool) -> None:
    """Run a job end to end: broker, workers, publish, progress, summary.

    Every file under PATHS (folders recursively) becomes a document of the job. Each
    ends decided, in review or dead-lettered with a reason; outputs go to
    .docstreams/out/<job>/<doc_id>.json and summary.json. Running the same command
    again resumes the job: what was committed is not redone.

    Ctrl-C (or SIGTERM, or a closed terminal) pauses the job safely: the batch in
    flight commits, the workers stop, and run exits 130; run the same command to
    resume. A pause of the job made with `docstreams pause --job` is not lifted by
    run: it stops and says who paused it and how to resume it.
    """
    from streams.job import JobInterrupted, catch_interrupts, run_job

    catch_interrupts()
    settings = _settings()
    job = job_id or paths[0].resolve().name
    try:
        summary = run_job(settings, list(paths), job, load_passwords(passwords), workers,
                          err_console)
    except JobInterrupted as exc:
        err_console.print(str(exc))
        sys.exit(130)
    except KeyboardInterrupt:
        # Ctrl-C before the job was followed (broker start, publishing): no work is
        # under way to pause, and publishing is idempotent.
        err_console.print(f"\n[yellow]interrupted while job {job} was starting[/]: what was "
                          "published stays in the job and nothing is redone; run the same "
                          "command again to continue")
        sys.exit(130)
    if as_json:
        click.echo(json.dumps(summary, indent=2))
    else:
        _print_status(summary)
        console.print(f"outputs: {summary['outputs']}")
        console.print(f"this run {summary['elapsed_s']} s; the job processed "
                      f"{summary['documents']} documents, {summary['pages']} pages in "
                      f"{summary['processing_s']} s ({summary['documents_per_s']} docs/s, "
                      f"{summary['pages_per_s']} pages/s)")
        if not settings.bootstrap:
            console.print("the local broker is still running; stop it with "
                          "[bold]docstreams broker stop[/]")


def _print_status(snap: dict[str, Any]) -> None:
    o = snap["outcomes"]
    if snap["documents"] == 0:
        console.print(f"[bold]job {snap['job']}[/]: no documents submitted yet")
        return
    console.print(f"[bold]job {snap['job']}[/]: {snap['documents']} documents, "
                  f"{'complete' if snap['complete'] else 'in progress'} — "
                  f"decided {o['decided']}, review {o['review']}, dead letter {o['dead_letter']}")
    table = Table("stage", "done", "executions", "redone")
    for stage, st in snap["stages"].items():
        # Work done twice (crashes, aborts); a resubmission from `dlq retry` is a new
        # generation of the document, counted in executions but not as redone.
        redone = snap.get("redone", {}).get(stage, 0)
        table.add_row(stage, str(st["done"]), str(st["executions"]),
                      f"[yellow]{redone}[/]" if redone > 0 else "0")
    console.print(table)


def _print_control(paused: list[dict[str, Any]], acks: list[dict[str, Any]]) -> None:
    import datetime as dt

    from streams.control import paused_since

    def iso(ms: int) -> str:
        return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).isoformat(timespec="seconds")

    for p in paused:
        began = paused_since(p)
        again = f", paused again at {iso(p['at_ms'])}" if began != p["at_ms"] else ""
        console.print(f"[yellow]paused[/] {p['scope']} by {p['by']} since {iso(began)}{again}"
                      + (f": {p['reason']}" if p["reason"] else "") + f" (mode {p['mode']})")
        if p.get("warning"):
            console.print(f"  [red]warning:[/] {p['warning']}")
    if acks:
        table = Table("stage", "worker", "live", "last command", "state", "acked at")
        for a in acks:
            at = dt.datetime.fromtimestamp(a["at_ms"] / 1000, dt.UTC).isoformat(timespec="seconds")
            table.add_row(a["stage"], a["worker"], "yes" if a.get("live") else "[dim]gone[/]",
                          a["scope"], a["state"], at)
        console.print(table)


@main.command()
@click.option("--job", "jobs", multiple=True, help="Only this job (repeatable).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def status(jobs: tuple[str, ...], as_json: bool) -> None:
    """Where every job stands: documents, outcomes, per-stage done and executions.

    Executions are counted before work starts. Redone is work done twice for the
    same document: a crash or a `pause --now` abort; 0 means nothing was done twice.
    A `dlq retry` starts a new generation of a document: its executions are counted,
    but it is not redone work.
    """
    from streams import admin
    from streams.status import job_status

    settings = _settings()
    bootstrap = local_broker.resolve_bootstrap(settings, start=False)
    control = admin.read_control(settings, bootstrap)
    paused = admin.paused_with_warnings(settings, bootstrap, control["paused"])
    snaps = job_status(settings, bootstrap, jobs or None)
    unknown = [s["job"] for s in snaps if s["documents"] == 0]
    if jobs and unknown:
        raise DocstreamsError(f"no documents were ever submitted to job(s) "
                              f"{', '.join(unknown)} on {bootstrap}; `docstreams status` "
                              "lists every job", reason="not_found")
    for snap in snaps:
        snap["paused"] = [p for p in paused
                          if p["scope"] in ("all", f"job:{snap['job']}")
                          or p["scope"].startswith("stage:")]
    if as_json:
        if jobs and len(jobs) == 1:
            click.echo(json.dumps({**snaps[0], "acks": control["acks"]}, indent=2))
        else:
            click.echo(json.dumps({"jobs": snaps, "paused": paused, "acks": control["acks"]},
                                  indent=2))
        return
    if not snaps:
        console.print("no jobs yet")
    for snap in snaps:
        _print_status(snap)
    _print_control(paused, control["acks"])


def _scope_options(fn: Any) -> Any:
    fn = click.option("--job", "job", help="Only this job's documents (others keep flowing).")(fn)
    fn = click.option("--stage", "stage", type=click.Choice(list(STAGE_NAMES)),
                      help="One stage, for every job.")(fn)
    fn = click.option("--all", "all_", is_flag=True, help="Every stage of every job.")(fn)
    return fn


def _print_acks(report: Any, console_: Console) -> None:
    table = Table("stage", "worker", "drained", "aborted", "parked")
    for (stage, worker), ack in sorted(report.acks.items()):
        parked = ", ".join(f"{j}: {n}" for j, n in ack["parked"].items()) or "-"
        table.add_row(stage, worker, str(ack["drained"]), "yes" if ack["aborted"] else "no",
                      parked)
    console_.print(table)


MAX_REASON = 500


def _short_reason(ctx: click.Context, param: click.Parameter, value: str) -> str:
    """A reason is shown in every status and ack table: keep it to a sentence or two."""
    if len(value) > MAX_REASON:
        raise click.BadParameter(f"{len(value)} characters; keep it to {MAX_REASON} (a "
                                 "ticket link says the rest)")
    return value


def _set_and_wait(scope: str, state: str, reason: str, mode: str, wait: bool, timeout: float,
                  as_json: bool, still_paused: Sequence[str] = ()) -> None:
    from streams import admin
    from streams.control import PAUSED, ControlClient, ControlView, scope_flags
    from streams.topics import check_reachable
    from streams.worker import ensure_pipeline_topics

    settings = _settings()
    bootstrap = local_broker.resolve_bootstrap(settings, start=False)
    check_reachable(settings, bootstrap)
    ensure_pipeline_topics(settings, bootstrap)  # a command may come before any job
    since = None
    if state == PAUSED:  # pausing a paused scope again keeps the age of its pause
        view = ControlView(settings, bootstrap)
        try:
            since = view.load_to_end().paused_since(scope)
        finally:
            view.close()
    entry = ControlClient(settings, bootstrap).set_state(scope, state, reason=reason, mode=mode,
                                                         paused_since_ms=since)
    out: dict[str, Any] = {"command": entry}
    if state != PAUSED:
        out["still_paused"] = list(still_paused)
    if wait:
        report = admin.wait_for_acks(settings, bootstrap, entry, timeout)
        stages = admin.affected_stages(scope)
        lag = admin.stage_lag(settings, bootstrap, stages)
        parked: dict[str, int] = {}
        for ack in report.acks.values():
            for job, n in ack["parked"].items():
                parked[job] = parked.get(job, 0) + n
        drained = {s: sum(a["drained"] for (st, _), a in report.acks.items() if st == s)
                   for s in stages}
        out.update({"acknowledged": report.complete, "seconds": round(report.seconds, 3),
                    "workers": sorted(f"{s}.{w}" for s, w in report.expected),
                    "missing": [f"{s}.{w}" for s, w in report.missing()],
                    "drained": drained, "queued": lag, "parked": parked})
    if as_json:
        click.echo(json.dumps(out, indent=2))
    else:
        console.print(f"{state} [bold]{scope}[/] by {entry['by']}"
                      + (f" ({reason})" if reason else "") + f", command {entry['command_id']}")
        if wait:
            if out["acknowledged"]:
                console.print(f"all {len(out['workers'])} live workers of "
                              f"{', '.join(stages)} acknowledged in {out['seconds']} s")
                _print_acks(report, console)
            elif not out["workers"]:
                console.print("[yellow]no live workers: the state is recorded and every "
                              "worker will apply it when it starts")
            else:
                console.print(f"[red]not acknowledged within {timeout} s by: "
                              f"{', '.join(out['missing'])}")
            console.print("queued per stage: " + ", ".join(f"{s} {n}" for s, n in lag.items()))
            if parked:
                console.print("parked per job: " + ", ".join(f"{j} {n}" for j, n in parked.items()))
            if scope.startswith("job:") and state == PAUSED:
                console.print("[dim]a stage parks the paused job's records as it reads them: "
                              "queued records of the job are parked when they are read")
        elif not admin.live_members(settings, bootstrap, admin.affected_stages(scope)):
            console.print("[yellow]no worker is running: the state is recorded and applies "
                          "when one starts (`docstreams worker`, or `docstreams run`)")
        for other in still_paused:  # a resume of one scope lifts no other
            console.print(f"[yellow]still paused: {other}[/] "
                          f"(`docstreams resume {scope_flags(other)}`)")
    if wait and not out["acknowledged"] and out["workers"]:
        sys.exit(3)


def _refuse_unknown_job(job: str) -> None:
    """A pause of a job nobody submitted to is most often a typo that leaves the real
    job running: refuse it, naming the jobs there are."""
    from streams.status import job_status

    settings = _settings()
    bootstrap = local_broker.resolve_bootstrap(settings, start=False)
    known = [snap["job"] for snap in job_status(settings, bootstrap, None)
             if snap["documents"] > 0]
    if job not in known:
        raise DocstreamsError(
            f"no documents were ever submitted to job {job!r} on {bootstrap}; known jobs: "
            f"{', '.join(sorted(known)) or 'none'}. To pause it before it starts, add --force",
            reason="not_found")


@main.command()
@_scope_options
@click.option("--reason", default="", callback=_short_reason,
              help=f"Why: recorded with who and when (at most {MAX_REASON} characters).")
@click.option("--now", is_flag=True, help="Abort the batch in flight (it is re-read after "
              "resume) instead of letting it finish and commit.")
@click.option("--wait", is_flag=True, help="Return once every live worker has acknowledged.")
@click.option("--timeout", default=60.0, show_default=True, help="Seconds to --wait.",
              type=click.FloatRange(min=0, min_open=True))
@click.option("--force", is_flag=True, help="Pause a --job no document was submitted to "
              "yet (it will come up paused); without it, an unknown job is refused as a "
              "likely typo.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def pause(all_: bool, stage: str | None, job: str | None, reason: str, now: bool, wait: bool,
          timeout: float, force: bool, as_json: bool) -> None:
    """Pause everything, one stage, or one job: durably, from any terminal.

    The pause is desired state on the compacted control topic, so it holds across worker
    restarts, rebalances and broker restarts; a worker that starts later comes up paused.
    By default the batch in flight finishes and commits first (drain). A paused job's
    records are parked and other jobs keep flowing. With --wait, returns when it is safe:
    every live worker has acknowledged with its committed offsets (exit 3 if not in time).
    Pausing a paused scope again updates who and why; the pause keeps its start time.
    """
    from streams.control import PAUSED, scope_key

    scope = scope_key(all_, stage, job)
    if job is not None and not force:
        _refuse_unknown_job(job)
    _set_and_wait(scope, PAUSED, reason, "now" if now else "drain", wait,
                  timeout, as_json)


@main.command()
@_scope_options
@click.option("--reason", default="", callback=_short_reason,
              help=f"Recorded with who and when (at most {MAX_REASON} characters).")
@click.option("--wait", is_flag=True, help="Return once every live worker has acknowledged.")
@click.option("--timeout", default=60.0, show_default=True, help="Seconds to --wait.",
              type=click.FloatRange(min=0, min_open=True))
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def resume(all_: bool, stage: str | None, job: str | None, reason: str, wait: bool,
           timeout: float, as_json: bool) -> None:
    """Resume a paused scope: work continues from the committed offsets, parked records
    come back in their original order, nothing committed is redone."""
    from streams import admin
    from streams.control import RESUMED, scope_key

    scope = scope_key(all_, stage, job)
    settings = _settings()
    desired = admin.read_desired(settings, local_broker.resolve_bootstrap(settings, start=False))
    paused = {p["scope"] for p in desired.paused()} if desired is not None else set()
    if scope not in paused:
        note = (f"{scope} is not paused; nothing to resume"
                + (f" (paused now: {', '.join(sorted(paused))})" if paused else ""))
        if as_json:
            click.echo(json.dumps({"command": None, "note": note, "paused": sorted(paused)}))
        else:
            console.print(note)
        return
    _set_and_wait(scope, RESUMED, reason, "drain", wait, timeout, as_json,
                  still_paused=sorted(paused - {scope}))


@main.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option("--job", "job_id", required=True, help="The job the documents belong to.")
@click.option("--passwords", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="JSON file mapping file name to password.")
@click.option("--json", "as_json", is_flag=True, help="Print what was published as JSON.")
def publish(paths: tuple[Path, ...], job_id: str, passwords: Path | None, as_json: bool) -> None:
    """Publish documents to a job (files and folders, recursively).

    Bytes go to the content-addressed blob store; Kafka gets a reference and digest.
    The same file published again to the same job has the same doc_id and is ignored.
    """
    from streams.publish import Publisher
    from streams.worker import ensure_pipeline_topics

    settings = _settings()
    bootstrap = _bootstrap_starting(settings)
    ensure_pipeline_topics(settings, bootstrap)
    with Publisher(settings, bootstrap) as pub:
        done = pub.publish_paths(list(paths), job_id=job_id, passwords=load_passwords(passwords))
    if as_json:
        click.echo(json.dumps([p.__dict__ for p in done], indent=2))
    else:
        for p in done:
            click.echo(f"{p.doc_id}  {p.source}")
        console.print(f"published {len(done)} documents to job {job_id}")
    for path, why in pub.skipped:
        click.echo(f"skipped {path}: {why}", err=True)


@main.command()
@click.option("--worker-id", default=None, help="Stable id: names local state and "
              "transactional ids (default: worker-<hostname>).")
@click.option("--stage", "stages", multiple=True,
              type=click.Choice(["parse", "extract", "validate", "route", "sink"]),
              help="Run only these stages (repeatable; default all).")
@click.option("--stop-with-parent", "parent_pid", type=int, default=None, hidden=True,
              help="Stop (as on SIGTERM) when this process, the `run` that started the "
              "worker, is gone (Linux).")
def worker(worker_id: str | None, stages: tuple[str, ...], parent_pid: int | None) -> None:
    """Run pipeline stages until SIGTERM or Ctrl-C (the batch in flight commits first).

    Run any number of workers against one cluster; each stage's partitions are shared
    among them. Give each a distinct, stable --worker-id.
    """
    import socket

    from streams import names
    from streams.worker import Worker

    settings = _settings()
    bootstrap = _bootstrap_starting(settings)
    wid = worker_id or f"worker-{socket.gethostname()}"
    w = Worker(settings, bootstrap, wid, stages or names.STAGES)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    if parent_pid is not None:
        from streams.worker import stop_with_parent

        stop_with_parent(parent_pid, stop)
    w.start()
    err_console.print(f"worker {wid} running {', '.join(w.stage_names)} on {bootstrap}; "
                  "Ctrl-C or SIGTERM stops it (the batch in flight commits first)")
    while not stop.wait(1.0):
        if not w.alive():
            break
    err_console.print(f"worker {wid} stopping...")
    w.stop()
    err_console.print(f"worker {wid} stopped")


def _attach_optional() -> None:
    from streams.cli_broker import broker
    from streams.cli_dlq import dlq

    main.add_command(broker)
    main.add_command(dlq)


_attach_optional()
