"""`avar stage NAME` on the ranks `launch` asks for.

One process needs nothing: the stage runs here. More than one, and `avar stage NAME` starts
them itself, so dvc.yaml, the Prefect flow and the docker backend stay as they are:

- `engine: torchrun`: torch's elastic launcher (`torch.distributed.run`, the library
  torchrun is) starts `nproc_per_node` ranks on this host; on several hosts each host runs
  the same command and the launchers meet at `rdzv_endpoint` (c10d). Every rank's line is
  prefixed with `[rankN]:`; every rank's output is kept under `log_dir`. If one rank fails,
  the launcher stops the others and the stage fails with that rank's last lines.
- `engine: ray`: Ray Train's TorchTrainer places the ranks on the nodes of a running Ray
  cluster (`ray_address`) and sets up their process group; each rank runs the stage in the
  shared workspace.

Either way the ranks see torchrun's environment, rank 0 alone writes the model, the
metrics and the summary line, and a killed stage resumes from its last checkpoint when run
again on the same number of ranks.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from avar.config import Params, load_params
from avar.errors import UserError
from avar.ranks import ENGINE_ENV, NODE_ENV, is_main, leave
from avar.scrub import ScrubFilter, scrub
from avar.stages import stage as declared

log = logging.getLogger(__name__)
LAUNCHED_ENV = "AVAR_LAUNCHED"
"""Set in every rank avar starts: the rank runs the stage, it does not launch again."""
RANK_PREFIX = "[rank${rank}]:"
# Where rank 0 leaves the stage's summary line for the launcher to print: a rank's last
# lines can miss torchrun's tee when the ranks exit, the file cannot.
SUMMARY_ENV = "AVAR_SUMMARY_FILE"
TAIL_LINES = 25


class RankFailed(UserError):
    """A rank of a stage exited non-zero; the message names it and ends with its last lines."""


@dataclass(frozen=True)
class Ranks:
    """How one stage runs: engine, processes per host, hosts."""

    engine: str
    nproc_per_node: int
    nnodes: int

    @property
    def world_size(self) -> int:
        return self.nproc_per_node * self.nnodes


def plan(params: Params, name: str) -> Ranks:
    """The ranks of stage `name`: one process for stages that never spread, else what
    `launch` says, `auto` counted from the visible GPUs (one on a CPU host)."""
    cfg = params.launch
    if not declared(name).ranks:
        return Ranks("none", 1, 1)
    nproc, nnodes = cfg.ranks(name)
    per_host = (visible_gpus() or 1) if nproc == "auto" else int(nproc)
    return Ranks(cfg.engine, per_host, nnodes)


def visible_gpus() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def inside_ranks() -> bool:
    """This process is a rank started by a launcher (avar's, or torchrun typed by hand)."""
    return any(k in os.environ for k in (LAUNCHED_ENV, "TORCHELASTIC_RUN_ID", "RANK"))


def run_here(name: str, params_file: Path, overrides: list[str]) -> object:
    """Run the stage in this process (one of its ranks, or the only process); rank 0 prints
    the summary line."""
    result = declared(name).run(load_params(params_file, overrides))
    leave()
    if is_main():
        summary = os.environ.get(SUMMARY_ENV)
        if summary:  # the launcher prints it
            Path(summary).write_text(result.line() + "\n")
        else:
            print(result.line(), flush=True)
    return result


def launch(name: str, ranks: Ranks, params_file: Path, overrides: list[str], params) -> None:
    """Run stage `name` on `ranks` as `params` say (the `launch` section), here and now."""
    cfg = params.launch
    argv = ["stage", name, "--params", str(params_file)]
    for override in overrides:
        argv += ["-S", override]
    where = f"{ranks.nproc_per_node} rank(s) per host on {ranks.nnodes} host(s)"
    log.info("%s: %d ranks (%s, %s)", name, ranks.world_size, ranks.engine, where)
    summary = (Path(cfg.log_dir) / name / f"summary-{os.getpid()}.txt").resolve()
    summary.parent.mkdir(parents=True, exist_ok=True)
    summary.unlink(missing_ok=True)
    os.environ[SUMMARY_ENV] = str(summary)
    start = time.monotonic()
    if ranks.engine == "ray":
        stage = {"stage": name, "params": str(params_file), "overrides": list(overrides)}
        on_ray(name, ranks, stage, cfg, passed_env(params))
    else:
        on_torchrun(name, ranks, argv, cfg)
    log.info("%s: %d ranks finished in %.0f s", name, ranks.world_size, time.monotonic() - start)
    if summary.is_file():  # on the host (or shared workspace) of rank 0
        print(summary.read_text().strip(), flush=True)
        summary.unlink()


def torchrun_args(ranks: Ranks, argv: list[str], cfg, log_dir: Path) -> list[str]:
    """torch.distributed.run's arguments for the stage's command `argv`."""
    if ranks.nnodes == 1:
        meet = ["--standalone"]  # a free local port, no endpoint to configure
    else:
        meet = [
            "--rdzv-backend=c10d",
            f"--rdzv-endpoint={cfg.rdzv_endpoint}",
            f"--rdzv-id={cfg.rdzv_id}",
        ]
    return [
        f"--nnodes={ranks.nnodes}",
        f"--nproc-per-node={ranks.nproc_per_node}",
        *meet,
        "--max-restarts=0",  # a failed stage fails; run again, it resumes from a checkpoint
        "--tee=3",
        f"--log-dir={log_dir}",
        "-m",
        "avar.cli",
        *argv,
    ]


def on_torchrun(name: str, ranks: Ranks, argv: list[str], cfg) -> None:
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import get_args_parser
    from torch.distributed.run import run as elastic_run

    log_dir = Path(cfg.log_dir) / name / time.strftime("%Y%m%d-%H%M%S")
    os.environ.update(
        {
            LAUNCHED_ENV: "1",
            ENGINE_ENV: "torchrun",
            "TORCHELASTIC_LOG_LINE_PREFIX_TEMPLATE": RANK_PREFIX,
        }
    )
    args = get_args_parser().parse_args(torchrun_args(ranks, argv, cfg, log_dir))
    try:
        elastic_run(args)
    except ChildFailedError as err:
        rank, failure = min(err.failures.items(), key=lambda kv: kv[1].timestamp)
        how = failure.signal_name() if failure.exitcode < 0 else f"exit code {failure.exitcode}"
        tail = rank_tail(log_dir, failure.local_rank)
        raise RankFailed(
            f"avar stage {name}: rank {rank} (pid {failure.pid}) failed with {how}; "
            f"its logs: {log_dir}\n{tail}"
        ) from None


def rank_tail(log_dir: Path, local_rank: int, lines: int = TAIL_LINES) -> str:
    """The last lines a rank wrote (stderr, where logs and tracebacks go, then stdout)."""
    found = []
    for stream in ("stderr", "stdout"):
        for path in sorted(log_dir.glob(f"**/attempt_*/{local_rank}/{stream}.log")):
            text = path.read_text(errors="replace").rstrip().splitlines()
            found += [line.rsplit("\r", 1)[-1] for line in text[-lines:]]
        if found:
            break
    return scrub("\n".join(found[-lines:]))


def passed_env(params) -> dict[str, str]:
    """What a rank on another node must see of this process's environment: the variables
    `orchestrate.env` passes to a stage (hub token, tracking, S3) and the progress pace."""
    names = [*params.orchestrate.env, "TQDM_MININTERVAL", "HF_HOME", "HF_HUB_OFFLINE", SUMMARY_ENV]
    return {k: os.environ[k] for k in names if k in os.environ}


def on_ray(name: str, ranks: Ranks, stage: dict, cfg, env: dict[str, str]) -> None:
    import ray
    from ray.train import FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    workspace = Path.cwd().resolve()
    try:
        ray.init(address=cfg.ray_address, runtime_env={"env_vars": env}, log_to_driver=True)
    except ConnectionError as err:
        raise UserError(
            f"launch.ray_address {cfg.ray_address!r}: no Ray cluster answers ({err}); start "
            "one (`ray start --head` on the head, `ray start --address HEAD:6379` on workers)"
        ) from None
    use_gpu = ray.cluster_resources().get("GPU", 0) > 0
    trainer = TorchTrainer(
        ray_rank,
        train_loop_config={"workspace": str(workspace), **stage},
        scaling_config=ScalingConfig(num_workers=ranks.world_size, use_gpu=use_gpu),
        run_config=RunConfig(
            name=f"avar-{name}-{time.strftime('%Y%m%d-%H%M%S')}",
            storage_path=str(workspace / cfg.log_dir / name / "ray"),
            failure_config=FailureConfig(max_failures=0),
        ),
    )
    try:
        trainer.fit()
    except Exception as err:  # Ray wraps the rank's error in its own types
        message = scrub(str(err)).rstrip().splitlines()
        raise RankFailed(
            f"avar stage {name} failed on the Ray cluster:\n" + "\n".join(message[-TAIL_LINES:])
        ) from None
    finally:
        ray.shutdown()


def ray_rank(config: dict) -> None:
    """One rank under Ray Train: the stage in the shared workspace, as under torchrun."""
    import ray

    os.chdir(config["workspace"])
    os.environ.update(
        {LAUNCHED_ENV: "1", ENGINE_ENV: "ray", NODE_ENV: ray.get_runtime_context().get_node_id()}
    )
    rank = os.environ.get("RANK", "0")
    logging.basicConfig(
        level=logging.INFO, format=f"[rank{rank}]: %(message)s", stream=sys.stderr, force=True
    )
    for handler in logging.getLogger().handlers:
        handler.addFilter(ScrubFilter())
    run_here(config["stage"], Path(config["params"]), config["overrides"])
