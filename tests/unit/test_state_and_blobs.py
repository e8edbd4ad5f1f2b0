from pathlib import Path

import pytest

from streams.blobs import BlobStore, sha256_hex
from streams.errors import DocstreamsError
from streams.secrets import SecretStore
from streams.state import Batch, MemoryState, PartitionStore


def test_blob_store_is_content_addressed_and_idempotent(tmp_path: Path):
    store = BlobStore(tmp_path)
    ref = store.put(b"hello")
    assert ref.endswith(sha256_hex(b"hello"))
    assert store.put(b"hello") == ref
    assert store.get(ref) == b"hello"
    assert len(list((tmp_path / "sha256").rglob("*"))) == 2  # one folder, one file
    with pytest.raises(DocstreamsError, match="missing"):
        store.get("blob://sha256/" + "1" * 64)
    with pytest.raises(DocstreamsError, match="not a sha256"):
        store.get("blob://sha256/../../etc/passwd")


def test_blob_names_bind_to_existing_blobs_only(tmp_path: Path):
    store = BlobStore(tmp_path)
    ref = store.put(b"artifact")
    store.bind("parsed", "abc:v1", ref)
    assert store.lookup("parsed", "abc:v1") == ref
    assert store.lookup("parsed", "abc:v2") is None
    store.bind("parsed", "gone", "blob://sha256/" + "2" * 64)
    assert store.lookup("parsed", "gone") is None


def test_batch_buffers_changes_until_applied(tmp_path: Path):
    store = PartitionStore(tmp_path / "p0")
    store.apply({"a": b"1", "retry/2": b"x", "retry/1": b"y"})
    batch = Batch(store)
    batch.put("b", b"2")
    batch.delete("a")
    batch.put("retry/0", b"z")
    assert batch.get("a") is None and batch.get("b") == b"2"
    assert store.get("a") == b"1" and store.get("b") is None  # nothing applied yet
    assert [k for k, _ in batch.scan("retry/")] == ["retry/0", "retry/1", "retry/2"]
    store.apply(batch.changes)
    assert store.get("a") is None and store.get("b") == b"2"
    store.checkpoint = 42
    store.close()
    reopened = PartitionStore(tmp_path / "p0")
    assert reopened.checkpoint == 42 and reopened.get("b") == b"2"
    reopened.close()


def test_memory_state_has_the_same_port():
    mem = MemoryState()
    batch = Batch(mem)
    batch.put("k", b"v")
    mem.put("j", b"w")
    assert dict(batch.scan("")) == {"j": b"w", "k": b"v"}


def test_secret_store_keeps_values_private(tmp_path: Path):
    secrets = SecretStore(tmp_path / "s")
    secrets.put("job/doc", "hunter2")
    assert secrets.get("job/doc") == "hunter2"
    assert secrets.get("other") is None and secrets.get(None) is None
    files = list((tmp_path / "s").iterdir())
    assert len(files) == 1 and "job" not in files[0].name
    assert files[0].stat().st_mode & 0o077 == 0
