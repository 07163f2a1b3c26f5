"""The `avar` command line: thin wrappers over the library, one command per job."""

from __future__ import annotations

import contextlib
import errno
import functools
import json
import logging
import os
import socket
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.logging import RichHandler

from avar.config import ConfigError, load_params, to_dict
from avar.errors import UserError
from avar.io import exclusive_lock
from avar.scrub import ScrubFilter, scrub
from avar.stages.registry import STAGES

app = typer.Typer(
    help="avar: attention-guided cold-start for multimodal reasoning.", no_args_is_help=True
)
model_app = typer.Typer(help="Build and inspect models.", no_args_is_help=True)
data_app = typer.Typer(help="Generate and validate datasets.", no_args_is_help=True)
params_app = typer.Typer(help="Inspect params.yaml.", no_args_is_help=True)
app.add_typer(model_app, name="model")
app.add_typer(data_app, name="data")
app.add_typer(params_app, name="params")
services_app = typer.Typer(help="The local Prefect + MLflow stack.", no_args_is_help=True)
app.add_typer(services_app, name="services")
benchmarks_app = typer.Typer(help="Benchmark folders: fetch and list.", no_args_is_help=True)
app.add_typer(benchmarks_app, name="benchmarks")
study_app = typer.Typer(help="The paper's findings over variants x seeds (DVC experiments).")
app.add_typer(study_app, name="study")
images_app = typer.Typer(help="avar's container images (docker/Dockerfile).", no_args_is_help=True)
app.add_typer(images_app, name="images")
stack_app = typer.Typer(
    help="The compose stack from local images (docker/compose.local.yaml).", no_args_is_help=True
)
app.add_typer(stack_app, name="stack")
console = Console(stderr=True)

ParamsFile = Annotated[Path, typer.Option("--params", help="The params file.")]
BenchDirOption = Annotated[
    Path | None, typer.Option(help="One folder per benchmark (default: eval.data_dir).")
]
Overrides = Annotated[
    list[str] | None,
    typer.Option("-S", "--set", help="Override a param: section.key=value (repeatable)."),
]


DEBUG_ENV = "AVAR_DEBUG"
"""Set (by `avar --debug`, or in the environment) to see tracebacks instead of one line."""


def friendly_errors(command):
    """Report bad input, a full disk or a server that does not answer as one clear line
    and a non-zero exit, not a traceback (unless --debug)."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except (ConfigError, ValueError, FileNotFoundError, UserError, OSError) as err:
            if os.environ.get(DEBUG_ENV) or not is_user_error(err):
                raise
            label = "config error" if isinstance(err, ConfigError) else "error"
            console.print(f"[red]{label}:[/red] {scrub(one_line(err))}", soft_wrap=True)
            raise typer.Exit(2 if isinstance(err, ConfigError) else 1) from None

    return wrapper


def is_user_error(err: BaseException) -> bool:
    """Errors a user fixes; other OSErrors are avar's bugs and keep their traceback."""
    if isinstance(err, OSError) and not isinstance(err, FileNotFoundError):
        return err.errno == errno.ENOSPC
    return True


def one_line(err: BaseException) -> str:
    if isinstance(err, OSError) and err.errno == errno.ENOSPC:
        where = f" writing {err.filename}" if err.filename else ""
        return (
            f"no space left on the device{where}: free some space (or point the stage's "
            "outputs elsewhere) and run it again"
        )
    return str(err)


@app.callback()
def main(
    verbose: Annotated[bool, typer.Option("-v", "--verbose")] = False,
    debug: Annotated[bool, typer.Option("--debug", help="Tracebacks instead of one line.")] = False,
) -> None:
    if debug:
        os.environ[DEBUG_ENV] = "1"
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(message)s",
        handlers=[RichHandler(console=console, show_path=False)],
    )
    for handler in logging.getLogger().handlers:
        handler.addFilter(ScrubFilter())
    if not verbose:  # one line per HTTP request (Prefect, MLflow, the hub) is noise
        logging.getLogger("httpx").setLevel(logging.WARNING)


@model_app.command("init-tiny")
@friendly_errors
def model_init_tiny(
    out: Annotated[Path, typer.Option(help="Directory to write the HF checkpoint to.")],
    preset: Annotated[str, typer.Option(help="tiny (~1M params) or small (~40M).")] = "tiny",
    seed: Annotated[int, typer.Option(help="Initialisation seed.")] = 0,
) -> None:
    """Build a Qwen2.5-VL-architecture model with a locally trained tokenizer."""
    from avar.models.tiny import init_tiny

    init_tiny(out, preset, seed)
    console.print(f"wrote {preset} model to {out}")


