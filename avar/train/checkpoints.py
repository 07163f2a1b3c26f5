"""Checkpoints of a training stage: resume after a crash, publish the final model whole.

`checkpoint_dir` holds the Trainer's `checkpoint-<step>` folders and `avar_stage.json`,
the params the checkpoints were written with (and the mark that avar made the folder). A
stage resumes only from checkpoints of the same params; otherwise it starts over, clearing
the folder, which it does only to folders that carry its mark.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from pathlib import Path

from transformers import Trainer
from transformers.integrations import is_deepspeed_zero3_enabled
from transformers.trainer_utils import get_last_checkpoint, sort_checkpoints

from avar.io import atomic_dir, replace_dir, write_json
from avar.models.weights import check_saved, load_saved_weights, weight_files
from avar.train.lora import is_lora, load_adapter, save_merged

log = logging.getLogger(__name__)
STAGE_FILE = "avar_stage.json"
TRAINER_STATE = "trainer_state.json"
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")
MODEL_FILES = ("config.json", "generation_config.json", "model.safetensors.index.json")


def resume_point(checkpoint_dir: str | Path, fingerprint: dict, resume: str) -> str | None:
    """The checkpoint to resume from, or None after preparing an empty `checkpoint_dir`.

    Call on the main process first (`TrainingArguments.main_process_first`): the other
    ranks then see what it decided.
    """
    folder = Path(checkpoint_dir)
    require_own_folder(folder)
    last = last_complete_checkpoint(folder)
    stage_file = folder / STAGE_FILE
    saved = json.loads(stage_file.read_text()) if stage_file.is_file() else None
    if last and resume == "auto" and saved == fingerprint:
        log.info("resuming from %s", last)
        restore_pruning_order(folder)
        return last
    if folder.is_dir() and any(folder.iterdir()):
        reason = "resume is 'never'" if resume == "never" else "other params, data or weights"
        if last is None:
            reason = "none of them is complete"
        log.warning("starting over: removing the checkpoints in %s (%s)", folder, reason)
        shutil.rmtree(folder)
    folder.mkdir(parents=True, exist_ok=True)
    write_json(stage_file, fingerprint)
    return None


def require_own_folder(folder: Path) -> None:
    """avar clears only checkpoint folders it made: it writes `avar_stage.json` into each
    one as it creates it, and refuses a non-empty folder without that marker (a mistyped
    `checkpoint_dir: data` must not delete the datasets)."""
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"checkpoint_dir {folder} is a file; expected a folder avar can own")
    if folder.is_dir() and any(folder.iterdir()) and not (folder / STAGE_FILE).is_file():
        raise ValueError(
            f"checkpoint_dir {folder} holds files avar did not write (no {STAGE_FILE}); "
            "avar resumes from and clears only its own checkpoint folders: set the stage's "
            "checkpoint_dir to a new or empty folder"
        )


def is_complete(checkpoint: Path) -> bool:
    """A crash while saving leaves a folder without its state or weights."""
    return (checkpoint / TRAINER_STATE).is_file() and any(
        p.name.endswith(WEIGHT_SUFFIXES) for p in checkpoint.iterdir()
    )


def last_complete_checkpoint(folder: Path) -> str | None:
    """The newest complete `checkpoint-<step>`; incomplete newer ones are removed."""
    if not folder.is_dir():
        return None
    while (last := get_last_checkpoint(str(folder))) is not None:
        if is_complete(Path(last)):
            return last
        log.warning("removing %s: it was not saved completely", last)
        shutil.rmtree(last)
    return None


def restore_pruning_order(folder: Path) -> None:
    """Make the Trainer's `save_total_limit` pruning delete the oldest steps again.

    The Trainer prunes the checkpoints with the oldest folder mtime. A run killed while
    pruning leaves a half-deleted old folder whose mtime is now the newest, so the next
    prune would keep it and delete a newer checkpoint. Incomplete folders are removed and
    the rest get mtimes in step order (2 s apart, in the past).
    """
    checkpoints = [Path(p) for p in sort_checkpoints(str(folder))]  # by step
    complete = []
    for checkpoint in checkpoints:
        if is_complete(checkpoint):
            complete.append(checkpoint)
        else:
            log.warning("removing %s: it was not saved completely", checkpoint)
            shutil.rmtree(checkpoint)
    start = time.time() - 2 * len(complete) - 2
    for index, checkpoint in enumerate(complete):
        os.utime(checkpoint, (start + 2 * index, start + 2 * index))


def processor_files(model_dir: str | Path) -> list[Path]:
    """The files of a checkpoint that are not the model's weights or configs."""
    return [
        p
        for p in sorted(Path(model_dir).iterdir())
        if p.is_file()
        and not p.name.endswith(WEIGHT_SUFFIXES)
        and p.name not in MODEL_FILES
        and p.name != "training_args.bin"
    ]


