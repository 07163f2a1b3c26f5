"""The one error type for bad configuration."""

from __future__ import annotations


class ConfigError(ValueError):
    """A bad key or value in params.yaml or an override; names the key path (and where
    known the file and line) and what was expected."""

    def __init__(self, key: str, problem: str, where: str = ""):
        self.key = key
        self.problem = problem
        self.where = where
        super().__init__(f"{where}{key}: {problem}")

    def located(self, where: str) -> ConfigError:
        """The same error, prefixed with `file:line: `."""
        return ConfigError(self.key, self.problem, where)


def require(ok: bool, key: str, expected: str, got: object) -> None:
    """A ConfigError naming `key`, what was expected and what was given, unless `ok`."""
    if not ok:
        raise ConfigError(key, f"expected {expected}, got {got!r}")


def require_spec(parse, text: str, key: str) -> None:
    """`parse(text)`'s ValueError as a ConfigError naming `key`."""
    try:
        parse(text)
    except ValueError as err:
        raise ConfigError(key, str(err)) from None