@data_app.command("synth")
@friendly_errors
def data_synth(
    kind: Annotated[str, typer.Option(help="visual or text.")],
    n: Annotated[int, typer.Option(help="Number of records.")],
    out: Annotated[Path, typer.Option(help="Output directory (data.jsonl, images/).")],
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    image_size: Annotated[int, typer.Option(help="Scene side in pixels.")] = 112,
) -> None:
    """Generate synthetic records: drawn-scene questions or text word problems."""
    from avar.data import synthesize

    path = synthesize(kind, n, seed, out, image_size)
    console.print(f"wrote {n} {kind} records to {path}")


@data_app.command("validate")
def data_validate(paths: Annotated[list[Path], typer.Argument(help="JSONL files.")]) -> None:
    """Check schema, images, answers and unique ids; exit 1 listing file:line problems."""
    from avar.data import validate_files
    from avar.summary import validation_table

    report = validate_files(paths)
    if not report.ok:
        for line in report.problem_lines():
            typer.echo(line)
        console.print(f"[red]{len(report.problems)} problems[/red] in {len(paths)} file(s)")
        raise typer.Exit(1)
    Console().print(validation_table(report))


@params_app.command("show")
@friendly_errors
def params_show(params: ParamsFile = Path("params.yaml"), overrides: Overrides = None) -> None:
    """Print the resolved params (file + overrides + defaults) as JSON."""
    typer.echo(json.dumps(to_dict(load_params(params, overrides)), indent=2))


@app.command("prepare")
@friendly_errors
def prepare(params: ParamsFile = Path("params.yaml"), overrides: Overrides = None) -> None:
    """Build the embedded model and the synthetic sources from params, validate, summarise."""
    from avar.prepare import run
    from avar.summary import print_prepare_summary

    print_prepare_summary(run(load_params(params, overrides)))


ModelOption = Annotated[str, typer.Option("--model", help="Checkpoint: local dir or HF id.")]
DataOption = Annotated[Path, typer.Option("--data", help="Records (JSONL; images beside it).")]
InterveneOption = Annotated[
    str | None,
    typer.Option(help="Steer attention to image keys: alpha=0.2,layers=2-8[,beta=0.1]."),
]


@app.command("vas")
@friendly_errors
def vas(
    model: ModelOption,
    data: DataOption,
    out: Annotated[Path, typer.Option(help="Report JSON.")],
    queries: Annotated[str | None, typer.Option(help="response, prompt or last.")] = None,
    layers: Annotated[str | None, typer.Option(help="all or an inclusive range A-B.")] = None,
    impl: Annotated[str | None, typer.Option(help="efficient, or eager (reference).")] = None,
    generate: Annotated[bool, typer.Option(help="Measure on the model's own answer.")] = False,
    intervene: InterveneOption = None,
    limit: Annotated[int, typer.Option(help="First N records; 0 = all.")] = 0,
    batch_size: Annotated[int, typer.Option(help="Sequences per forward pass.")] = 8,
    max_new_tokens: Annotated[int, typer.Option(help="Generation length.")] = 128,
    params: ParamsFile = Path("params.yaml"),
    overrides: Overrides = None,
) -> None:
    """Visual Attention Score: image mass / system mass of the response's attention."""
    from avar.config.specs import parse_intervention
    from avar.data.chats import load_records
    from avar.engine.client import answering_engine
    from avar.eval.measure import VasSettings, measure_vas
    from avar.io import write_json
    from avar.models.loader import load
    from avar.summary import vas_table

    cfg = load_params(params, overrides)
    settings = VasSettings(
        queries=queries or cfg.vas.queries,
        layers=layers or cfg.vas.layers,
        impl=impl or cfg.vas.impl,
        generate=generate,
        intervene=parse_intervention(intervene or ""),
        batch_size=batch_size,
        max_new_tokens=max_new_tokens,
    )
    records, root = load_records(data, limit)
    net, processor = load(model, cfg.model, "eager" if settings.impl == "eager" else None)
    steered = settings.intervene is not None
    with answering_engine(cfg.generate, cfg.model, model, not generate or steered) as engine:
        result = measure_vas(
            net, processor, records, root, settings, cfg.model.system_prompt, engine=engine
        )
    result["model"], result["data"] = model, str(data)
    write_json(out, result)
    Console().print(vas_table(result))
    console.print(f"wrote {out}")


