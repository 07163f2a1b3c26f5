"""The package graph: import-linter's layers contract (pyproject.toml) holds, and it names
every top-level unit of avar, so a new module cannot slip in outside the layers."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def layered_units() -> set[str]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    (contract,) = [c for c in config["contracts"] if c["type"] == "layers"]
    return {name.strip() for layer in contract["layers"] for name in layer.split("|")}


def test_the_layers_contract_names_every_top_level_unit():
    units = {
        f"avar.{path.stem if path.is_file() else path.name}"
        for path in (ROOT / "avar").iterdir()
        if (path.suffix == ".py" and path.stem != "__init__") or (path / "__init__.py").is_file()
    }
    assert units - layered_units() == set()
    assert "flows" in layered_units()


def test_no_import_crosses_a_layer_upwards():
    linter = Path(sys.executable).with_name("lint-imports")
    done = subprocess.run(
        [str(linter), "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stdout[-3000:]
    assert "1 kept, 0 broken" in done.stdout
