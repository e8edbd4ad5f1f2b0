"""CI's small, seeded chaos run: the harness (tests/chaos/harness.py) as a subprocess, with
its own broker, three workers, worker kills, a broker restart and a pause/resume cycle.
``make chaos`` runs the same harness bigger."""

from __future__ import annotations

import re
import subprocess
import sys

from streams import broker
from streams.settings import Settings
from tests.integration.pipeline import REPO

LAST_LINE = re.compile(r"chaos: documents=40 lost=0 duplicated=0 sink_duplicates=0 "
                       r"kills=(\d+) broker_restarts=1 pauses=1")


def test_small_seeded_chaos_run_is_exact(local_broker_settings: Settings) -> None:
    broker.find_java()  # its own broker needs Java and the jars even when the session
    broker.ensure_jars(local_broker_settings)  # uses another; missing ones fail the test
    harness = subprocess.Popen(
        [sys.executable, "-m", "tests.chaos.harness", "--seed", "7", "--docs", "40",
         "--kills", "3", "--broker-restarts", "1", "--pauses", "1", "--timeout", "280",
         "--kafka-libs", str(local_broker_settings.home / "broker" / "libs")],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        stdout, stderr = harness.communicate(timeout=420)
    except subprocess.TimeoutExpired:
        harness.terminate()  # the harness stops its workers and its broker on SIGTERM
        stdout, stderr = harness.communicate(timeout=90)
    done = subprocess.CompletedProcess(harness.args, harness.returncode, stdout, stderr)
    lines = done.stdout.strip().splitlines()
    assert done.returncode == 0 and lines, done.stdout[-4000:] + done.stderr[-2000:]
    found = LAST_LINE.fullmatch(lines[-1])
    assert found, lines[-5:]
    assert int(found.group(1)) >= 3  # the harness's own kills, plus any at fault points
