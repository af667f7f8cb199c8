"""Old import paths: the modules of the flat layout, served by the modules that now hold their code.

``import gnn_transformer.attention`` (or ``from gnn_transformer.prepared import PreparedGraph``)
keeps working: a meta-path finder imports the new module and registers it under the old name
too, so both names are the same module object (one class identity, pickles keep loading).
"""
from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys

# old module (relative to the package) -> the module that holds its code now
OLD_PATHS = {
    "attention": "core.attention",
    "layers": "core.layers",
    "transformer": "core.stacks",
    "model": "core.model",
    "embedding": "core.embedding",
    "norms": "core.norms",
    "dense": "core.dense",
    "functional": "core.functional",
    "prepared": "backends.prepared",
    "chunked": "backends.chunked",
    "kernels": "backends.fused",
    "masks": "graphs.masks",
    "batching": "graphs.batching",
    "patterns": "graphs.patterns",
    "biases": "variants.biases",
    "linear_attention": "variants.linear_attention",
    "switch": "variants.switch",
    "recording": "analysis.recording",
    "viz": "analysis.viz",
    "equivalence": "testing.equivalence",
    "demo": "tasks.demo",
}


class _AliasLoader(importlib.abc.Loader):
    def __init__(self, target: str) -> None:
        self.target = target

    def create_module(self, spec):
        module = importlib.import_module(self.target)
        self.original = (module.__spec__, module.__loader__)
        return module

    def exec_module(self, module) -> None:
        """The module already ran under its new name; keep its own spec and loader."""
        module.__spec__, module.__loader__ = self.original


class _AliasFinder(importlib.abc.MetaPathFinder):
    def __init__(self, package: str) -> None:
        self.package = package

    def find_spec(self, fullname: str, path=None, target=None):
        prefix = self.package + "."
        if not fullname.startswith(prefix) or fullname[len(prefix):] not in OLD_PATHS:
            return None
        new = prefix + OLD_PATHS[fullname[len(prefix):]]
        return importlib.util.spec_from_loader(fullname, _AliasLoader(new))


def install(package: str) -> None:
    """Serve the old paths of ``package`` (idempotent)."""
    if not any(isinstance(f, _AliasFinder) and f.package == package for f in sys.meta_path):
        sys.meta_path.append(_AliasFinder(package))
