"""`avar run`'s follower on Prefect's own task-run and log objects: stage starts, lines and
ends in time order (whatever order the polls bring them in), lines prefixed by their
stage, repeating progress lines thinned, the last seconds held back until their batch has
arrived, nothing printed twice. (The integration test follows the real deployment run
through a real server.)"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from prefect.client.schemas.objects import Log, TaskRun
from prefect.states import AwaitingRetry, Completed, Failed, Running

from avar.follow import Follower

T0 = datetime(2026, 11, 25, 1, 0, tzinfo=UTC)
FLOW = uuid.uuid4()


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def task(name: str, state, task_id, start: float, end: float | None = None) -> TaskRun:
    return TaskRun(
        id=task_id,
        name=name,
        flow_run_id=FLOW,
        task_key=name,
        dynamic_key="0",
        state=state,
        start_time=at(start),
        end_time=None if end is None else at(end),
    )


def log(message: str, seconds: float, task_id=None) -> Log:
    return Log(
        name="prefect.task_runs",
        level=20,
        message=message,
        timestamp=at(seconds),
        flow_run_id=FLOW,
        task_run_id=task_id,
    )


def test_stages_lines_and_ends_in_time_order():
    printed: list[str] = []
    follower = Follower(echo=printed.append, every_s=10, total=2)
    prep, sft = uuid.uuid4(), uuid.uuid4()
    # one poll at 40 s brings it all: prepare ran 0-10 s, its last line came late; sft_mm
    # started at 11 s
    runs = [task("prepare", Completed(), prep, 0, 10), task("sft_mm", Running(), sft, 11)]
    bars = [log(f"{p}%|██| {p * 3}/300", 12 + i * 4, sft) for i, p in enumerate((10, 20, 30, 40))]
    logs = [
        log("prepare: 900 records", 9, prep),
        log("Running stage 'sft_mm':", 11.5, sft),
        *bars,  # at 12, 16, 20 and 24 s: the first and the one 12 s later are shown
        log("{'loss': '1.2'}", 13, sft),
        log("{'loss': '1.1'}", 14, sft),  # 1 s after the last: thinned
        log("sft_mm: 300 steps in 63 s\nsecond line", 25, sft),
        log("the flow's own line", 38, None),  # within the lag: waits for the next poll
    ]
    follower.poll(runs, logs, at(40))
    follower.poll(runs, logs, at(40))  # the same read again (the overlap): nothing new
    assert printed == [
        "▶ prepare (1/2)",
        "  prepare        prepare: 900 records",
        "✓ prepare completed in 10 s",
        "▶ sft_mm (2/2)",
        "  sft_mm         Running stage 'sft_mm':",
        "  sft_mm         10%|██| 30/300",
        "  sft_mm         {'loss': '1.2'}",
        "  sft_mm         40%|██| 120/300",
        "  sft_mm         sft_mm: 300 steps in 63 s",
        "  sft_mm         second line",
    ]
    runs[1] = task("sft_mm", Completed(), sft, 11, 70)
    follower.poll(runs, logs, at(71))  # the end is within the lag: held back
    assert printed[-1] == "  flow           the flow's own line"
    follower.poll(runs, logs, at(71), flush=True)  # the flow run ended: everything
    assert printed[-1] == "✓ sft_mm completed in 59 s"


def test_failed_and_retried_stages():
    printed: list[str] = []
    follower = Follower(echo=printed.append)
    rl, base = uuid.uuid4(), uuid.uuid4()
    follower.poll([task("base", Running(), base, 0)], [], at(10))
    follower.poll([task("base", AwaitingRetry(), base, 0)], [], at(20))  # failed once
    follower.poll([task("base", AwaitingRetry(), base, 0)], [], at(22))  # no change
    follower.poll([task("rl", Failed(), rl, 30, 35)], [], at(40))
    assert printed == ["▶ base", "↻ base awaitingretry", "▶ rl", "✗ rl failed in 5 s"]
