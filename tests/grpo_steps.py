"""One real GRPO step with rewards that differ within each group (the completion's length),
so the step has advantages to follow: for the GRPO tests on one rank and on several."""

from __future__ import annotations

import torch
from transformers import TrainingArguments

from avar.stages.rl import keep_rows
from avar.train.grpo import GrpoObjective, GrpoTrainer


class LengthRewarded(GrpoTrainer):
    """GrpoTrainer whose total reward is the completion's length in characters."""

    def rewards(self, texts, records, masses):
        rewards = super().rewards(texts, records, masses)
        rewards["total"] = torch.tensor([float(len(t)) for t in texts])
        return rewards


def grpo_args(output_dir, max_steps: int = 1, learning_rate: float = 1e-3):
    """CPU training arguments of the GRPO tests: 2 prompts a rank, a log row every step."""
    return TrainingArguments(
        output_dir=str(output_dir),
        max_steps=max_steps,
        per_device_train_batch_size=2,
        learning_rate=learning_rate,
        report_to="none",
        use_cpu=True,
        remove_unused_columns=False,
        save_strategy="no",
        logging_steps=1,
    )


def grpo_step(
    model,
    processor,
    rows,
    output_dir,
    objective: GrpoObjective,
    trainer_class=LengthRewarded,
    steps: int = 1,
    learning_rate: float = 1e-3,
    **more,
):
    """Train `model` `steps` GRPO steps (2 prompts a rank) on `rows`; the trainer. `more`:
    the trainer's other arguments (an engine)."""
    args = grpo_args(output_dir, steps, learning_rate)
    trainer = trainer_class(
        model=model,
        args=args,
        train_dataset=rows,
        data_collator=keep_rows,
        processing_class=processor,
        objective=objective,
        **more,
    )
    trainer.train()
    return trainer
