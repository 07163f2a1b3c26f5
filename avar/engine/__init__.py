"""Generation engines beside avar's own forward: vLLM in a process of its own
(`generate.backend: vllm`), its weights following an in-memory policy when asked."""
