"""`avar run DEPLOYMENT`: start a Prefect deployment run and follow it in the terminal.

`prefect deployment run --watch` shows only state changes while a stage's output goes to
the worker's log. This reads the flow run's task runs and logs back from the Prefect API
(where the worker sends them) and prints, in time order: when each stage starts (k of n),
its lines (progress bars and the trainer's loss lines at most one of each kind per
`every_s` seconds; checkpoint scores; its one-line summary) and when it ends, with its
duration. The worker sends logs in batches, so what happened in the last `LAG_S` seconds
waits for the next poll. The exit code is the flow run's: 0 when it completed.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

WAIT_NOTICE_S = 15.0  # a run still not started by then: say it waits for a worker
LAG_S = 4.0  # the worker's log batches arrive within this; later events wait a poll
NEVER = datetime.max.replace(tzinfo=UTC)

# Lines of a stage's output that repeat while it works: shown at most once per `every_s`.
REPEATING = {
    "progress": re.compile(r"\d+%\|"),  # a tqdm bar
    "loss": re.compile(r"^\{'(loss|train_runtime)'"),  # HF Trainer's log dicts
}
START, LINE, END = 0, 1, 2  # at the same instant: a stage starts, then logs, then ends


@dataclass
class Follower:
    """What has been printed of one flow run: its stages' starts and ends, log ids, the
    last line shown of each repeating kind."""

    echo: Callable[[str], object] = print
    every_s: float = 10.0
    total: int = 0  # stages the flow runs (0: not known)
    names: dict = field(default_factory=dict)  # task run id -> stage name
    states: dict = field(default_factory=dict)  # task run id -> last state name seen
    started: dict = field(default_factory=dict)  # task run id -> start time
    ended: set = field(default_factory=set)
    seen: set = field(default_factory=set)  # log ids printed (or thinned)
    shown_at: dict = field(default_factory=dict)  # (stage, kind) -> timestamp shown

    def poll(self, runs, logs, now: datetime, flush: bool = False) -> None:
        """Print what the task runs and logs say happened up to `now - LAG_S` (everything
        with `flush`), in time order."""
        events = []
        for run in runs:
            self.names.setdefault(run.id, run.name)
            state = run.state.name if run.state else "Pending"
            final = run.state is not None and run.state.is_final()
            if run.id not in self.started and (state == "Running" or final):
                events.append((run.start_time or now, START, run))
            if final and run.id not in self.ended:
                events.append((run.end_time or now, END, run))
            if run.id in self.started and not final and state != self.states.get(run.id):
                if state != "Running":
                    self.echo(f"↻ {run.name} {state.lower()}")  # e.g. AwaitingRetry
            self.states[run.id] = state
        events += [(e.timestamp, LINE, e) for e in logs if e.id not in self.seen]
        cutoff = NEVER if flush else now - timedelta(seconds=LAG_S)
        for when, kind, item in sorted(events, key=lambda event: event[:2]):
            if when > cutoff:
                continue  # read again next poll
            if kind == START:
                self.start(item, when)
            elif kind == END:
                self.end(item, when)
            else:
                self.line(item)

    def start(self, run, when: datetime) -> None:
        self.started[run.id] = when
        of = f" ({len(self.started)}/{self.total})" if self.total else ""
        self.echo(f"▶ {run.name}{of}")

    def end(self, run, when: datetime) -> None:
        self.ended.add(run.id)
        seconds = (when - self.started.get(run.id, when)).total_seconds()
        mark = "✓" if run.state.is_completed() else "✗"
        self.echo(f"{mark} {run.name} {run.state.name.lower()} in {seconds:.0f} s")

    def line(self, entry) -> None:
        """A log line, prefixed by its stage, unless a repeating kind shown too recently."""
        self.seen.add(entry.id)
        name = self.names.get(entry.task_run_id, "flow")
        for kind, pattern in REPEATING.items():
            if pattern.search(entry.message):
                last = self.shown_at.get((name, kind))
                if last is not None and entry.timestamp - last < timedelta(seconds=self.every_s):
                    return
                self.shown_at[(name, kind)] = entry.timestamp
        for text in entry.message.splitlines() or [""]:
            self.echo(f"  {name:<14} {text}")


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
            logs = read_logs(client, flow_run_id, since)
            follower.poll(runs, logs, datetime.now(UTC), flush=final)
            if logs:
                since = max(since or logs[-1].timestamp, logs[-1].timestamp)
            if final:
                return state
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
