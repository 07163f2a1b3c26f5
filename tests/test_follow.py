"""`avar run`'s follower on Prefect's own task-run and log objects: stage starts and ends,
lines prefixed by their stage, repeating progress lines thinned, nothing printed twice.
(The integration test follows the real deployment run through a real server.)"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from prefect.client.schemas.objects import Log, TaskRun
from prefect.states import Completed, Failed, Running

from avar.follow import Follower

T0 = datetime(2026, 11, 25, 1, 0, tzinfo=UTC)
FLOW = uuid.uuid4()


def task(name: str, state, task_id=None) -> TaskRun:
    return TaskRun(
        id=task_id or uuid.uuid4(),
        name=name,
        flow_run_id=FLOW,
        task_key=name,
        dynamic_key="0",
        state=state,
        start_time=T0,
    )


def log(message: str, seconds: float, task_id=None) -> Log:
    return Log(
        name="prefect.task_runs",
        level=20,
        message=message,
        timestamp=T0 + timedelta(seconds=seconds),
        flow_run_id=FLOW,
        task_run_id=task_id,
    )


def test_stages_progress_and_summary():
    printed: list[str] = []
    follower = Follower(echo=printed.append, every_s=10, total=9)
    sft = uuid.uuid4()
    follower.task_runs([task("sft_mm", Running(), sft)])
    bars = [
        log(f"{p}%|██| {p * 3}/300 [00:0{i}<00:50, 5.0it/s]", i * 4, sft)
        for i, p in enumerate((10, 20, 30, 40))
    ]
    lines = [
        log("Running stage 'sft_mm':", 0.5, sft),
        *bars,  # at 0, 4, 8 and 12 s: the first and the one 12 s later are shown
        log("{'loss': '1.2', 'grad_norm': '0.4'}", 1, sft),
        log("{'loss': '1.1', 'grad_norm': '0.4'}", 2, sft),  # 1 s after the last: thinned
        log("sft_mm: 300 steps in 63 s, heldout/accuracy 0.219\nsecond line", 13, sft),
    ]
    lines.sort(key=lambda entry: entry.timestamp)  # as the API returns them
    follower.logs(lines)
    follower.logs(lines)  # read again (the overlap window): nothing new
    follower.task_runs([task("sft_mm", Completed(), sft)])
    assert printed[0] == "▶ sft_mm (1/9)"
    body = printed[1:-1]
    assert body == [
        "  sft_mm         10%|██| 30/300 [00:00<00:50, 5.0it/s]",
        "  sft_mm         Running stage 'sft_mm':",
        "  sft_mm         {'loss': '1.2', 'grad_norm': '0.4'}",
        "  sft_mm         40%|██| 120/300 [00:03<00:50, 5.0it/s]",
        "  sft_mm         sft_mm: 300 steps in 63 s, heldout/accuracy 0.219",
        "  sft_mm         second line",
    ]
    assert printed[-1].startswith("✓ sft_mm completed in ")


def test_failed_stage_and_flow_lines():
    printed: list[str] = []
    follower = Follower(echo=printed.append)
    rl = uuid.uuid4()
    follower.task_runs([task("rl", Running(), rl)])
    follower.logs([log("Created MLflow run", 0)])  # the flow's own line, no task
    follower.task_runs([task("rl", Failed(), rl)])
    follower.task_runs([task("rl", Failed(), rl)])  # no change: nothing printed
    assert printed[0] == "▶ rl"  # total unknown: no (k/n)
    assert printed[1] == "  flow           Created MLflow run"
    assert printed[2].startswith("✗ rl failed in ") and len(printed) == 3


def test_a_stage_that_ran_between_two_polls_starts_before_its_lines():
    """What `follow` does each poll: starts, then the lines, then the ends."""
    from prefect.states import AwaitingRetry

    printed: list[str] = []
    follower = Follower(echo=printed.append, total=2)
    prepare, base = uuid.uuid4(), uuid.uuid4()
    runs = [task("prepare", Completed(), prepare), task("base", AwaitingRetry(), base)]
    follower.task_runs(runs, ends=False)
    follower.logs([log("prepare: 4 records", 1, prepare)])
    follower.task_runs(runs)
    follower.task_runs(runs)  # the next poll: nothing new
    assert printed[:3] == ["▶ prepare (1/2)", "  prepare        prepare: 4 records", printed[2]]
    assert printed[2].startswith("✓ prepare completed in ") and len(printed) == 3
    follower.task_runs([task("base", Running(), base)])
    follower.task_runs([task("base", AwaitingRetry(), base)])  # failed once, retried
    assert printed[3:] == ["▶ base (2/2)", "↻ base awaitingretry"]
