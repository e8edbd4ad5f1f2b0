"""The status fold over lifecycle events and executions (pure, no broker)."""

from streams.status import JobTracker


def _event(doc, stage, transition, detail="", job="j", at=1):
    return {"subject": doc, "job_id": job, "stage": stage, "transition": transition,
            "detail": detail, "at_ms": at, "source": f"{doc}.pdf"}


def _walk(tracker, doc, outcome="decided", dead_at=None):
    tracker.add("LifecycleEvent", _event(doc, "submit", "submitted"))
    for stage in ("parse", "extract", "validate", "route"):
        tracker.add("Execution", {"job_id": "j", "stage": stage})
        if stage == dead_at:
            tracker.add("LifecycleEvent", _event(doc, stage, "dead_lettered"))
            break
        tracker.add("LifecycleEvent", _event(doc, stage, "done"))
    tracker.add("Execution", {"job_id": "j", "stage": "sink"})
    tracker.add("LifecycleEvent", _event(doc, "sink", "recorded", outcome))


def test_complete_job_counts_outcomes_and_expected_per_stage():
    t = JobTracker()
    _walk(t, "a")
    _walk(t, "b", "review")
    _walk(t, "c", "dead_letter", dead_at="parse")
    snap = t.view("j").snapshot()
    assert snap["documents"] == 3 and snap["complete"]
    assert snap["outcomes"] == {"decided": 1, "review": 1, "dead_letter": 1}
    assert snap["stages"]["parse"] == {"done": 3, "executions": 3, "expected": 3}
    assert snap["stages"]["extract"] == {"done": 2, "executions": 2, "expected": 2}
    assert snap["stages"]["sink"]["expected"] == 3
    assert snap["redone"] == {}


def test_redone_work_and_retries_are_visible_not_done():
    t = JobTracker()
    t.add("LifecycleEvent", _event("a", "submit", "submitted"))
    t.add("Execution", {"job_id": "j", "stage": "parse"})
    t.add("LifecycleEvent", _event("a", "parse", "retry_scheduled"))
    t.add("Execution", {"job_id": "j", "stage": "parse"})
    snap = t.view("j").snapshot()
    assert snap["stages"]["parse"]["done"] == 0 and not snap["complete"]
    t.add("LifecycleEvent", _event("a", "parse", "parsed"))
    snap = t.view("j").snapshot()
    assert snap["stages"]["parse"] == {"done": 1, "executions": 2, "expected": 1}
    assert snap["redone"] == {"parse": 1}


def test_duplicate_events_do_not_double_count_and_jobs_stay_apart():
    t = JobTracker()
    _walk(t, "a")
    t.add("LifecycleEvent", _event("a", "submit", "submitted"))  # re-published
    t.add("LifecycleEvent", _event("a", "parse", "duplicate_ignored"))
    t.add("LifecycleEvent", _event("x", "submit", "submitted", job="other"))
    assert t.view("j").snapshot()["documents"] == 1
    assert t.view("j").snapshot()["complete"]
    assert not t.view("other").snapshot()["complete"]
    assert t.view("empty").snapshot()["complete"] is False
