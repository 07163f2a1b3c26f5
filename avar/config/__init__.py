"""One typed config: params.yaml sections -> dataclasses (see schema.py)."""

from avar.config.errors import ConfigError
from avar.config.load import flatten, from_dict, load_params, to_dict
from avar.config.schema import Params

__all__ = ["ConfigError", "Params", "flatten", "from_dict", "load_params", "to_dict"]
