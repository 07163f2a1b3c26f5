"""The generated reference pages of avar's docs: the command line from the typer app, and
params.yaml from avar/config/schema.py (each field's type, default and docstring), so neither
can drift from the code. docs/hooks.py adds both pages at build time; tests/test_docs.py
checks that every command and every params key appears in them.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import typing

import typer.main

from avar.cli import app
from avar.config import schema


def is_group(command) -> bool:
    """A command with subcommands (typer's own click classes are not always click's)."""
    return hasattr(command, "commands")


def commands(group=None, prefix: str = "avar"):
    """(full name, click command) for every command of the app, groups included, in order."""
    group = group or typer.main.get_command(app)
    for name, command in group.commands.items():
        full = f"{prefix} {name}"
        yield full, command
        if is_group(command):
            yield from commands(command, full)


def option_row(param) -> str:
    if param.param_type_name == "argument":
        names = f"`{param.name.upper()}`"
    else:
        names = ", ".join(f"`{o}`" for o in [*param.opts, *param.secondary_opts])
    helptext = getattr(param, "help", None) or ""
    default = param.default
    quiet = default in (None, (), [], False) or callable(default)
    shown = "" if quiet else f" (default `{default}`)"
    return f"| {names} | {helptext}{shown} |".replace("\n", " ")


def cli_page() -> str:
    out = ["# Command line", "", "Generated from avar's typer app (`avar COMMAND --help`).", ""]
    for full, command in commands():
        out += [f"## `{full}`", "", (command.help or "").strip(), ""]
        params = [p for p in command.params if p.name != "help"]
        if is_group(command):
            subs = ", ".join(f"`{full} {n}`" for n in command.commands)
            out += [f"Commands: {subs}.", ""]
        if params:
            out += ["| argument / option | meaning |", "| --- | --- |"]
            out += [option_row(p) for p in params] + [""]
    return "\n".join(out)


def field_docs(cls: type) -> dict[str, str]:
    """The docstring under each field of a config dataclass (and of the classes it extends)."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if klass.__module__ != schema.__name__:
            continue
        body = ast.parse(inspect.getsource(klass)).body[0].body  # type: ignore[attr-defined]
        for stmt, nxt in zip(body, body[1:], strict=False):
            if isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name):
                if isinstance(nxt, ast.Expr) and isinstance(nxt.value, ast.Constant):
                    docs[stmt.target.id] = inspect.cleandoc(nxt.value.value)
    return docs


def type_name(hint) -> str:
    """`int`, `list[str]`, or a Literal's choices as `a | b`."""
    if typing.get_origin(hint) is typing.Literal:
        return " | ".join(str(choice) for choice in typing.get_args(hint))
    if isinstance(hint, type):
        return hint.__name__
    return str(hint).replace("typing.", "")


def sections(cls: type = schema.Params, prefix: str = ""):
    """(dotted key, type name, default, docstring) for every params key, nested ones too."""
    hints = typing.get_type_hints(cls)
    docs = field_docs(cls)
    instance = cls()
    nested = []
    for field in dataclasses.fields(cls):
        key = f"{prefix}{field.name}"
        value = getattr(instance, field.name)
        if dataclasses.is_dataclass(value):
            nested.append((key, field.name, type(value)))  # after this section's own keys
        else:
            yield key, type_name(hints[field.name]), value, docs.get(field.name, "")
    for key, name, klass in nested:
        own = klass.__doc__ or ""
        own = "" if own.startswith(f"{klass.__name__}(") else inspect.cleandoc(own)
        yield key, "section", None, docs.get(name, "") or own
        yield from sections(klass, key + ".")


def config_page() -> str:
    out = [
        "# params.yaml",
        "",
        "Generated from `avar/config/schema.py`: every key with its type, its default and "
        "what it means. Override any key with `-S section.key=value` (avar) or "
        "`dvc exp run -S section.key=value`.",
        "",
    ]
    for key, kind, default, doc in sections():
        if kind == "section":
            level = "##" if "." not in key else "###"
            out += [f"{level} `{key}`", "", doc, "", "| key | type | default | meaning |"]
            out += ["| --- | --- | --- | --- |"]
            continue
        text = doc.replace("\n", " ").replace("|", "\\|")
        shown = f"`{default!r}`".replace("|", "\\|")
        kind = kind.replace("|", "\\|")
        out.append(f"| `{key}` | {kind} | {shown} | {text} |")
    return "\n".join(out) + "\n"
