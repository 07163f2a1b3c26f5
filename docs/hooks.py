"""mkdocs hook: the reference pages, generated from the code at every build (docs/reference.py)."""

from __future__ import annotations

import sys
from pathlib import Path

from mkdocs.structure.files import File

sys.path.insert(0, str(Path(__file__).parent))
import reference  # noqa: E402

PAGES = {"reference/cli.md": reference.cli_page, "reference/params.md": reference.config_page}


def on_files(files, config):
    for uri, page in PAGES.items():
        files.append(File.generated(config, uri, content=page()))
    return files
