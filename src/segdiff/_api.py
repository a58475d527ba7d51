"""Lazy public APIs for the stage subpackages.

Each subpackage's ``__init__`` names its public API, module by module, as MONAI's do; the names are
imported on first use (PEP 562), so that ``import segdiff.core.errors`` or the workflow's parse does
not load torch through a sibling module.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any

__all__ = ["lazy_api"]


def lazy_api(package: str, api: Mapping[str, Sequence[str]]) -> tuple[Callable[[str], Any], Callable[[], list[str]], list[str]]:
    """The ``__getattr__``, ``__dir__`` and ``__all__`` of a package whose public names live in its modules.

    Args:
        package: the package's ``__name__``.
        api: module (relative to ``package``) -> the public names it defines.

    Returns:
        ``(__getattr__, __dir__, __all__)`` for the package's namespace.

    Raises:
        ValueError: a name is listed for two modules.
    """
    home: dict[str, str] = {}
    for module, names in api.items():
        for name in names:
            if name in home:
                raise ValueError(f"{package}: {name} is listed for both {home[name]} and {module}")
            home[name] = module

    def __getattr__(name: str) -> Any:
        if name not in home:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f"{package}.{home[name]}"), name)
        setattr(importlib.import_module(package), name, value)  # cached: later lookups skip __getattr__
        return value

    def __dir__() -> list[str]:
        return sorted(set(vars(importlib.import_module(package))) | set(home))

    return __getattr__, __dir__, list(home)
