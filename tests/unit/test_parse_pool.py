"""The parse pool with real child processes: hangs, segfaults and memory blow-ups come back
as retryable errors for their own document only, and the pool keeps working."""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from streams.errors import DocstreamsError
from streams.parse import ParseFailure, parse_pdf
from streams.parse_pool import ParsePool, ParseRequest

CORPUS = Path(os.environ.get("DOCSTREAMS_CORPUS")
              or Path(__file__).resolve().parents[3] / "shared" / "corpus")

if not CORPUS.is_dir():
    pytest.skip(f"sample corpus not found at {CORPUS} (set DOCSTREAMS_CORPUS)",
                allow_module_level=True)

# The time limit of these pools. A segfaulting child must be told from a timed-out one,
# and the pool notices a dead child on its manager thread: at 1.5 s, one clean-clone CI
# run (cold caches) reported the segfault of test_a_mixed_batch_keeps_request_order as
# a timeout. The product's default is 30 s.
TIMEOUT_S = 3.0
MEMORY_MB = 640  # a child needs ~300 MB for these files; the oom fault hits the cap fast


def pdf(rel: str) -> bytes:
    path = CORPUS / rel
    if not path.exists():
        pytest.skip(f"corpus file {path} not present")
    return path.read_bytes()


def request(rel: str, fault: str | None = None, password: str | None = None) -> ParseRequest:
    data = pdf(rel)
    return ParseRequest(data, hashlib.sha256(data).hexdigest(), password, fault)


INVOICE = "real/invoice_aws.pdf"
CONTRACT = "real/cuad_cooperation_spi_energy.pdf"


@pytest.fixture(scope="module")
def pool() -> Iterator[ParsePool]:
    with ParsePool(2, TIMEOUT_S, MEMORY_MB, allow_faults=True) as the_pool:
        yield the_pool


def assert_parsed(answer: object, rel: str) -> None:
    assert isinstance(answer, dict), f"{rel}: {answer}"
    assert answer["sha256"] == hashlib.sha256(pdf(rel)).hexdigest()


def assert_child_failure(answer: object, reason: str) -> DocstreamsError:
    assert isinstance(answer, DocstreamsError), answer
    assert answer.reason == reason, str(answer)
    assert answer.retryable is True
    return answer


def test_a_child_parses_like_the_parent(pool: ParsePool):
    (answer,) = pool.parse_many([request(INVOICE)])
    assert answer == parse_pdf(pdf(INVOICE))  # same bytes, same artifact
    (failure,) = pool.parse_many([request("bad/enc_pdfminer_aes128_pw-foo.pdf")])
    assert isinstance(failure, ParseFailure) and failure.reason == "encrypted"


def test_a_hang_is_killed_at_the_time_limit(pool: ParsePool):
    started = time.monotonic()
    (answer,) = pool.parse_many([request(INVOICE, fault="hang")])
    elapsed = time.monotonic() - started
    error = assert_child_failure(answer, "parse_timeout")
    assert f"{TIMEOUT_S:g} s time limit" in str(error)
    # It ignores SIGTERM like a hang inside MuPDF: time limit + pebble's 3 s SIGKILL grace.
    assert TIMEOUT_S <= elapsed < TIMEOUT_S + 3 + 3
    (after,) = pool.parse_many([request(INVOICE)])
    assert_parsed(after, INVOICE)


def test_a_segfault_is_reported_and_the_child_replaced(pool: ParsePool):
    (answer,) = pool.parse_many([request(INVOICE, fault="segv")])
    error = assert_child_failure(answer, "parse_crashed")
    assert "SIGSEGV" in str(error) or "broke" in str(error)
    for _ in range(3):  # both children, and again
        assert_parsed(pool.parse_many([request(CONTRACT)])[0], CONTRACT)


def test_running_out_of_memory_is_parse_memory(pool: ParsePool):
    (answer,) = pool.parse_many([request(INVOICE, fault="oom")])
    assert isinstance(answer, DocstreamsError) and answer.retryable
    assert answer.reason in ("parse_memory", "parse_crashed"), str(answer)
    if answer.reason == "parse_memory":
        assert f"{MEMORY_MB} MB memory cap" in str(answer)
    assert_parsed(pool.parse_many([request(INVOICE)])[0], INVOICE)


def test_a_mixed_batch_keeps_request_order(pool: ParsePool):
    batch = [
        request(INVOICE),
        request(CONTRACT, fault="segv"),
        ParseRequest(b"", None, None),
        request(CONTRACT),
        request(INVOICE, fault="oom"),
        request("bad/enc_pdfminer_aes128_pw-foo.pdf", password="wrong"),
        request("bad/enc_pdfminer_aes128_pw-foo.pdf", password="foo"),
        request(INVOICE, fault="hang"),
        request("bad/trunc_invoice_aws_first_1kb.pdf"),
    ]
    answers = pool.parse_many(batch)
    assert len(answers) == len(batch)
    assert_parsed(answers[0], INVOICE)
    assert_child_failure(answers[1], "parse_crashed")
    assert isinstance(answers[2], ParseFailure) and answers[2].reason == "empty_file"
    assert_parsed(answers[3], CONTRACT)
    assert isinstance(answers[4], DocstreamsError)
    assert answers[4].reason in ("parse_memory", "parse_crashed")
    assert isinstance(answers[5], ParseFailure) and answers[5].reason == "encrypted"
    assert_parsed(answers[6], "bad/enc_pdfminer_aes128_pw-foo.pdf")
    assert_child_failure(answers[7], "parse_timeout")
    assert isinstance(answers[8], ParseFailure) and answers[8].reason == "zero_pages"


def test_a_stopped_pebble_pool_is_rebuilt(pool: ParsePool):
    pool._pool.stop()  # what a broken pebble pool looks like: it refuses new work
    pool._pool.join()
    assert_parsed(pool.parse_many([request(INVOICE)])[0], INVOICE)


def test_faults_need_allow_faults():
    strict = ParsePool(1, TIMEOUT_S, MEMORY_MB)
    with strict, pytest.raises(ValueError, match="disabled"):
        strict.parse_many([request(INVOICE, fault="segv")])
    with ParsePool(1, TIMEOUT_S, MEMORY_MB, allow_faults=True) as lax:
        assert lax.parse_many([]) == []
        with pytest.raises(ValueError, match="unknown fault"):
            lax.parse_many([request(INVOICE, fault="explode")])


def test_arguments_are_checked_and_close_is_final():
    with pytest.raises(ValueError, match="memory_mb"):
        ParsePool(1, TIMEOUT_S, 64)
    with pytest.raises(ValueError, match="workers"):
        ParsePool(0, TIMEOUT_S, MEMORY_MB)
    closing = ParsePool(1, TIMEOUT_S, MEMORY_MB)
    closing.close()
    closing.close()  # idempotent
    with pytest.raises(RuntimeError, match="closed"):
        closing.parse_many([request(INVOICE)])


def test_a_request_does_not_print_its_secrets():
    text = repr(ParseRequest(b"%PDF-1.7 secret bytes", "ab" * 32, "hunter2"))
    assert "hunter2" not in text and "secret bytes" not in text
