"""Reading benchmark files as their public releases distribute them: parquet, TSV with
base64 images, JSON and JSONL; images as parquet structs ({bytes, path}), base64 strings
or paths relative to the file. Every problem names the file and the row.
"""

from __future__ import annotations

import base64
import binascii
import csv
import io
import json
import sys
from collections.abc import Iterator
from pathlib import Path

from PIL import Image, UnidentifiedImageError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".gif", ".bmp", ".webp", ".tif", ".tiff")


class BenchmarkDataError(ValueError):
    """A benchmark file that is missing or does not parse; the message says which and where.
    A single row's error also carries its `path`, `row` and `reason`."""

    def __init__(self, message: str, path: Path | None = None, row: int = 0, reason: str = ""):
        super().__init__(message)
        self.path, self.row, self.reason = path, row, reason


def row_error(path: Path, row: int, reason: str) -> BenchmarkDataError:
    return BenchmarkDataError(f"{path}: row {row}: {reason}", path, row, reason)


def read_rows(path: Path) -> Iterator[tuple[int, dict]]:
    """(row number, row) of a .parquet, .tsv, .json or .jsonl file; rows count from 1."""
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        opened = parquet_file(path)
        try:
            table = opened.read()
        except Exception as err:  # a footer that reads over a broken body
            raise BenchmarkDataError(f"{path}: not a readable parquet file ({err})") from None
        yield from enumerate(table.to_pylist(), start=1)
    elif suffix == ".tsv":
        csv.field_size_limit(sys.maxsize)  # base64 images are long fields
        with path.open(encoding="utf-8", newline="") as handle:
            yield from enumerate(csv.DictReader(handle, delimiter="\t"), start=1)
    elif suffix == ".jsonl":
        with path.open(encoding="utf-8") as handle:
            for number, line in enumerate(handle, start=1):
                if line.strip():
                    yield number, _json_row(path, number, line)
    elif suffix == ".json":
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as err:
            raise BenchmarkDataError(f"{path}: invalid JSON ({err})") from None
        rows = data if isinstance(data, list) else list(data.values())
        for number, row in enumerate(rows, start=1):
            if not isinstance(row, dict):
                raise row_error(path, number, f"expected an object, got {type(row).__name__}")
            yield number, row
    else:
        raise BenchmarkDataError(f"{path}: unsupported file type {suffix!r}")


def parquet_file(path: Path):
    """An opened parquet file (footer read, no rows yet), or an error naming the file."""
    import pyarrow.parquet as pq

    try:
        return pq.ParquetFile(path)
    except Exception as err:  # pyarrow raises several types for a broken file
        raise BenchmarkDataError(f"{path}: not a readable parquet file ({err})") from None


def row_count(path: Path) -> int:
    """Rows in a benchmark file (a parquet file's from its footer, without reading it)."""
    if path.suffix.lower() == ".parquet":
        return parquet_file(path).metadata.num_rows
    return sum(1 for _ in read_rows(path))


def _json_row(path: Path, number: int, line: str) -> dict:
    try:
        row = json.loads(line)
    except json.JSONDecodeError as err:
        raise row_error(path, number, f"invalid JSON ({err.msg})") from None
    if not isinstance(row, dict):
        raise row_error(path, number, f"expected an object, got {type(row).__name__}")
    return row


def field(row: dict, name: str, path: Path, number: int):
    """`row[name]`, or an error naming the file, row and the missing column."""
    if name not in row or row[name] is None:
        raise row_error(path, number, f"missing column {name!r} (has {sorted(row)})")
    return row[name]


def decode_image(value, root: Path, path: Path, number: int) -> Image.Image:
    """An image from a parquet struct ({bytes, path}), raw bytes, a file path relative to
    `root` (text ending in an image suffix) or base64 text."""
    try:
        if isinstance(value, dict):
            if value.get("bytes"):
                return open_image(io.BytesIO(value["bytes"]))
            value = value.get("path")
        if isinstance(value, bytes | bytearray):
            return open_image(io.BytesIO(value))
        if isinstance(value, str) and value:
            looks_like_path = Path(value).suffix.lower() in IMAGE_SUFFIXES
            if looks_like_path:
                try:
                    file = inside(root, value)
                except ValueError as err:
                    raise row_error(path, number, str(err)) from None
                if not file.is_file():
                    raise row_error(path, number, f"image file {file} not found")
                return open_image(file)
            return open_image(io.BytesIO(base64.b64decode(value, validate=True)))
    except (UnidentifiedImageError, binascii.Error, OSError) as err:
        raise row_error(path, number, f"image does not decode ({err})") from None
    except BenchmarkDataError:
        raise
    except ValueError as err:  # larger than MAX_IMAGE_PIXELS
        raise row_error(path, number, str(err)) from None
    raise row_error(path, number, f"no image in {str(value)[:60]!r}")


MAX_IMAGE_PIXELS = 50_000_000
"""Largest image avar decodes (width x height); benchmark images are a few megapixels."""


def inside(root: str | Path, relative: str | Path) -> Path:
    """`root / relative`, for a path a data file names: relative, and staying inside the
    data file's folder (no `/abs/x.png`, no `../../x.png`); ValueError otherwise."""
    root = Path(root)
    path = root / relative
    if Path(relative).is_absolute() or not path.resolve().is_relative_to(root.resolve()):
        raise ValueError(f"image path {str(relative)!r} leaves its data folder {root}")
    return path


def open_image(source) -> Image.Image:
    """An image from a path or a file object, decoded now and in RGB; refused above
    MAX_IMAGE_PIXELS before any pixel is decoded."""
    image = Image.open(source)
    width, height = image.size
    if width * height > MAX_IMAGE_PIXELS:
        where = f"{source}: " if isinstance(source, str | Path) else ""
        raise ValueError(
            f"{where}image of {width}x{height} pixels is larger than avar's limit of "
            f"{MAX_IMAGE_PIXELS:,} pixels"
        )
    image.load()
    return image.convert("RGB")
