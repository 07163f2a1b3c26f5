"""Checkpoint folders: avar clears only folders it made (marked by avar_stage.json)."""

from __future__ import annotations

import json
import os
import time

import pytest
from transformers.trainer_utils import rotate_checkpoints

from avar.train.checkpoints import STAGE_FILE, resume_point

FINGERPRINT = {"stage": "coldstart_text", "params": {"max_steps": 3}}


def test_a_folder_avar_did_not_make_is_refused_and_left_alone(tmp_path):
    """`checkpoint_dir: notes` (a typo) must not delete the user's notes."""
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "important.txt").write_text("keep me")
    with pytest.raises(ValueError, match=f"checkpoint_dir {notes} holds files avar did not"):
        resume_point(notes, FINGERPRINT, "auto")
    assert (notes / "important.txt").read_text() == "keep me"
    assert sorted(p.name for p in notes.iterdir()) == ["important.txt"]


def test_a_file_is_refused(tmp_path):
    path = tmp_path / "data.jsonl"
    path.write_text("{}\n")
    with pytest.raises(ValueError, match="is a file"):
        resume_point(path, FINGERPRINT, "auto")
    assert path.read_text() == "{}\n"


def test_avars_own_folder_is_cleared_when_starting_over(tmp_path):
    folder = tmp_path / "checkpoints"
    assert resume_point(folder, FINGERPRINT, "auto") is None  # made, and marked
    assert json.loads((folder / STAGE_FILE).read_text()) == FINGERPRINT
    (folder / "checkpoint-2").mkdir()
    (folder / "checkpoint-2/trainer_state.json").write_text("{}")
    (folder / "checkpoint-2/model.safetensors").write_bytes(b"")
    other = {**FINGERPRINT, "params": {"max_steps": 4}}
    assert resume_point(folder, other, "auto") is None  # other params: start over
    assert sorted(p.name for p in folder.iterdir()) == [STAGE_FILE]
    assert json.loads((folder / STAGE_FILE).read_text()) == other


def test_an_empty_folder_is_taken(tmp_path):
    folder = tmp_path / "empty"
    folder.mkdir()
    assert resume_point(folder, FINGERPRINT, "auto") is None
    assert (folder / STAGE_FILE).is_file()


def checkpoint(folder, step: int, complete: bool = True, mtime: float | None = None):
    path = folder / f"checkpoint-{step}"
    path.mkdir()
    (path / "trainer_state.json").write_text("{}")
    if complete:
        (path / "model.safetensors").write_bytes(b"")
    if mtime is not None:
        os.utime(path, (mtime, mtime))
    return path


@pytest.mark.parametrize("complete", [False, True])
def test_a_half_pruned_old_checkpoint_does_not_make_the_trainer_prune_a_newer_one(
    tmp_path, complete
):
    """A run killed while the Trainer pruned checkpoint-2 left it with the newest mtime;
    the Trainer prunes by mtime, so after the resume it would keep checkpoint-2 and delete
    checkpoint-6. The resume puts the mtimes back in step order."""
    folder = tmp_path / "checkpoints"
    resume_point(folder, FINGERPRINT, "auto")
    now = time.time()
    checkpoint(folder, 4, mtime=now - 30)
    checkpoint(folder, 6, mtime=now - 20)
    checkpoint(folder, 2, complete=complete, mtime=now - 10)  # touched by the killed prune
    assert resume_point(folder, FINGERPRINT, "auto") == str(folder / "checkpoint-6")
    checkpoint(folder, 8)  # the resumed run saves, then the Trainer prunes to 2
    rotate_checkpoints(str(folder), save_total_limit=2, use_mtime=True)
    assert sorted(p.name for p in folder.glob("checkpoint-*")) == ["checkpoint-6", "checkpoint-8"]