@app.command("eval")
@friendly_errors
def eval_command(
    model: ModelOption,
    out: Annotated[Path, typer.Option(help="Results JSON.")],
    bench: Annotated[
        str | None, typer.Option(help="Benchmarks, comma-separated (default: eval.benches).")
    ] = None,
    data_dir: BenchDirOption = None,
    intervene: InterveneOption = None,
    limit: Annotated[int | None, typer.Option(help="First N samples per benchmark.")] = None,
    vas: Annotated[bool, typer.Option(help="Also the VAS of the answers.")] = False,
    preset: Annotated[
        str | None, typer.Option(help="avar, lmms-eval or vlmevalkit (default: eval.preset).")
    ] = None,
    params: ParamsFile = Path("params.yaml"),
    overrides: Overrides = None,
) -> None:
    """Benchmark accuracy (overall and per category) and, with --vas, the answers' VAS."""
    from avar.eval.run import EvalRequest, evaluate, results_table
    from avar.io import write_json

    if preset is not None:
        overrides = [*(overrides or []), f"eval.preset={preset}"]
    cfg = load_params(params, overrides)
    request = EvalRequest(
        model=model,
        benches=[b.strip() for b in bench.split(",") if b.strip()] if bench else cfg.eval.benches,
        data_dir=str(data_dir or cfg.eval.data_dir),
        limit=cfg.eval.limit if limit is None else limit,
        intervene=cfg.eval.intervene if intervene is None else intervene,
        vas=vas,
    )
    report = evaluate(request, cfg)
    write_json(out, report)
    Console().print(results_table(report))
    console.print(f"wrote {out}")


@benchmarks_app.command("fetch")
@friendly_errors
def benchmarks_fetch(
    names: Annotated[str, typer.Argument(help="Benchmarks, comma-separated.")],
    data_dir: BenchDirOption = None,
    params: ParamsFile = Path("params.yaml"),
    overrides: Overrides = None,
) -> None:
    """Download benchmarks from the Hugging Face hub into their folders, as the hub lays
    them out (only the files avar reads)."""
    from avar.eval.benchmarks import benchmark
    from avar.eval.hub import fetch, folder_status

    cfg = load_params(params, overrides)
    wanted = [benchmark(n.strip()).name for n in names.split(",") if n.strip()]
    for name in wanted:
        folder = fetch(name, data_dir or cfg.eval.data_dir)
        found = folder_status(name, data_dir or cfg.eval.data_dir)
        console.print(f"{name}: {len(found.files)} file(s), {found.rows} rows in {folder}")


@benchmarks_app.command("list")
@friendly_errors
def benchmarks_list(
    data_dir: BenchDirOption = None,
    params: ParamsFile = Path("params.yaml"),
    overrides: Overrides = None,
) -> None:
    """Each benchmark's folder: found, missing or unreadable, its rows and files."""
    from rich.table import Table

    from avar.eval.hub import statuses

    root = Path(data_dir or load_params(params, overrides).eval.data_dir)
    table = Table(title=f"benchmarks in {root}")
    for column in ("benchmark", "status", "rows", "files", "from"):
        table.add_column(column, justify="right" if column == "rows" else "left")
    for found in statuses(root):
        files = ", ".join(str(p.relative_to(found.folder)) for p in found.files[:3])
        more = f" (+{len(found.files) - 3})" if len(found.files) > 3 else ""
        rows = str(found.rows) if found.status == "found" else "-"
        table.add_row(found.name, found.status, rows, files + more, found.detail)
    Console(width=200).print(table)


