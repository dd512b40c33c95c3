"""Method registry: name -> Method class (docs/contributing.md#add-a-method).

Every module of this package registers its method on import; `register` also hands the method's
`Params` dataclass to the config layer, which checks `<method>.<key>=value` against it.
"""
from __future__ import annotations

import importlib
import pkgutil

from ..config import register_params
from ..errors import ConfigError

METHODS: dict[str, type] = {}


def register(cls: type) -> type:
    if cls.name in METHODS:
        raise ValueError(f"method {cls.name!r} registered twice")
    METHODS[cls.name] = cls
    register_params(cls.name, cls.Params)
    return cls


def get_method(name: str) -> type:
    if name not in METHODS:
        raise ConfigError(f"unknown method {name!r}; expected one of {sorted(METHODS)}")
    return METHODS[name]


for _m in pkgutil.iter_modules(__path__):
    if _m.name != "base":
        importlib.import_module(f"{__name__}.{_m.name}")
