"""Find the tools a Python module defines (for ``argentic tools --module``)."""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import sys
from pathlib import Path
from types import ModuleType

from argentic.tools.base import BaseTool


def import_module(spec: str) -> ModuleType:
    """Import ``spec``: a dotted module name (``examples.tools``) or a path to a ``.py`` file."""
    path = Path(spec)
    if spec.endswith(".py") or path.exists():
        if not path.is_file():
            raise FileNotFoundError(f"no Python file at {spec}")
        name = f"argentic_tools_{path.stem}"
        module_spec = importlib.util.spec_from_file_location(name, path)
        if module_spec is None or module_spec.loader is None:
            raise ImportError(f"cannot import {spec}")
        module = importlib.util.module_from_spec(module_spec)
        sys.modules[name] = module
        module_spec.loader.exec_module(module)
        return module
    if str(Path.cwd()) not in sys.path:
        sys.path.insert(0, str(Path.cwd()))  # so "examples.tools" works from the project folder
    return importlib.import_module(spec)


def tools_in(module: ModuleType) -> list[BaseTool]:
    """The module's tools: ``@tool`` functions and ``BaseTool`` instances, plus ``BaseTool``
    subclasses defined there that take no constructor arguments. ``__tools__`` overrides."""
    explicit = getattr(module, "__tools__", None)
    if explicit is not None:
        return [t() if isinstance(t, type) else t for t in explicit]
    found: list[BaseTool] = []
    for value in vars(module).values():
        if isinstance(value, BaseTool):
            found.append(value)
        elif (
            isinstance(value, type)
            and issubclass(value, BaseTool)
            and value.__module__ == module.__name__
            and not inspect.isabstract(value)
        ):
            found.append(value())
    return found
