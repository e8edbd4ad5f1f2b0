"""Avro records: round trips, fingerprints, and resolution of older writers' data."""

import io
import json

import fastavro
import pytest
from fastavro.read import SchemaResolutionError
from fastavro.schema import to_parsing_canonical_form
from fastavro.utils import generate_many

from streams import records
from streams.errors import DocstreamsError

DOC = {"doc_id": "d1", "job_id": "j", "source": "real/a.pdf", "sha256": "0" * 64,
       "blob_ref": "blob://sha256/" + "0" * 64, "size_bytes": 10, "submitted_at_ms": 1}


def test_every_schema_round_trips_generated_records():
    current, _ = records._registry()
    assert len(current) >= 14
    for name, version in current.items():
        for sample in generate_many(version.parsed, 3):
            out_name, decoded = records.decode(records.encode(name, sample))
            assert out_name == name
            assert decoded == sample


def test_single_object_encoding_carries_the_fingerprint():
    data = records.encode("DocumentSubmitted", {"doc": DOC, "submitted_by": "me",
                                                "password_ref": None})
    assert data[:2] == b"\xc3\x01"
    assert data[2:10] == records.schema("DocumentSubmitted").fingerprint
    assert records.decode(data)[1]["media_type"] == "application/pdf"  # default filled in


def test_decode_rejects_unknown_fingerprints_and_wrong_types():
    data = bytearray(records.encode("Citation", {"page": 1, "bbox": [0, 0, 1, 1], "text": "x"}))
    with pytest.raises(DocstreamsError, match="expected a Execution"):
        records.decode(bytes(data), expect="Execution")
    data[5] ^= 0xFF
    with pytest.raises(DocstreamsError, match="unknown schema fingerprint"):
        records.decode(bytes(data))
    with pytest.raises(DocstreamsError):
        records.decode(b"{json}")


def test_encode_names_the_schema_on_bad_records():
    with pytest.raises(DocstreamsError, match="Citation"):
        records.encode("Citation", {"page": "one"})


def test_current_schemas_are_recorded_in_history():
    """Changing a schema means adding schemas/history/<Name>/<n+1>.avsc; this fails until
    the new version is recorded, so the resolution test below covers it."""
    hist = records.history()
    for name, version in records._registry()[0].items():
        canon = [to_parsing_canonical_form(h) for h in hist.get(name, [])]
        assert to_parsing_canonical_form(version.parsed) in canon, name


def test_current_schemas_resolve_data_written_by_every_released_version():
    for name, versions in records.history().items():
        reader = records.schema(name).parsed
        for writer in versions:
            for sample in generate_many(writer, 3):
                buf = io.BytesIO()
                fastavro.schemaless_writer(buf, writer, sample)
                buf.seek(0)
                fastavro.schemaless_reader(buf, writer, reader)


def test_resolution_check_catches_an_incompatible_change():
    """The check above is not vacuous: a new required field without a default fails."""
    old = records.schema("Execution").parsed
    raw = json.loads(to_parsing_canonical_form(old))
    raw["fields"].append({"name": "tenant", "type": "string"})
    new = fastavro.parse_schema(raw)
    sample = next(iter(generate_many(old, 1)))
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, old, sample)
    buf.seek(0)
    with pytest.raises(SchemaResolutionError):
        fastavro.schemaless_reader(buf, old, new)
    raw["fields"][-1]["default"] = "none"
    buf.seek(0)
    assert fastavro.schemaless_reader(buf, old, fastavro.parse_schema(raw))["tenant"] == "none"