@app.command("attention-map")
@friendly_errors
def attention_map(
    model: ModelOption,
    data: DataOption,
    out: Annotated[Path, typer.Option(help="PNG to write.")],
    index: Annotated[int, typer.Option(help="Record number in the file (0-based).")] = 0,
    layers: Annotated[str | None, typer.Option(help="all or an inclusive range A-B.")] = None,
    generate: Annotated[bool, typer.Option(help="Use the model's own answer.")] = False,
    intervene: InterveneOption = None,
    params: ParamsFile = Path("params.yaml"),
    overrides: Overrides = None,
) -> None:
    """Draw the response's attention over the image, beside VAS per layer."""
    from avar.attention.maps import attention_map as build_map
    from avar.attention.maps import draw
    from avar.config.specs import parse_intervention
    from avar.data.chats import load_records, prompts
    from avar.generate import generate as generate_text
    from avar.models.loader import load

    cfg = load_params(params, overrides)
    records, root = load_records(data)
    if not 0 <= index < len(records):
        raise ValueError(f"--index {index}: {data} has records 0-{len(records) - 1}")
    record = records[index]
    net, processor = load(model, cfg.model)
    spec, response = parse_intervention(intervene or ""), None
    if generate:
        prompt = prompts([record], root, cfg.model.system_prompt)
        response = generate_text(net, processor, prompt, 128, 1, spec)[0]
    amap = build_map(
        net,
        processor,
        record,
        root,
        cfg.model.system_prompt,
        layers or cfg.vas.layers,
        response,
        spec,
    )
    draw(amap, out)
    console.print(f"wrote {out}")


@app.command("stage")
@friendly_errors
def stage(
    name: Annotated[
        str,
        typer.Argument(help=", ".join(STAGES) + "."),
    ],
    params: ParamsFile = Path("params.yaml"),
    overrides: Overrides = None,
) -> None:
    """Run one pipeline stage from its section of params.yaml (safe to re-run).

    On the ranks `launch` asks for: several, and this command starts them (torchrun on this
    host, or Ray Train on a cluster) and fails with the failing rank's last lines. One run
    of a stage at a time per workspace (per host when a stage spans hosts): a second `avar
    stage NAME` stops with the holder's PID. Under a launcher, the launcher (or rank 0 of
    a torchrun typed by hand) holds the lock for all ranks.
    """
    from avar import launch

    cfg = load_params(params, overrides)
    ranks = launch.plan(cfg, name)
    inside = launch.inside_ranks()
    if inside and os.environ.get(launch.LAUNCHED_ENV):  # a rank avar started
        launch.run_here(name, params, overrides or [])
        return
    host = f".{socket.gethostname()}" if ranks.nnodes > 1 else ""
    lock = Path(".avar/locks") / f"{name}{host}.lock"
    main_rank = os.environ.get("RANK", "0") == "0"
    with exclusive_lock(lock, f"avar stage {name}") if main_rank else contextlib.nullcontext():
        if ranks.world_size > 1 and not inside:
            launch.launch(name, ranks, params, overrides or [], cfg)
        else:
            launch.run_here(name, params, overrides or [])


@app.command("plan")
@friendly_errors
def plan_command(
    stage: Annotated[str, typer.Argument(help="A training stage: its section's settings.")],
    model: Annotated[str, typer.Option(help="Folder or hub id (default: model).")] = "",
    gpu_gb: Annotated[float, typer.Option(help="Memory of one GPU, GB.")] = 80.0,
    gpus_per_node: Annotated[int, typer.Option(help="0: the stage's launch ranks.")] = 0,
    nodes: Annotated[int, typer.Option(help="0: the stage's launch nodes.")] = 0,
    seq_len: Annotated[int, typer.Option(help="Tokens of the longest sequence.")] = 4096,
    image_tokens: Annotated[int, typer.Option(help="Image tokens among them.")] = 1024,
    params: ParamsFile = Path("params.yaml"),
    overrides: Overrides = None,
) -> None:
    """Whether a training stage fits on the GPUs: per-GPU memory of weights, gradients,
    optimizer state and activations, from the model's config.json alone (exit 1: no); under
    `generate.backend: vllm`, beside the engine's share of the GPU."""
    from avar import launch
    from avar.stages import TRAINING_STAGES
    from avar.train.plan import estimate, load_config, stage_setup

    if stage not in TRAINING_STAGES:
        expected = ", ".join(TRAINING_STAGES)
        raise ValueError(f"stage {stage!r}: expected a training stage: {expected}")
    cfg = load_params(params, overrides)
    ranks = launch.plan(cfg, stage)
    where = (gpus_per_node or ranks.nproc_per_node, nodes or ranks.nnodes)
    section = getattr(cfg, stage)
    frozen = 4 if cfg.model.dtype == "fp32" else 2  # LoRA's frozen weights; auto: bf16 on GPUs
    share = cfg.generate.vllm.gpu_memory_utilization if cfg.generate.backend == "vllm" else 0.0
    setup = stage_setup(section, where, seq_len, image_tokens, gpu_gb, frozen, share)
    name = model or cfg.model.name_or_path
    if name in ("tiny", "small"):
        name = cfg.model.init_dir
    result = estimate(load_config(name), setup, section.lora)
    print("\n".join([f"{stage} on {name}", *result.lines()]))
    if not result.fits:
        raise typer.Exit(1)


