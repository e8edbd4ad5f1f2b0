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
