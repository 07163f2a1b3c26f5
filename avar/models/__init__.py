"""Models: the embedded tiny/small Qwen2.5-VL and the loader for real checkpoints."""
