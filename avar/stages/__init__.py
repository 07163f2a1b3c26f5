"""The pipeline's stages: each is `run(params) -> result`, called by `avar stage NAME`,
dvc.yaml and the Prefect flow alike."""

STAGES = ("prepare", "base", "curate", "coldstart_text", "sft_mm", "rl", "vas", "eval", "register")
TRAINING_STAGES = ("base", "coldstart_text", "sft_mm", "rl")
"""The stages that train a model: each publishes `<stage>.out_dir` and scores checkpoints."""
