"""Method registry: name -> Method class. Every module in this package registers itself on import."""
from __future__ import annotations

import importlib
import pkgutil

from ..errors import ConfigError

METHODS: dict[str, type] = {}


def register(cls: type) -> type:
    if cls.name in METHODS:
        raise ValueError(f"method {cls.name!r} registered twice")
    METHODS[cls.name] = cls
    return cls


def get_method(name: str) -> type:
    if name not in METHODS:
        raise ConfigError(f"unknown method {name!r}; expected one of {sorted(METHODS)}")
    return METHODS[name]


for _m in pkgutil.iter_modules(__path__):
    if _m.name != "base":
        importlib.import_module(f"{__name__}.{_m.name}")