@app.command("reevaluate")
@friendly_errors
def reevaluate_command(
    params: ParamsFile = Path("params.yaml"), overrides: Overrides = None
) -> None:
    """Evaluate the registered champion (and base) again; log to MLflow; flag a regression."""
    from avar.stages.reevaluate import reevaluate

    result = reevaluate(load_params(params, overrides))
    console.print(result.line(), soft_wrap=True)
    if result.regressed:
        raise typer.Exit(3)


@app.command("results")
@friendly_errors
def results(params: ParamsFile = Path("params.yaml"), overrides: Overrides = None) -> None:
    """The pipeline's results: VAS and accuracy per checkpoint, then per stage model."""
    from avar.summary import pipeline_tables

    for table in pipeline_tables(load_params(params, overrides)):
        Console().print(table)


@study_app.callback(invoke_without_command=True)
@friendly_errors
def study(
    ctx: typer.Context,
    quick: Annotated[
        bool, typer.Option(help="The `study.quick` grid (fewer seeds, arms, steps).")
    ] = False,
    jobs: Annotated[int, typer.Option(help="Experiments at once (default: study.jobs).")] = 0,
    params: ParamsFile = Path("params.yaml"),
    overrides: Overrides = None,
) -> None:
    """Run the `study` grid as DVC experiments (each variant x seed; overrides reach every
    one), log them under one MLflow study run, and write the findings to study.report."""
    if ctx.invoked_subcommand:
        return
    from avar.study.run import run_study

    echo = functools.partial(console.print, soft_wrap=True)
    outcome = run_study(Path("."), params, overrides or [], quick, jobs or None, echo=echo)
    for line in outcome.lines():
        console.print(line, soft_wrap=True)


@study_app.command("correlate")
@friendly_errors
def study_correlate(
    models: Annotated[str, typer.Option(help="Checkpoints, comma-separated: folders or hub ids.")],
    bench: Annotated[str, typer.Option(help="The benchmark they all answer.")],
    out: Annotated[Path, typer.Option(help="Results JSON (a PNG beside it).")] = Path(
        "reports/correlate.json"
    ),
    limit: Annotated[int, typer.Option(help="First N questions; 0 = all.")] = 0,
    params: ParamsFile = Path("params.yaml"),
    overrides: Overrides = None,
) -> None:
    """F1 over given checkpoints: Pearson and Spearman r of accuracy with log10 VAS and with
    image mass alone, with bootstrap intervals (study.bootstrap resamples)."""
    from avar.study.correlate import correlate
    from avar.summary import accuracy_cell

    cfg = load_params(params, overrides)
    names = [m.strip() for m in models.split(",") if m.strip()]
    report = correlate(names, bench, limit, cfg, out)
    for point in report["models"]:
        console.print(
            f"{point['label']}: accuracy {accuracy_cell(point)} (n={point['n']}), "
            f"log10 VAS {point['log10_vas']:.2f}, image mass {point['image_mass']:.3f}"
        )
    for key, value in report["correlations"].items():
        if isinstance(value, dict):
            low, high = value["low"], value["high"]
            shown = f" [{low:.2f}, {high:.2f}]" if low is not None else " (no interval)"
            console.print(f"{key}: {value['value']:.3f}{shown} over {value['n']} models")
    console.print(f"wrote {out} and {out.with_suffix('.png')}")


@app.command("run")
@friendly_errors
def run_command(
    deployment: Annotated[str, typer.Argument(help="flow/deployment, e.g. avar/full.")],
    param: Annotated[
        list[str] | None,
        typer.Option("-p", "--param", help="A flow parameter: key=value (YAML value)."),
    ] = None,
    every: Annotated[float, typer.Option(help="Seconds between progress lines.")] = 10.0,
) -> None:
    """Run a Prefect deployment and follow it here: each stage's start, progress, summary
    line and end (exit 1 unless the flow run completes). Needs PREFECT_API_URL (.avar/env)."""
    import yaml
    from prefect.deployments import run_deployment

    from avar.follow import Follower, follow
    from avar.stages import STAGES

    parameters = {}
    for item in param or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--param {item!r}: expected key=value")
        parameters[key] = yaml.safe_load(value)
    flow_run = run_deployment(deployment, parameters=parameters, timeout=0, as_subflow=False)
    echo = functools.partial(print, flush=True)  # log lines as they are, no markup
    echo(f"flow run {flow_run.name} ({flow_run.id}) of {deployment}")
    total = len(parameters.get("stages") or STAGES) if deployment.startswith("avar/") else 0
    state = follow(flow_run.id, Follower(echo=echo, every_s=every, total=total))
    echo(f"{deployment}: {state}")
    if state != "Completed":
        raise typer.Exit(1)


