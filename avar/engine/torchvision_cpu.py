"""Loaded at start-up by every Python process of avar's vLLM CPU environment (through
`avar_torchvision_cpu.pth`, which `make vllm-env` writes beside it in site-packages).

PyPI's torchvision wheel for torch 2.13 is a CUDA build: its C++ ops (`torchvision::nms`
and the rest) do not load against torch's CPU build, and `import torchvision` then fails
while registering fake and autograd kernels for those missing ops. vLLM needs torchvision
only through transformers' Qwen2-VL image and video processors, which use its pure-torch
transforms. Skipping the two registration modules (and nothing else) makes the import work;
the ops themselves stay unavailable, as they were. With a CUDA build of torch (a GPU host's
environment) it does nothing.
"""

import sys
import types
from importlib import metadata

try:
    cpu_torch = metadata.version("torch").endswith("+cpu")
except metadata.PackageNotFoundError:
    cpu_torch = False
if cpu_torch:
    for name in ("torchvision._meta_registrations", "torchvision._autograd_registrations"):
        sys.modules.setdefault(name, types.ModuleType(name))