class ExactResume(Trainer):
    """Trainer mixin: resuming loads every weight of the checkpoint into the model, renamed
    as `from_pretrained` renames it, or stops with the names that did not pair up.

    HF Trainer's own loader matches the checkpoint's names against the model's in-memory
    names with `strict=False`: with transformers 5's renamings nothing matches, nothing
    loads, and training silently continues from the starting weights. DeepSpeed resumes
    from its own module states (in-memory names, loaded strictly), so it keeps its path.
    """

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model=None) -> None:
        model = model or self.model
        if is_lora(model):  # the checkpoint holds the adapter alone
            count = load_adapter(model, resume_from_checkpoint)
            log.info("loaded all %d adapter tensors of %s", count, resume_from_checkpoint)
            return
        if self.is_deepspeed_enabled or self.is_fsdp_enabled:
            super()._load_from_checkpoint(resume_from_checkpoint, model)
            return
        count = load_saved_weights(model, resume_from_checkpoint)
        log.info("loaded all %d weight tensors of %s", count, resume_from_checkpoint)


def publish_model(trainer, source_dir: str | Path, out_dir: str | Path) -> Path:
    """Save the trained model with the source checkpoint's processor files into `out_dir`.

    Every rank must call this (ZeRO-3 gathers the weights collectively); the main process
    writes into `<out_dir>.partial` and swaps it into place whole. A LoRA model is saved
    merged, with its adapter in `adapter/` (the merge happens in place: call this last).
    """
    out_dir = Path(out_dir)
    staging = out_dir.with_name(f"{out_dir.name}.partial")
    model = trainer.accelerator.unwrap_model(trainer.model)
    lora = is_lora(model)
    if trainer.is_world_process_zero():
        shutil.rmtree(staging, ignore_errors=True)
        if lora:
            model = save_merged(model, staging)
    if not lora:
        trainer.save_model(str(staging))
    if trainer.is_world_process_zero():
        for path in processor_files(source_dir):
            shutil.copy2(path, staging / path.name)
        (staging / "training_args.bin").unlink(missing_ok=True)
        if not is_deepspeed_zero3_enabled():  # under ZeRO-3 the live weights are partitioned
            check_saved(model, staging)
        replace_dir(staging, out_dir)
    trainer.accelerator.wait_for_everyone()
    return out_dir


def publish_checkpoint(trainer, checkpoint: str | Path, source_dir: str | Path, out_dir) -> Path:
    """Publish a saved checkpoint's weights and configs as they are, with the source
    checkpoint's processor files (a re-run of a finished stage: nothing to gather)."""
    if trainer.is_world_process_zero():
        with atomic_dir(out_dir) as staging:
            for path in weight_files(checkpoint):
                shutil.copy2(path, staging / path.name)
            for name in MODEL_FILES:
                if (Path(checkpoint) / name).is_file():
                    shutil.copy2(Path(checkpoint) / name, staging / name)
            for path in processor_files(source_dir):
                shutil.copy2(path, staging / path.name)
            if not is_deepspeed_zero3_enabled():
                check_saved(trainer.model, staging)
    trainer.accelerator.wait_for_everyone()
    return Path(out_dir)
