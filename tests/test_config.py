"""params.yaml -> typed config: every section loads; bad input names file, line and key."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml

from avar.config import ConfigError, Params, flatten, load_params

ROOT = Path(__file__).resolve().parents[1]


def write(tmp_path, text: str) -> Path:
    path = tmp_path / "params.yaml"
    path.write_text(text)
    return path


def test_repo_params_load_every_section_and_key():
    params = load_params(ROOT / "params.yaml")
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    assert set(raw) == {f.name for f in dataclasses.fields(Params)}
    for section, values in raw.items():
        typed = getattr(params, section)
        for key, value in values.items():
            assert projected(getattr(typed, key), value) == value, f"{section}.{key}"


def projected(loaded, written):
    """The loaded value with only the keys params.yaml writes (the rest are defaults)."""
    if dataclasses.is_dataclass(loaded):
        loaded = dataclasses.asdict(loaded)
    if isinstance(loaded, dict) and isinstance(written, dict):
        return {k: projected(loaded[k], v) for k, v in written.items() if k in loaded}
    if isinstance(loaded, list) and isinstance(written, list) and len(loaded) == len(written):
        return [projected(a, b) for a, b in zip(loaded, written, strict=True)]
    return loaded


def missing_keys(defaults: dict, written: dict, prefix: str = "") -> list[str]:
    """Keys of the typed defaults that params.yaml does not write (sections, not lists)."""
    missing = []
    for key, value in defaults.items():
        if key not in written:
            missing.append(f"{prefix}{key}")
        elif isinstance(value, dict) and isinstance(written[key], dict):
            missing += missing_keys(value, written[key], f"{prefix}{key}.")
    return missing


def test_params_yaml_lists_every_knob_with_its_code_default():
    """One source of truth: the file writes every key, each with the dataclass default,
    so code that builds a section without the file gets what the pipeline runs with."""
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    defaults = dataclasses.asdict(Params())
    assert missing_keys(defaults, raw) == []
    loaded = dataclasses.asdict(load_params(ROOT / "params.yaml"))
    differ = [k for k, v in flatten(defaults).items() if flatten(loaded)[k] != v]
    assert differ == [], "params.yaml and the dataclass defaults disagree on these keys"


def test_every_field_has_a_docstring():
    import ast
    import inspect

    from avar.config import schema

    tree = ast.parse(inspect.getsource(schema))
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef) and node.name != "Params":
            body = node.body
            for i, stmt in enumerate(body):
                if isinstance(stmt, ast.AnnAssign):
                    nxt = body[i + 1] if i + 1 < len(body) else None
                    has_doc = isinstance(nxt, ast.Expr) and isinstance(nxt.value, ast.Constant)
                    assert has_doc, f"{node.name}.{stmt.target.id} has no docstring"


def test_missing_file_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match="absent.yaml: <file>: params file not found"):
        load_params(tmp_path / "absent.yaml")


def test_empty_file_and_empty_sections_take_defaults(tmp_path):
    assert load_params(write(tmp_path, "")) == Params()
    params = load_params(write(tmp_path, "rl:\nsft_mm:\n  alpha: 0.5\n"), ["rl.kl_coef=0.1"])
    assert params.rl == dataclasses.replace(Params().rl, kl_coef=0.1)
    assert params.sft_mm.alpha == 0.5


def test_unknown_key_names_file_line_and_key(tmp_path):
    path = write(tmp_path, "model:\n  name_or_path: tiny\nrl:\n  group_size: 4\n  grup: 3\n")
    with pytest.raises(ConfigError) as err:
        load_params(path)
    assert str(err.value).startswith(f"{path}:5: rl.grup: unknown key")
    assert "group_size" in str(err.value)  # lists what was expected


def test_wrong_type_names_key_and_expected(tmp_path):
    path = write(tmp_path, "sft_mm:\n  alpha: high\n")
    with pytest.raises(ConfigError, match=r":2: sft_mm.alpha: expected float, got 'high'"):
        load_params(path)


def test_bool_is_not_a_number(tmp_path):
    path = write(tmp_path, "rl:\n  group_size: true\n")
    with pytest.raises(ConfigError, match="rl.group_size: expected int"):
        load_params(path)


def test_bad_value_names_the_constraint(tmp_path):
    path = write(tmp_path, "rl:\n  group_size: 1\n")
    with pytest.raises(ConfigError, match=r":2: rl.group_size: expected an int >= 2, got 1"):
        load_params(path)


def test_literal_lists_allowed_values(tmp_path):
    path = write(tmp_path, "vas:\n  impl: fast\n")
    with pytest.raises(ConfigError, match=r"vas.impl: expected one of \['efficient', 'eager'\]"):
        load_params(path)


def test_layer_spec_is_checked(tmp_path):
    with pytest.raises(ConfigError, match="vas.layers"):
        load_params(write(tmp_path, "vas:\n  layers: 5-2\n"))


def test_invalid_yaml_names_the_line(tmp_path):
    path = write(tmp_path, "model:\n  name_or_path: [tiny\n")
    with pytest.raises(ConfigError, match=rf"{path.name}:\d+:.*not valid YAML"):
        load_params(path)


def test_overrides_parse_yaml_values_and_nest(tmp_path):
    path = write(tmp_path, "rl:\n  group_size: 4\n")
    params = load_params(
        path,
        [
            "rl.group_size=8",
            "sft_mm.alpha=0",
            "data.visual.n=7",
            "eval.benches=[mmstar, synthetic]",
        ],
    )
    assert params.rl.group_size == 8
    assert params.sft_mm.alpha == 0.0 and isinstance(params.sft_mm.alpha, float)
    assert params.data.visual.n == 7
    assert params.eval.benches == ["mmstar", "synthetic"]


def test_override_errors_are_clear(tmp_path):
    path = write(tmp_path, "")
    with pytest.raises(ConfigError, match="section.key=value"):
        load_params(path, ["rl.group_size"])
    with pytest.raises(ConfigError, match="rl.nope: unknown key"):
        load_params(path, ["rl.nope=1"])
    with pytest.raises(ConfigError, match="override 'sft_mm.alpha=-1': sft_mm.alpha: expected"):
        load_params(path, ["sft_mm.alpha=-1"])
    with pytest.raises(ConfigError, match="override 'data.visual=3': data.visual: expected a map"):
        load_params(path, ["data.visual=3"])


def test_flatten_gives_dotted_keys():
    flat = flatten(Params())
    assert flat["sft_mm.alpha"] == 0.15
    assert flat["data.visual.n"] == 400
    assert flat["eval.benches"] == "synthetic"


def test_unknown_benchmark_is_named(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("eval:\n  benches: [synthetic, mathvistaa]\n")
    with pytest.raises(ConfigError, match=r"eval.benches.*got \['mathvistaa'\]"):
        load_params(path)


def test_a_float_written_without_a_dot_is_a_float(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("base:\n  learning_rate: 3e-3\n")
    params = load_params(path, ["sft_mm.learning_rate=1e-4"])
    assert params.base.learning_rate == 0.003 and params.sft_mm.learning_rate == 0.0001
    with pytest.raises(ConfigError, match="expected float, got 'fast'"):
        load_params(path, ["sft_mm.learning_rate=fast"])


@pytest.mark.parametrize("value", [".nan", ".inf", "-.inf", "nan", "inf"])
def test_nan_and_inf_are_not_floats_here(tmp_path, value):
    # YAML reads .nan/.inf as floats; 'nan'/'inf' are strings, which float() would accept
    path = write(tmp_path, f"sft_mm:\n  alpha: {value}\n")
    with pytest.raises(
        ConfigError, match=r"params.yaml:2: sft_mm.alpha: expected (a finite )?float"
    ):
        load_params(path)


@pytest.mark.parametrize(
    "spec", ["alpha=nan,layers=0-1", "alpha=inf,layers=0-1", "alpha=0.1,layers=0-1,beta=-inf"]
)
def test_intervention_rejects_nan_and_inf(spec):
    from avar.config.specs import parse_intervention

    with pytest.raises(ValueError, match="finite and >= 0"):
        parse_intervention(spec)


def test_a_key_written_twice_is_an_error(tmp_path):
    path = write(tmp_path, "rl:\n  group_size: 4\n  lambda_visual: 0.3\n  group_size: 8\n")
    with pytest.raises(
        ConfigError, match=r"params.yaml:4: rl.group_size: written twice \(first at line 2\)"
    ):
        load_params(path)


def test_a_section_written_twice_is_an_error(tmp_path):
    path = write(tmp_path, "rl:\n  group_size: 4\nsft_mm:\n  alpha: 0.1\nrl:\n  group_size: 8\n")
    with pytest.raises(ConfigError, match=r"params.yaml:5: rl: written twice"):
        load_params(path)


def test_invalid_utf8_names_the_line(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_bytes(b"rl:\n  group_size: 4\n  # caf\xe9\n")
    with pytest.raises(ConfigError, match=r"params.yaml:3: <file>: not UTF-8 text"):
        load_params(path)
