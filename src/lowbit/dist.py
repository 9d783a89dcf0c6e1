"""``lowbit.dist``, the former name of :mod:`lowbit.distributed` (renamed as torch names its own:
a package folder called ``dist`` is what packaging tools and ignore rules treat as build output).
Kept importable: ``import lowbit.dist as ld`` and ``from lowbit.dist.hooks import hook_for`` give
the same objects as the new names, and checkpoints that name the old modules still load."""

import importlib
import pkgutil
import sys

from . import distributed as _distributed
from .distributed import *  # noqa: F401,F403
from .distributed import __all__  # noqa: F401

for _info in pkgutil.iter_modules(_distributed.__path__):
    _module = importlib.import_module(f"{_distributed.__name__}.{_info.name}")
    sys.modules[f"{__name__}.{_info.name}"] = _module
    globals()[_info.name] = _module
