from pathlib import Path

import pytest

from streams.errors import ConfigError
from streams.publish import collect, doc_id_for
from streams.settings import Settings
from streams.sink import DecisionsSink, safe_name, write_output


def test_settings_from_env_parses_and_masks_secrets(tmp_path: Path):
    s = Settings.from_env({"DOCSTREAMS_HOME": str(tmp_path), "DOCSTREAMS_PARTITIONS": "3",
                           "DOCSTREAMS_SASL_PASSWORD": "s3cret",
                           "DOCSTREAMS_SECURITY_PROTOCOL": "SASL_SSL"})
    assert s.partitions == 3 and s.bootstrap is None and s.home == tmp_path.resolve()
    assert s.kafka_common("b:9092")["sasl.password"] == "s3cret"
    assert "s3cret" not in repr(s)


@pytest.mark.parametrize("env, message", [
    ({"DOCSTREAMS_PARTITIONS": "six"}, "whole number"),
    ({"DOCSTREAMS_PARTITIONS": "0"}, "at least 1"),
    ({"DOCSTREAMS_BATCH_MAX_SECONDS": "50"}, "transaction timeout"),
])
def test_settings_reject_bad_values_with_a_reason(env, message):
    with pytest.raises(ConfigError, match=message):
        Settings.from_env(env)


def _result(outcome="decided"):
    return {"doc_id": "d1", "job_id": "job/1", "source": "a.pdf", "sha256": "s",
            "pipeline_version": "v1", "outcome": outcome, "doc_type": "invoice",
            "reasons": [], "fields": {"x": {"value": 1}}}


def test_sink_upsert_is_idempotent_on_doc_sha_version(tmp_path: Path):
    sink = DecisionsSink(tmp_path / "d.sqlite")
    sink.upsert(_result(), 1)
    sink.upsert(_result(), 2)
    sink.upsert(_result("review"), 3)
    rows = sink.rows()
    assert len(rows) == 1
    assert rows[0]["outcome"] == "review" and rows[0]["first_written_at_ms"] == 1
    sink.upsert({**_result(), "pipeline_version": "v2"}, 4)
    assert len(sink.rows("job/1")) == 2
    sink.close()


def test_outputs_are_written_per_job_with_safe_names(tmp_path: Path):
    path = write_output(tmp_path, _result())
    assert path == tmp_path / "job_1" / "d1.json"
    assert safe_name("../..") == "_.._" or not safe_name("../..").startswith(".")
    assert list(path.parent.iterdir()) == [path]


def test_doc_ids_are_stable_per_job_source_and_content():
    a = doc_id_for("j", "real/a.pdf", "x")
    assert a == doc_id_for("j", "real/a.pdf", "x")
    assert a != doc_id_for("k", "real/a.pdf", "x") != doc_id_for("j", "real/a.pdf", "y")


def test_collect_walks_folders_and_skips_hidden_files(tmp_path: Path):
    (tmp_path / "box" / "sub").mkdir(parents=True)
    (tmp_path / "box" / "a.pdf").write_bytes(b"a")
    (tmp_path / "box" / "sub" / "b.pdf").write_bytes(b"b")
    (tmp_path / "box" / ".DS_Store").write_bytes(b"x")
    single = tmp_path / "c.pdf"
    single.write_bytes(b"c")
    got = [src for _, src in collect([tmp_path / "box", single])]
    assert got == ["box/a.pdf", "box/sub/b.pdf", "c.pdf"]


def test_an_older_generation_never_overwrites_a_newer_one(tmp_path: Path):
    """A replay of the sink re-applies old terminal records: the newest generation stands."""
    sink = DecisionsSink(tmp_path / "d.sqlite")
    sink.upsert({**_result("decided"), "generation": 1}, 2)
    sink.upsert({**_result("dead_letter"), "generation": 0}, 3)
    assert sink.rows()[0]["outcome"] == "decided"
    sink.upsert({**_result("review"), "generation": 1}, 4)
    assert sink.rows()[0]["outcome"] == "review"
    sink.close()
    write_output(tmp_path / "out", {**_result("decided"), "generation": 1})
    path = write_output(tmp_path / "out", {**_result("dead_letter"), "generation": 0})
    import json
    assert json.loads(path.read_text())["outcome"] == "decided"


def test_a_sink_table_from_before_generations_is_migrated(tmp_path: Path):
    import sqlite3
    db = sqlite3.connect(tmp_path / "old.sqlite")
    db.execute("CREATE TABLE decisions (doc_id TEXT NOT NULL, sha256 TEXT NOT NULL, "
               "pipeline_version TEXT NOT NULL, job_id TEXT NOT NULL, source TEXT NOT NULL, "
               "outcome TEXT NOT NULL, doc_type TEXT, reasons TEXT NOT NULL, fields TEXT NOT NULL, "
               "first_written_at_ms INTEGER NOT NULL, last_written_at_ms INTEGER NOT NULL, "
               "PRIMARY KEY (doc_id, sha256, pipeline_version))")
    db.commit()
    db.close()
    sink = DecisionsSink(tmp_path / "old.sqlite")
    sink.upsert(_result(), 1)
    assert sink.rows()[0]["generation"] == 0
    sink.close()


def test_collect_reports_what_is_not_a_file_instead_of_dropping_it(tmp_path: Path):
    import os

    (tmp_path / "a.pdf").write_bytes(b"%PDF-1.4")
    (tmp_path / "dangling.pdf").symlink_to(tmp_path / "gone.pdf")
    (tmp_path / "loop.pdf").symlink_to(tmp_path / "loop.pdf")
    os.mkfifo(tmp_path / "pipe.pdf")
    skipped: list[tuple[Path, str]] = []
    found = [src for _, src in collect([tmp_path], skipped)]
    assert found == [f"{tmp_path.name}/a.pdf"]
    reasons = {p.name: why for p, why in skipped}
    assert reasons.keys() == {"dangling.pdf", "loop.pdf", "pipe.pdf"}
    assert "symlink" in reasons["dangling.pdf"] and "symlink" in reasons["loop.pdf"]
    assert "FIFO" in reasons["pipe.pdf"]
