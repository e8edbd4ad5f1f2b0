"""Avro records on the wire: one schema per record type (schemas/*.avsc), written with
fastavro in Avro *single-object encoding*: the two marker bytes C3 01, the 8-byte
CRC-64-AVRO fingerprint of the writer's schema, then the body.

The fingerprint lets a reader find the exact schema a record was written with, and
fastavro resolves it against the current (reader) schema, so records written by an
older version of Docstreams stay readable. Every released schema version is kept in
``schemas/history/<Name>/<n>.avsc``; a unit test checks that the current schema resolves
data written by each of them, and that the current schema itself is recorded there.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import fastavro
from fastavro.schema import fingerprint, load_schema, to_parsing_canonical_form

from streams.errors import DocstreamsError

MARKER = b"\xc3\x01"
NAMESPACE = "docstreams"
SCHEMA_DIR = Path(__file__).resolve().parent.parent / "schemas"


@dataclass(frozen=True)
class SchemaVersion:
    name: str          # short record name, e.g. "DocumentParsed"
    parsed: Any        # fastavro parsed schema
    fingerprint: bytes  # 8 bytes, little-endian CRC-64-AVRO


def _fingerprint(parsed: Any) -> bytes:
    hex_fp = fingerprint(to_parsing_canonical_form(parsed), "CRC-64-AVRO")
    return bytes.fromhex(hex_fp)


def _load(path: Path) -> Any:
    # load_schema resolves named types (docstreams.DocumentRef ...) from files beside it.
    return load_schema(str(path), named_schemas={}, _write_hint=False)


@cache
def _registry() -> tuple[dict[str, SchemaVersion], dict[bytes, SchemaVersion]]:
    """Current schema per name, and every known writer schema per fingerprint."""
    if not SCHEMA_DIR.is_dir():
        raise DocstreamsError(f"schema directory not found: {SCHEMA_DIR}", reason="config")
    current: dict[str, SchemaVersion] = {}
    by_fp: dict[bytes, SchemaVersion] = {}
    for path in sorted(SCHEMA_DIR.glob(f"{NAMESPACE}.*.avsc")):
        name = path.name[len(NAMESPACE) + 1 : -len(".avsc")]
        parsed = _load(path)
        version = SchemaVersion(name, parsed, _fingerprint(parsed))
        current[name] = version
        by_fp[version.fingerprint] = version
    for name, old in history().items():
        for parsed in old:
            version = SchemaVersion(name, parsed, _fingerprint(parsed))
            by_fp.setdefault(version.fingerprint, version)
    return current, by_fp


def history() -> dict[str, list[Any]]:
    """Released versions of each schema, oldest first, as parsed (expanded) schemas."""
    out: dict[str, list[Any]] = {}
    root = SCHEMA_DIR / "history"
    for folder in sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []:
        versions = sorted(folder.glob("*.avsc"), key=lambda p: int(p.stem))
        out[folder.name] = [
            fastavro.parse_schema(json.loads(p.read_text()), _write_hint=False) for p in versions
        ]
    return out


def schema(name: str) -> SchemaVersion:
    current, _ = _registry()
    try:
        return current[name]
    except KeyError:
        raise DocstreamsError(f"no schema named {name!r} in {SCHEMA_DIR}", reason="schema") from None


def encode(name: str, record: dict[str, Any]) -> bytes:
    """Encode ``record`` with the current schema ``name`` (single-object encoding)."""
    version = schema(name)
    buf = io.BytesIO()
    buf.write(MARKER)
    buf.write(version.fingerprint)
    try:
        fastavro.schemaless_writer(buf, version.parsed, record)
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        raise DocstreamsError(f"record does not match schema {name}: {exc}", reason="schema") from exc
    return buf.getvalue()


def decode(data: bytes, expect: str | None = None) -> tuple[str, dict[str, Any]]:
    """Decode a single-object-encoded record; return (schema name, record).

    The writer's schema is found by fingerprint and resolved against the current
    schema of the same name. ``expect`` names the record type the caller requires.
    """
    if len(data) < 10 or data[:2] != MARKER:
        raise DocstreamsError("not an Avro single-object encoded record", reason="schema")
    fp = data[2:10]
    current, by_fp = _registry()
    writer = by_fp.get(fp)
    if writer is None:
        raise DocstreamsError(
            f"unknown schema fingerprint {fp.hex()}: written by a newer Docstreams?",
            reason="schema",
        )
    if expect is not None and writer.name != expect:
        raise DocstreamsError(f"expected a {expect} record, got {writer.name}", reason="schema")
    reader = current[writer.name]
    body = io.BytesIO(data[10:])
    record = fastavro.schemaless_reader(body, writer.parsed, reader.parsed)
    assert isinstance(record, dict)
    return writer.name, record


def fingerprint_hex(name: str) -> str:
    return schema(name).fingerprint.hex()