PrefectPort = Annotated[int, typer.Option(help="Prefect server port on 127.0.0.1.")]
MlflowPort = Annotated[int, typer.Option(help="MLflow server port on 127.0.0.1.")]


@services_app.command("up")
@friendly_errors
def services_up(
    prefect_port: PrefectPort = 4200,
    mlflow_port: MlflowPort = 5000,
    artifacts: Annotated[
        str | None, typer.Option(help="MLflow artifact store, e.g. s3://bucket/mlflow.")
    ] = None,
    backend_store: Annotated[
        str | None, typer.Option(help="MLflow backend store, e.g. postgresql+psycopg://...")
    ] = None,
    auth: Annotated[
        bool,
        typer.Option(help="MLflow basic auth; admin from MLFLOW_AUTH_ADMIN_USERNAME/_PASSWORD."),
    ] = False,
) -> None:
    """Start a Prefect server, an MLflow server and a worker here; deploy the flows."""
    from avar.services import Stack, up

    stack = Stack(Path("."), prefect_port, mlflow_port, auth)
    up(stack, artifacts, backend=backend_store)
    console.print(
        f"Prefect UI  http://127.0.0.1:{prefect_port}\n"
        f"MLflow UI   {stack.mlflow_uri}\nlogs        {stack.state / 'logs'}\n"
        f"shell       source {stack.state / 'env'}"
    )


@services_app.command("down")
def services_down() -> None:
    """Stop what `avar services up` started."""
    from avar.services import Stack, down

    stopped = down(Stack(Path(".")))
    console.print(f"stopped: {', '.join(stopped) or 'nothing was running'}")


@images_app.command("build")
@friendly_errors
def images_build(
    variant: Annotated[
        str, typer.Option(help="cpu (a bookworm base made here) or cuda (GPU hosts).")
    ] = "cpu",
    tag: Annotated[str | None, typer.Option(help="Image tag (default: the variant's).")] = None,
) -> None:
    """Build avar's image in the engine DOCKER_HOST names; print its tag."""
    from avar.images import build

    built = build(variant, tag, echo=console.print)
    print(built)


EnvFile = Annotated[
    Path, typer.Option("--env-file", help="The stack's settings and secrets (avar.env.example).")
]


@stack_app.command("up")
@friendly_errors
def stack_up(env_file: EnvFile = Path("docker/avar.env")) -> None:
    """Build avar's CPU image and the stack's images, start the stack, wait until healthy."""
    from avar.stack import LocalStack, up

    stack = LocalStack(env_file)
    up(stack, echo=console.print)
    console.print(f"Prefect UI  {stack.prefect_api[:-4]}\nMLflow UI   {stack.mlflow_uri}")


@stack_app.command("run")
@friendly_errors
def stack_run(
    env_file: EnvFile = Path("docker/avar.env"),
    param: Annotated[
        list[str] | None,
        typer.Option("-p", "--param", help="A flow parameter: key=value (YAML value)."),
    ] = None,
) -> None:
    """Deploy avar/full-docker to the stack's docker work pool from AVAR_WORKSPACE, run it
    and follow it here (as `avar run`)."""
    from avar.stack import LocalStack, deploy

    stack = LocalStack(env_file)
    deploy(stack)
    os.environ.update(stack.client_env())
    run_command("avar/full-docker", param)


@stack_app.command("down")
@friendly_errors
def stack_down(
    env_file: EnvFile = Path("docker/avar.env"),
    volumes: Annotated[bool, typer.Option(help="Remove the database volume too.")] = False,
) -> None:
    """Stop and remove the stack's containers."""
    from avar.stack import LocalStack, down

    down(LocalStack(env_file), volumes)
    console.print("stack down")


if __name__ == "__main__":
    app()
