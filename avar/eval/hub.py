"""`avar benchmarks fetch` and `avar benchmarks list`: benchmark folders downloaded from the
Hugging Face hub as the repositories lay them out, and what each folder holds.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

from avar.data.files import BenchmarkDataError
from avar.errors import UserError
from avar.eval.benchmarks import BENCHMARKS, HUB, benchmark, find_files, row_count

log = logging.getLogger(__name__)
HUB_URL = f"https://{HUB}"


class FetchError(UserError):
    """A download that did not happen; the message names the repo and the folder to fill."""


def fetch(name: str, data_dir: str | Path) -> Path:
    """Download benchmark `name` into `<data_dir>/<name>/`, keeping the repository's layout
    (only the files avar reads). A folder this call created is removed again if the
    download fails; one that was there is left as it was, partial downloads included (the
    next fetch resumes them)."""
    from huggingface_hub import snapshot_download

    bench = benchmark(name)
    folder = Path(data_dir) / name
    if not bench.repo:
        raise ValueError(f"{name}: built by avar, not downloaded; it comes from {bench.origin}")
    created = not folder.exists()
    log.info("%s: downloading %s from %s%s", name, ", ".join(bench.fetch), HUB_URL, bench.repo)
    try:
        snapshot_download(
            bench.repo, repo_type="dataset", allow_patterns=list(bench.fetch), local_dir=folder
        )
    except OSError as err:  # network, offline mode, missing or gated repo: all OSErrors
        if created and folder.exists():
            shutil.rmtree(folder)
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise FetchError(
            f"{name}: could not download {HUB_URL}{bench.repo} ({reason}); put "
            f"{', '.join(bench.fetch)} from it into {folder} by hand (README: Evaluation)"
        ) from None
    if not find_files(bench, folder):
        raise FetchError(
            f"{name}: {HUB_URL}{bench.repo} has no {', '.join(bench.fetch)}; its layout may "
            f"have changed: put the files into {folder} by hand (README: Evaluation)"
        )
    return folder


@dataclass
class FolderStatus:
    name: str
    folder: Path
    status: str
    """found, missing, or unreadable (with the reason in `detail`)."""
    files: list[Path]
    rows: int
    detail: str


def folder_status(name: str, data_dir: str | Path) -> FolderStatus:
    """What `<data_dir>/<name>/` holds: the files avar would read and their rows."""
    bench = benchmark(name)
    folder = Path(data_dir) / name
    files = find_files(bench, folder)
    if not files:
        source = f"`avar benchmarks fetch {name}`" if bench.repo else bench.origin
        return FolderStatus(name, folder, "missing", [], 0, source)
    try:
        rows = sum(row_count(path) for path in files)
    except BenchmarkDataError as err:
        return FolderStatus(name, folder, "unreadable", files, 0, str(err))
    source = f"{HUB_URL}{bench.repo}" if bench.repo else bench.origin
    return FolderStatus(name, folder, "found", files, rows, source)


def statuses(data_dir: str | Path) -> list[FolderStatus]:
    return [folder_status(name, data_dir) for name in BENCHMARKS]
