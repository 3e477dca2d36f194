"""Target backends (installed as ``edgeq.targets``) and the registry through which the rest of edgeq reaches them.

Each sub-package is one target (targets/target.py defines what a target is) and registers its ``Target`` in its
``target`` module; the registry imports those modules on first use, so adding a target is adding its package.
Commands never import a concrete target: they ask the registry by name (``get``) or by artifact (``claiming``).
"""

from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path

from edgeq.errors import ModelError, RecipeError
from edgeq.targets.target import Target

_REGISTRY: dict[str, Target] = {}
_LOADED = False


def register(target: Target) -> Target:
    """Add TARGET to the registry (its ``target`` module calls this at import)."""
    _REGISTRY[target.name] = target
    return target


def _load() -> None:
    global _LOADED
    if not _LOADED:
        _LOADED = True
        for package in pkgutil.iter_modules(__path__):
            if package.ispkg:
                importlib.import_module(f"{__name__}.{package.name}.target")


def registered() -> list[Target]:
    """Every target, in the order they apply to one artifact (a target registers after those it builds on)."""
    _load()
    return list(_REGISTRY.values())


def names() -> list[str]:
    return [target.name for target in registered()]


def get(name: str) -> Target:
    """The target called NAME; RecipeError names the others."""
    _load()
    if name not in _REGISTRY:
        raise RecipeError(f"unknown target {name!r}; choose from {', '.join(names())}")
    return _REGISTRY[name]


def claiming(path: str | Path) -> list[Target]:
    """The targets that run the artifact file PATH; ModelError if it is missing or no target reads its kind."""
    path = Path(path)
    targets = [target for target in registered() if target.claims(path)]
    if not targets:
        suffixes = {suffix for target in registered() for suffix in target.suffixes}
        kinds = sorted(s for s in suffixes if not any(s != t and s.endswith(t) for t in suffixes))
        raise ModelError(f"{path}: edgeq reads {', '.join(kinds[:-1])} and {kinds[-1]} artifacts")
    if not path.is_file():
        raise ModelError(f"{path} does not exist" if not path.exists() else f"{path} is not a file")
    targets[0].check_file(path)  # the targets claiming a file read it the same way
    return targets
