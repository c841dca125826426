"""Lazy re-exports for the subpackages: ``from tdnotebooks.finetuning import finetune`` imports only the module
that defines ``finetune`` (and so torch) when the name is first used, never when the package is imported.

Example (a package's ``__init__.py``)::

    EXPORTS = {"bucketing": ("BucketSampler",), "train": ("finetune",)}
    __all__ = exported_names(EXPORTS)
    __getattr__, __dir__ = lazy_exports(__name__, EXPORTS)
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any

__all__ = ["exported_names", "lazy_exports"]


def exported_names(exports: Mapping[str, Sequence[str]]) -> list[str]:
    """Every re-exported name, in the map's reading order; a name exported by two modules is an error."""
    names = [name for module_names in exports.values() for name in module_names]
    twice = sorted({name for name in names if names.count(name) > 1})
    if twice:
        raise ValueError(f"names re-exported by more than one module: {twice}")
    return names


def lazy_exports(package: str, exports: Mapping[str, Sequence[str]]) -> tuple[Callable[[str], Any],
                                                                                 Callable[[], list[str]]]:
    """A module ``__getattr__`` (PEP 562) and ``__dir__`` for ``package`` that re-export ``exports``
    (``{submodule: names}``); each name is imported from its submodule on first use and then cached."""
    home = {name: module for module, names in exports.items() for name in names}

    def __getattr__(name: str) -> Any:
        if name not in home:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f"{package}.{home[name]}"), name)
        setattr(sys.modules[package], name, value)
        return value

    def __dir__() -> list[str]:
        return sorted(set(vars(sys.modules[package])) | set(home))

    return __getattr__, __dir__
