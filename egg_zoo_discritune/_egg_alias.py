"""Makes ``egg.zoo.discritune`` an alias of ``egg_zoo_discritune``, so ``python -m egg.zoo.discritune.train``
works whether EGG is absent, installed into site-packages, or installed editable from a clone.

EGG's ``egg`` and ``egg.zoo`` are regular packages, so another distribution cannot add a game to them
when EGG lives elsewhere on the path (an editable clone). This meta-path finder, installed at
interpreter start by ``egg_zoo_discritune.pth``, serves ``egg.zoo.discritune[.*]`` as the very modules
of ``egg_zoo_discritune`` and, only when no EGG is installed, empty ``egg`` / ``egg.zoo`` packages.
It runs after every other finder, so a real EGG always wins.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys

ALIAS = "egg.zoo.discritune"
TARGET = "egg_zoo_discritune"
_PARENTS = ("egg", "egg.zoo")


class _AliasLoader(importlib.abc.Loader):
    def __init__(self, target: str):
        self.target = target

    def create_module(self, spec):
        module = importlib.import_module(self.target)
        self._spec = module.__spec__
        return module

    def exec_module(self, module) -> None:
        module.__spec__ = self._spec  # the canonical module keeps its own spec

    def get_code(self, fullname: str):
        # runpy (``python -m egg.zoo.discritune.train``) runs the target's code as __main__.
        return importlib.util.find_spec(self.target).loader.get_code(self.target)


class EggZooAliasFinder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path=None, target=None):
        if fullname in _PARENTS:
            return self._parent_spec(fullname, path)
        if fullname != ALIAS and not fullname.startswith(ALIAS + "."):
            return None
        real = TARGET + fullname[len(ALIAS):]
        real_spec = importlib.util.find_spec(real)
        if real_spec is None:
            return None
        return importlib.machinery.ModuleSpec(
            fullname, _AliasLoader(real), origin=real_spec.origin,
            is_package=real_spec.submodule_search_locations is not None,
        )

    def _parent_spec(self, fullname, path):
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, None)
            if spec is not None:
                return spec
        return importlib.machinery.ModuleSpec(fullname, None, is_package=True)


def install() -> None:
    if not any(isinstance(f, EggZooAliasFinder) for f in sys.meta_path):
        sys.meta_path.append(EggZooAliasFinder())
