"""Training: HF Trainer setup, the attention-guided SFT loss, GRPO, checkpoint scoring."""
