"""The docs: the generated references name every command and every params.yaml key, the
strict build fails on a broken link, and the README stays a short front page whose links
resolve."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "docs"))
import reference  # noqa: E402

# no --quiet: it hides the warnings that --strict counts (mkdocs 1.6)
MKDOCS = [sys.executable, "-m", "mkdocs", "build", "--strict"]


def keys(tree: dict, sections: set[str], prefix: str = "") -> list[str]:
    """Every key of a params tree, dotted (`rl.lora.r`), into the schema's sections only (a
    mapping field such as `study.variants` is one key, its entries are values)."""
    out = []
    for key, value in tree.items():
        out.append(prefix + key)
        if isinstance(value, dict) and prefix + key in sections:
            out += keys(value, sections, f"{prefix}{key}.")
    return out


def test_the_cli_reference_names_every_command_and_option():
    page = reference.cli_page()
    names = [full for full, _ in reference.commands()]
    assert "avar images build" in names and "avar study correlate" in names
    for full, command in reference.commands():
        assert f"## `{full}`" in page
        for param in command.params:
            for opt in getattr(param, "opts", []):
                if opt.startswith("-"):
                    assert f"`{opt}`" in page.split(f"## `{full}`", 1)[1], (full, opt)


def test_the_params_reference_names_every_key_of_params_yaml():
    page = reference.config_page()
    sections = set(re.findall(r"^#+ `([a-z_.]+)`", page, re.M))
    documented = sections | set(re.findall(r"^\| `([a-z_.]+)` \|", page, re.M))
    committed = keys(yaml.safe_load((ROOT / "params.yaml").read_text()), sections)
    assert len(committed) > 150
    missing = [k for k in committed if k not in documented]
    assert not missing, missing
    # and each row carries the field's docstring, not an empty cell
    assert re.search(r"^\| `rl\.temperature` \| float \| `0\.7` \| \S", page, re.M)


@pytest.mark.slow
def test_a_broken_link_fails_the_strict_build(tmp_path):
    docs = tmp_path / "docs"
    shutil.copytree(ROOT / "docs", docs, ignore=shutil.ignore_patterns("__pycache__"))
    config = docs / "mkdocs.yml"
    config.write_text(config.read_text().replace("../.avar/site", str(tmp_path / "site")))
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    good = subprocess.run([*MKDOCS, "-f", str(config)], capture_output=True, text=True, env=env)
    assert good.returncode == 0, good.stderr
    assert (tmp_path / "site/reference/params/index.html").is_file()
    page = docs / "pages/concepts.md"
    page.write_text(page.read_text() + "\nSee [the missing page](no-such-page.md).\n")
    bad = subprocess.run([*MKDOCS, "-f", str(config)], capture_output=True, text=True, env=env)
    assert bad.returncode != 0 and "no-such-page.md" in bad.stderr + bad.stdout


def test_the_readme_is_a_front_page_whose_links_resolve():
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= 200
    assert text.startswith("# avar\n\n```bash\nmake run ")
    links = re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", text)
    assert links
    for link in links:
        assert link.startswith("http") or (ROOT / link).exists(), link
