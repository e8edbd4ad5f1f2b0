"""The status fold over lifecycle events and executions (pure, no broker)."""

from streams.status import JobTracker, JobView


def _event(doc, stage, transition, detail="", job="j", at=1, generation=0):
    return {"subject": doc, "job_id": job, "stage": stage, "transition": transition,
            "detail": detail, "at_ms": at, "source": f"{doc}.pdf", "seq": generation * 1000}


def _walk(tracker, doc, outcome="decided", dead_at=None, generation=0):
    tracker.add("LifecycleEvent", _event(doc, "submit", "submitted"))
    for stage in ("parse", "extract", "validate", "route"):
        tracker.add("Execution", {"job_id": "j", "stage": stage, "doc_id": doc})
        if stage == dead_at:
            tracker.add("LifecycleEvent", _event(doc, stage, "dead_lettered",
                                                 generation=generation))
            break
        tracker.add("LifecycleEvent", _event(doc, stage, "done", generation=generation))
    tracker.add("Execution", {"job_id": "j", "stage": "sink", "doc_id": doc})
    tracker.add("LifecycleEvent", _event(doc, "sink", "recorded", outcome,
                                         generation=generation))


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
    t.add("Execution", {"job_id": "j", "stage": "parse", "doc_id": "a"})
    t.add("LifecycleEvent", _event("a", "parse", "retry_scheduled"))
    t.add("Execution", {"job_id": "j", "stage": "parse", "doc_id": "a"})
    snap = t.view("j").snapshot()
    assert snap["stages"]["parse"]["done"] == 0 and not snap["complete"]
    t.add("LifecycleEvent", _event("a", "parse", "parsed"))
    snap = t.view("j").snapshot()
    assert snap["stages"]["parse"] == {"done": 1, "executions": 2, "expected": 1}
    assert snap["redone"] == {"parse": 1}


def test_work_under_way_is_not_redone():
    """Executions are written before the work, finishes when it commits: a healthy job
    in progress has more executions than finishes, and none of it is redone."""
    t = JobTracker()
    for doc in ("a", "b", "c"):
        t.add("LifecycleEvent", _event(doc, "submit", "submitted"))
        t.add("Execution", {"job_id": "j", "stage": "parse", "doc_id": doc})
    t.add("LifecycleEvent", _event("a", "parse", "parsed"))
    snap = t.view("j").snapshot()
    assert snap["stages"]["parse"] == {"done": 1, "executions": 3, "expected": 3}
    assert snap["redone"] == {}
    t.add("Execution", {"job_id": "j", "stage": "parse", "doc_id": "b"})  # b again: a crash
    assert t.view("j").snapshot()["redone"] == {"parse": 1}


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


def test_a_dlq_retry_reopens_the_document_and_is_not_redone_work():
    t = JobTracker()
    _walk(t, "a", "dead_letter", dead_at="parse")
    assert t.view("j").snapshot()["complete"]
    t.add("LifecycleEvent", {**_event("a", "submit", "resubmitted"), "seq": 1000})
    t.add("LifecycleEvent", {**_event("a", "submit", "resubmitted"), "seq": 1000})  # a race
    snap = t.view("j").snapshot()
    assert not snap["complete"] and snap["outcomes"]["dead_letter"] == 0
    assert snap["stages"]["extract"]["expected"] == 1
    t.add("LifecycleEvent", _event("a", "sink", "recorded", "dead_letter"))  # late, old gen
    assert not t.view("j").snapshot()["complete"]
    _walk(t, "a", "decided", generation=1)
    snap = t.view("j").snapshot()
    assert snap["complete"] and snap["outcomes"] == {"decided": 1, "review": 0,
                                                     "dead_letter": 0}
    assert snap["redone"] == {} and snap["resubmissions"] == 1


def test_active_time_leaves_out_idle_gaps_such_as_a_pause() -> None:
    view = JobView("j")
    for at_ms in (1_000, 1_500, 4_000, 5_200):  # 4.2 s of work...
        view.first_at_ms = at_ms if view.first_at_ms is None else view.first_at_ms
        view.last_at_ms = at_ms
        view.event_seconds.add(at_ms // 1000)
    assert view.active_s() == 4.2
    for at_ms in (125_000, 126_000):  # ...then a two-minute pause, then 1 s more
        view.last_at_ms = at_ms
        view.event_seconds.add(at_ms // 1000)
    # 125 s from the first to the last event, less the 119 whole seconds between second
    # 5 and second 125 without any event
    assert view.active_s() == 6.0


def _control(tracker: JobTracker, state: str, at_ms: int, job: str = "j") -> None:
    tracker.add("LifecycleEvent", {"subject": f"control:job:{job}", "job_id": job, "seq": 0,
                                   "stage": "control", "transition": state, "detail": "",
                                   "at_ms": at_ms})


def test_active_time_leaves_out_a_short_pause_of_the_job_and_counts_overlap_once() -> None:
    t = JobTracker()
    for at_ms in (1_000, 3_000):
        t.add("LifecycleEvent", _event("a", "parse", "parsed", at=at_ms))
    _control(t, "paused", 3_000)                 # paused 12 s: shorter than IDLE_GAP_S
    _control(t, "resumed", 15_000)
    for at_ms in (15_000, 17_000):
        t.add("LifecycleEvent", _event("a", "extract", "extracted", at=at_ms))
    assert t.view("j").active_s() == 4.0         # 16 s from first to last, 12 s paused
    _control(t, "paused", 17_000)                # a long pause: the idle gap overlaps it
    _control(t, "resumed", 117_000)
    t.add("LifecycleEvent", _event("a", "validate", "validated", at=117_500))
    # 116.5 s span, less 12 s and 100 s paused; the 99 idle seconds inside the second
    # pause are not left out a second time
    assert t.view("j").active_s() == 4.5


def test_a_pause_still_in_force_ends_the_active_time_at_the_pause() -> None:
    t = JobTracker()
    for at_ms in (1_000, 2_000):
        t.add("LifecycleEvent", _event("a", "parse", "parsed", at=at_ms))
    _control(t, "paused", 2_000)
    t.add("LifecycleEvent", _event("b", "parse", "parked", at=2_500))
    assert t.view("j").active_s() == 1.0
    assert t.view("j").first_at_ms == 1_000      # control events are not work


def test_paused_scopes_follow_the_control_events_and_say_what_holds_a_job():
    t = JobTracker()

    def control(scope, transition, detail=""):
        t.add("LifecycleEvent", {"subject": f"control:{scope}", "stage": "control",
                                 "transition": transition, "detail": detail, "at_ms": 5,
                                 "seq": 0, "job_id": scope[4:] if scope.startswith("job:")
                                 else None})

    control("stage:extract", "paused", "ops: schema change (mode drain)")
    control("job:other", "paused", "legal: hold (mode drain)")
    control("job:j", "paused", "me (mode drain)")
    control("job:j", "resumed")
    assert t.holding("j") == {"stage:extract": "ops: schema change (mode drain)"}
    assert set(t.holding("other")) == {"stage:extract", "job:other"}
    control("stage:extract", "resumed")
    assert t.holding("j") == {}
