"""``docstreams dlq list|show|retry``: dead-lettered documents, and re-submission after a fix.

The logic is in :mod:`streams.dlq`; this module is the command line around it."""

from __future__ import annotations

import datetime as dt
import json
import os
from pathlib import Path
from typing import Any

import click

from streams import broker as local_broker
from streams.errors import DocstreamsError
from streams.names import STAGES
from streams.settings import Settings

__all__ = ["dlq"]


class _DlqGroup(click.Group):
    """A DocstreamsError becomes one clear message and exit code 1, never a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except DocstreamsError as exc:
            raise click.ClickException(str(exc)) from None


def _connect() -> tuple[Settings, str]:
    settings = Settings.from_env(os.environ)
    return settings, local_broker.resolve_bootstrap(settings, start=False)


def _when(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).isoformat(timespec="seconds")


@click.group(cls=_DlqGroup)
def dlq() -> None:
    """Dead-lettered documents: list them, show why, re-submit them after a fix.

    \b
    A document is dead-lettered when it cannot go on (encrypted without a password, no
    pages, unopenable, retries exhausted, unusable): docs.deadletter keeps the record with
    the stage, a reason code, a message and every failed attempt. After a fix (the
    password supplied, a parser upgraded, a threshold changed), `dlq retry` sends the
    document through the pipeline again from parse. Each retry is a new generation of
    the document: the parse stage admits a generation once, so retrying is idempotent.

    \b
    States (from the audit log, docs.events):
      recording  dead-lettered; the sink has not recorded it yet
      dead       dead-lettered and recorded: what `dlq retry` re-submits
      retrying   re-submitted, not finished yet
      resolved   after a retry it was decided or sent to review (hidden unless --all)

    \b
    Examples:
      docstreams dlq list --job loan-17 --reason encrypted
      docstreams dlq show d0123456789abcdef01234567
      docstreams dlq retry d0123456789abcdef01234567 --password-file pw.txt
      docstreams dlq retry --job loan-17 --reason parse_timeout
    """


@dlq.command("list")
@click.option("--job", help="Only this job's documents.")
@click.option("--stage", type=click.Choice(list(STAGES)),
              help="Only documents whose latest dead letter came from this stage.")
@click.option("--reason", help="Only this reason code (encrypted, zero_pages, unopenable, ...).")
@click.option("--all", "include_resolved", is_flag=True,
              help="Also list documents that a retry has since resolved.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def list_command(job: str | None, stage: str | None, reason: str | None,
                 include_resolved: bool, as_json: bool) -> None:
    """List dead-lettered documents, one line each, most recent first.

    Each document appears once, by its latest dead letter (a document retried and
    dead-lettered again shows the newest). Documents that a retry brought to a decision
    or to review are hidden unless --all is given. Read with read_committed: what a
    worker has not committed yet is not shown.
    """
    from streams import dlq as logic

    settings, bootstrap = _connect()
    docs = logic.select(logic.load(settings, bootstrap, job=job), job=job, stage=stage,
                        reason=reason, include_resolved=include_resolved)
    rows = [d.summary() for d in docs]
    if as_json:
        click.echo(json.dumps({"documents": rows, "count": len(rows)}, indent=2))
        return
    if not rows:
        click.echo("no dead letters" + (" matching" if job or stage or reason else ""))
        if job or stage or reason:  # a typo matches nothing: say what would match
            there = logic.present(logic.load(settings, bootstrap), include_resolved)
            for name, value in (("job", job), ("stage", stage), ("reason", reason)):
                if value is not None and value not in there[name]:
                    have = ", ".join(f"{k} ({n})" for k, n in sorted(there[name].items()))
                    click.echo(f"  no dead letter has {name} {value!r}; "
                               f"{name}s with dead letters: {have or 'none'}")
        return
    header = ("DOC_ID", "JOB", "SOURCE", "STAGE", "REASON", "STATE", "GEN", "ATTEMPTS",
              "DEAD-LETTERED AT")
    lines = [header] + [(r["doc_id"], r["job_id"], r["source"], r["stage"], r["reason"],
                         r["state"], str(r["generation"]), str(r["attempts"]),
                         _when(r["dead_lettered_at_ms"])) for r in rows]
    _columns(lines)
    click.echo(f"{len(rows)} document(s)")


def _columns(lines: list[tuple[str, ...]]) -> None:
    """Plain aligned columns: full values at any width, one document per line (grep, cut)."""
    widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]))]
    for line in lines:
        click.echo("  ".join(v.ljust(w) for v, w in zip(line, widths, strict=True)).rstrip())


@dlq.command("show")
@click.argument("doc_id")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def show_command(doc_id: str, as_json: bool) -> None:
    """Show one document's dead letter with its full history.

    Every dead letter the document has had (one per retry generation that failed), each
    with its stage, reason, message and every failed attempt, and every re-submission
    (who, when, why).
    """
    from streams import dlq as logic

    settings, bootstrap = _connect()
    doc = logic.load(settings, bootstrap, doc_ids=[doc_id]).get(doc_id)
    if doc is None:
        raise DocstreamsError(f"no dead letter for document {doc_id}", reason="not_found")
    detail = doc.detail()
    if as_json:
        click.echo(json.dumps(detail, indent=2))
        return
    ref = detail["doc"]
    click.echo(f"{doc_id}  {ref['source']}  (job {ref['job_id']})")
    click.echo(f"  state {detail['state']}, generation {detail['generation']}"
               + (f", last recorded outcome {detail['outcome']}" if detail["outcome"] else ""))
    click.echo(f"  sha256 {ref['sha256']}, {ref['size_bytes']} bytes, {ref['blob_ref']}")
    for letter in detail["history"]:
        gen = "?" if letter["generation"] is None else letter["generation"]
        click.echo(f"\ndead letter (generation {gen}) at {_when(letter['dead_lettered_at_ms'])}: "
                   f"stage {letter['stage']}, {letter['reason']} ({letter['error_class']})")
        click.echo(f"  {letter['message']}")
        click.echo(f"  from {letter['source_topic']}[{letter['source_partition']}]@"
                   f"{letter['source_offset']}, pipeline {letter['pipeline_version']}")
        for a in letter["attempts"]:
            click.echo(f"  attempt {a['attempt']} at {_when(a['at_ms'])}: {a['reason']}: "
                       f"{a['message']}")
    for r in detail["resubmissions"]:
        click.echo(f"\nre-submitted as generation {r['generation']} at {_when(r['at_ms'])} "
                   f"by {r['by']}: {r['detail']}")


def _read_password(path: Path | None) -> str | None:
    if path is None:
        return None
    text = path.read_text().rstrip("\r\n")
    if not text:
        raise DocstreamsError(f"{path} is empty", reason="bad_request")
    return text


@dlq.command("retry")
@click.argument("doc_ids", nargs=-1)
@click.option("--job", help="Retry every dead-lettered document of this job (instead of DOC_IDS).")
@click.option("--reason", help="With --job: only documents dead-lettered for this reason.")
@click.option("--stage", type=click.Choice(list(STAGES)),
              help="With --job: only documents dead-lettered by this stage.")
@click.option("--password-file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="A file holding the password for the documents retried (kept out of "
                   "shell history and process lists; stored in the secret store, never on Kafka).")
@click.option("--passwords", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="JSON file mapping file name to password, as for `run` and `publish`.")
@click.option("--note", default="", help="Why: recorded in the audit log with who and when.")
@click.option("--dry-run", is_flag=True, help="Say what would be re-submitted; submit nothing.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def retry_command(doc_ids: tuple[str, ...], job: str | None, reason: str | None,
                  stage: str | None, password_file: Path | None, passwords: Path | None,
                  note: str, dry_run: bool, as_json: bool) -> None:
    """Re-submit dead-lettered documents, from parse, after a fix.

    Name the documents (DOC_IDS), or a --job (optionally narrowed by --reason and
    --stage). Each document goes through the pipeline again as a new retry generation;
    its new outcome replaces the dead letter in the decisions sink and in its output file.

    Idempotent: a document is re-submitted only while its latest state is `dead`, so
    running the same retry twice re-submits once (the second run reports it `retrying`
    or `resolved`), and the parse stage admits each generation of a document once.
    Exits 1 if a named document has no dead letter.
    """
    from streams import dlq as logic
    from streams.cli import load_passwords

    if bool(doc_ids) == bool(job):
        raise click.UsageError("give either DOC_IDS or --job")
    if doc_ids and (reason or stage):
        raise click.UsageError("--reason and --stage narrow --job; not with DOC_IDS")
    if password_file and passwords:
        raise click.UsageError("give --password-file or --passwords, not both")
    settings, bootstrap = _connect()
    reports = logic.retry(settings, bootstrap, doc_ids, job=job, stage=stage, reason=reason,
                          password=_read_password(password_file),
                          passwords=load_passwords(passwords), note=note, dry_run=dry_run)
    missing = [r["doc_id"] for r in reports if r["action"] == logic.NOT_FOUND]
    if as_json:
        click.echo(json.dumps({"documents": reports, "dry_run": dry_run,
                               "resubmitted": sum(r["action"] == logic.RESUBMIT
                                                  for r in reports)}, indent=2))
    else:
        for r in reports:
            click.echo(f"{r['doc_id']}  {r['source'] or '-'}  {r['action']}: {r['why']}")
        done = sum(r["action"] == logic.RESUBMIT for r in reports)
        click.echo(f"{'would re-submit' if dry_run else 're-submitted'} {done} of "
                   f"{len(reports)} document(s)")
        if done and not dry_run:
            click.echo("a worker processes them: `docstreams worker`, or the job's "
                       "`docstreams run` again; `docstreams status` follows them")
    if missing:
        raise DocstreamsError(f"no dead letter for {', '.join(missing)}", reason="not_found")
