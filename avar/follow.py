"""`avar run DEPLOYMENT`: start a Prefect deployment run and follow it in the terminal.

`prefect deployment run --watch` shows only state changes while a stage's output goes to
the worker's log. This reads the flow run's logs back from the Prefect API (where the
worker sends them) and prints, per stage: when it starts (k of n), its progress (progress
bars and the trainer's loss lines, at most one of each kind per `every_s` seconds), its
checkpoint scores and its one-line summary, and when it ends, with its duration. The exit
code is the flow run's: 0 when it completed.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

WAIT_NOTICE_S = 15.0  # a run still not started by then: say it waits for a worker
NEVER = datetime.max.replace(tzinfo=UTC)  # sorts task runs not yet scheduled last

# Lines of a stage's output that repeat while it works: shown at most once per `every_s`.
REPEATING = {
    "progress": re.compile(r"\d+%\|"),  # a tqdm bar
    "loss": re.compile(r"^\{'(loss|train_runtime)'"),  # HF Trainer's log dicts
}


@dataclass
class Follower:
    """What has been printed of one flow run: log ids, task states, throttled kinds."""

    echo: Callable[[str], object] = print
    every_s: float = 10.0
    total: int = 0  # stages the flow runs (0: not known)
    seen: set = field(default_factory=set)
    tasks: dict = field(default_factory=dict)  # task run id -> (name, state name)
    started: dict = field(default_factory=dict)  # task run id -> monotonic start
    shown_at: dict = field(default_factory=dict)  # (task, kind) -> log timestamp shown
    order: list = field(default_factory=list)  # task names in the order they started

    def task_runs(self, runs, ends: bool = True) -> None:
        """Print each stage's start, state changes (a retry) and, with `ends`, its end.
        A stage that started and ended between two polls is started first, so that its
        lines come between its start and its end."""
        for run in sorted(runs, key=lambda r: r.start_time or r.expected_start_time or NEVER):
            state = run.state.name if run.state else "Pending"
            final = run.state is not None and run.state.is_final()
            if run.id not in self.started and (state == "Running" or final):
                self.start(run)
            name, before = self.tasks.setdefault(run.id, (run.name, state))
            if state == before or (final and not ends):
                continue
            self.tasks[run.id] = (name, state)
            if final:
                seconds = time.monotonic() - self.started[run.id]
                mark = "✓" if run.state.is_completed() else "✗"
                self.echo(f"{mark} {name} {state.lower()} in {seconds:.0f} s")
            elif run.id in self.started and state != "Running":
                self.echo(f"↻ {name} {state.lower()}")

    def start(self, run) -> None:
        self.order.append(run.name)
        self.started[run.id] = time.monotonic()
        self.tasks[run.id] = (run.name, "Running")
        of = f" ({len(self.order)}/{self.total})" if self.total else ""
        self.echo(f"▶ {run.name}{of}")

    def logs(self, logs) -> None:
        """Print new log lines of the flow run, prefixed by their stage."""
        for entry in logs:
            if entry.id in self.seen:
                continue
            self.seen.add(entry.id)
            name = self.tasks.get(entry.task_run_id, ("flow", None))[0]
            if self.throttled(name, entry):
                continue
            for line in entry.message.splitlines() or [""]:
                self.echo(f"  {name:<14} {line}")

    def throttled(self, name: str, entry) -> bool:
        """Whether a repeating line comes too soon after the last one of its kind."""
        for kind, pattern in REPEATING.items():
            if pattern.search(entry.message):
                last = self.shown_at.get((name, kind))
                if last is not None and entry.timestamp - last < timedelta(seconds=self.every_s):
                    return True
                self.shown_at[(name, kind)] = entry.timestamp
        return False


def follow(flow_run_id, follower: Follower, poll_s: float = 2.0) -> str:
    """Print the flow run's stages and logs until it ends; return its final state's name."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    this_run = FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))
    since: datetime | None = None
    waiting_since, announced = time.monotonic(), False
    with get_client(sync_client=True) as client:
        while True:
            run = client.read_flow_run(flow_run_id)
            final = run.state is not None and run.state.is_final()
            state = run.state.name if run.state else "Pending"
            if not announced and state in ("Scheduled", "Pending", "Late"):
                if time.monotonic() - waiting_since > WAIT_NOTICE_S:
                    pool = run.work_pool_name or "its"
                    follower.echo(f"flow run is {state}: waiting for a worker of {pool} pool")
                    announced = True
            if final:  # the worker sends its last log batch after the state changes
                time.sleep(poll_s)
            runs = client.read_task_runs(flow_run_filter=this_run)
            follower.task_runs(runs, ends=False)  # starts first: the names of the lines
            logs = read_logs(client, flow_run_id, since)
            follower.logs(logs)
            follower.task_runs(runs)  # then the ends, after their stages' lines
            if logs:
                since = max(since or logs[-1].timestamp, logs[-1].timestamp)
            if final:
                return run.state.name
            time.sleep(poll_s)


def read_logs(client, flow_run_id, since: datetime | None, page: int = 200) -> list:
    """The flow run's logs from a minute before `since` (all when None), oldest first.
    Logs arrive in batches, not always in timestamp order, hence the minute of overlap;
    the follower skips the ids it printed."""
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId, LogFilterTimestamp
    from prefect.client.schemas.sorting import LogSort

    window = LogFilterTimestamp(after_=since - timedelta(minutes=1)) if since else None
    wanted = LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id]), timestamp=window)
    logs: list = []
    while True:
        batch = client.read_logs(wanted, sort=LogSort.TIMESTAMP_ASC, limit=page, offset=len(logs))
        logs += batch
        if len(batch) < page:
            return logs
