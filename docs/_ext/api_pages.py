"""API reference pages generated from ``__all__``: one page per public package.

Starting at :mod:`gnn_transformer`, every module named in a package's ``__all__`` is a public
package with its own page.  Each public object is documented once, at the first (shallowest)
package that exports it; autodoc adds its defining module as ``:canonical:``, so references by
either name resolve.  The other packages that export it link to that entry.  A new module needs
no edit here: its names appear once a package's ``__all__`` lists them.
"""
from __future__ import annotations

import importlib
import inspect
import types
from pathlib import Path

ROOT_PACKAGE = "gnn_transformer"
# Public, but not API: the command line has its own reference page, generated from its parsers.
NOT_API = {"gnn_transformer.cli"}


def public_packages() -> list[types.ModuleType]:
    """Every public package, breadth first from the root (shallow before deep)."""
    order, queue = [], [ROOT_PACKAGE]
    while queue:
        name = queue.pop(0)
        if name in NOT_API or any(m.__name__ == name for m in order):
            continue
        module = importlib.import_module(name)
        order.append(module)
        for member in getattr(module, "__all__", []):
            value = getattr(module, member)
            if isinstance(value, types.ModuleType):
                queue.append(value.__name__)
    return order


def public_names(module: types.ModuleType) -> list[str]:
    """The names of ``module.__all__`` that are not modules."""
    return [n for n in getattr(module, "__all__", []) if not isinstance(getattr(module, n), types.ModuleType)]


def canonical_entries() -> dict[int, str]:
    """id(object) -> the dotted name under which it is documented."""
    entries: dict[int, str] = {}
    for module in public_packages():
        for name in public_names(module):
            value = getattr(module, name)
            _objects[id(value)] = value
            entries.setdefault(id(value), f"{module.__name__}.{name}")
    return entries


def implementation_modules() -> list[str]:
    """Every module of the package that is not a public package and not private (``_name``)."""
    import pkgutil

    public = {m.__name__ for m in public_packages()}
    root = importlib.import_module(ROOT_PACKAGE)
    names = []
    for info in pkgutil.walk_packages(root.__path__, ROOT_PACKAGE + "."):
        parts = info.name.split(".")
        if any(part.startswith("_") for part in parts) or info.name in public:
            continue
        if any(info.name == n or info.name.startswith(n + ".") for n in NOT_API):
            continue
        names.append(info.name)
    return names


def module_page(name: str, entries: dict[int, str], collides: bool = False) -> str:
    """A module's docstring, the public objects it defines that a package exports (linked to
    where they are documented), and the others it defines (documented here)."""
    module = importlib.import_module(name)
    lines = [f"``{name}``", "=" * (len(name) + 4), "", f".. automodule:: {name}", "   :no-members:"]
    if collides:  # a package exports a function of the same dotted name: that one owns the name
        lines += ["   :no-index:"]
    lines += [""]
    exported = sorted(t for i, t in entries.items() if getattr(_objects[i], "__module__", None) == name)
    own = []
    for member, value in vars(module).items():
        if member.startswith("_") or id(value) in entries or getattr(value, "__module__", None) != name:
            continue
        if inspect.isclass(value) or inspect.isfunction(value):
            own.append(member)
    own += [c for c in _constants(module) if id(getattr(module, c)) not in entries]
    if exported:
        lines += ["Exported", "--------", "", ".. list-table::", ""]
        lines += [f"   * - :py:obj:`{t.rsplit('.', 1)[1]} <{t}>`" for t in exported]
        lines += [""]
    if own and not collides:
        lines += [".. currentmodule:: " + name, "", "Internal", "--------", "",
                  "Defined here and used inside the library; not part of a package's ``__all__``.", ""]
        for member in own:
            value = getattr(module, member)
            directive = _directive(value)
            lines += [f".. {directive}:: {member}"]
            if directive in ("autoclass", "autoexception"):
                lines += ["   :members:"]
            elif directive == "autodata":
                if _has_doc_comment(module, member):
                    lines += ["   :no-value:"]
                else:
                    lines[-1] = f".. py:data:: {member}"
                    lines += ["   :no-index-entry:", "", f"   A ``{type(value).__name__}`` (see the module's documentation above)."]
            lines += [""]
    return "\n".join(lines) + "\n"


def _constants(module: types.ModuleType) -> list[str]:
    """UPPER_CASE names assigned at the top level of the module's own source."""
    import ast

    try:
        tree = ast.parse(inspect.getsource(module))
    except (OSError, TypeError):
        return []
    names = []
    for node in tree.body:
        targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(node, ast.AnnAssign) else []
        for target in targets:
            if isinstance(target, ast.Name) and target.id.isupper() and not target.id.startswith("_"):
                names.append(target.id)
    return list(dict.fromkeys(names))


_objects: dict[int, object] = {}


def _has_doc_comment(module: types.ModuleType, name: str) -> bool:
    """Whether ``name`` has a ``#:`` comment or a docstring after its assignment in its module."""
    from sphinx.pycode import ModuleAnalyzer

    for source in dict.fromkeys([module.__name__, *[m for m in _defining_modules(module, name)]]):
        try:
            docs = ModuleAnalyzer.for_module(source).find_attr_docs()
        except Exception:  # noqa: BLE001 - a module without source: no comment to find
            continue
        if ("", name) in docs:
            return True
    return False


def _defining_modules(module: types.ModuleType, name: str) -> list[str]:
    """Modules under ``module`` (a package) whose globals hold the same object as ``name``."""
    import sys

    value = getattr(module, name)
    return [m.__name__ for m in list(sys.modules.values())
            if getattr(m, "__name__", "").startswith(module.__name__ + ".") and getattr(m, name, None) is value]


def _directive(value) -> str:
    if inspect.isclass(value):
        return "autoexception" if issubclass(value, BaseException) else "autoclass"
    if inspect.isfunction(value) or inspect.isbuiltin(value) or inspect.ismethod(value):
        return "autofunction"
    if callable(value) and not isinstance(value, (dict, list, tuple)):
        return "autofunction"
    return "autodata"


def page(module: types.ModuleType, entries: dict[int, str]) -> str:
    name = module.__name__
    lines = [f"``{name}``", "=" * (len(name) + 4), "", f".. automodule:: {name}", "   :no-members:", ""]
    subpackages = [getattr(module, n).__name__ for n in getattr(module, "__all__", [])
                   if isinstance(getattr(module, n), types.ModuleType) and getattr(module, n).__name__ not in NOT_API]
    if subpackages:
        lines += ["Packages", "--------", "", ".. list-table::", ""]
        for sub in dict.fromkeys(subpackages):
            lines += [f"   * - :mod:`{sub}`", ""]
    names = public_names(module)
    if names:
        lines += [".. currentmodule:: " + name, "", "Summary", "-------", "", ".. list-table::", ""]
        for n in names:
            target = entries[id(getattr(module, n))]
            lines += [f"   * - :py:obj:`{n} <{target}>`", ""]
        own = [n for n in names if entries[id(getattr(module, n))] == f"{name}.{n}"]
        if own:
            lines += ["Reference", "---------", ""]
            for n in own:
                value = getattr(module, n)
                directive = _directive(value)
                lines += [f".. {directive}:: {n}"]
                if directive in ("autoclass", "autoexception"):
                    lines += ["   :members:"]
                    if issubclass(value, BaseException):
                        lines += ["   :show-inheritance:"]
                if directive == "autodata":
                    if _has_doc_comment(module, n):
                        lines += ["   :no-value:"]
                    else:  # no comment of its own: say what it is, not what its type is
                        lines[-1] = f".. py:data:: {n}"
                        lines += ["   :no-index-entry:", "", f"   A ``{type(value).__name__}`` (see the module's documentation above)."]
                lines += [""]
    return "\n".join(lines) + "\n"


def generated_pages() -> dict[str, str]:
    """File name -> text of every generated page (the packages', the modules', the index)."""
    entries = canonical_entries()
    packages = public_packages()
    wanted = {}
    for module in packages:
        wanted[f"{module.__name__}.rst"] = page(module, entries)
    modules = implementation_modules()
    documented = set(entries.values())
    for name in modules:
        wanted[f"{name}.rst"] = module_page(name, entries, collides=name in documented)
    index = ["API reference", "=============", "",
             "Generated from the docstrings of every name in ``__all__`` of each public package.",
             "Each object is documented once, under the shallowest package that exports it.", "",
             ".. toctree::", "   :maxdepth: 1", ""]
    index += [f"   {module.__name__}" for module in packages]
    index += ["", "Modules", "-------", "",
              "The modules that hold the code: each one's docstring, and the names it defines.", "",
              ".. toctree::", "   :maxdepth: 1", ""]
    index += [f"   {name}" for name in modules]
    wanted["index.rst"] = "\n".join(index) + "\n"
    return wanted


def write_pages(app) -> None:
    """Write the pages into ``api/generated``; modules of ``autodoc_mock_imports`` (Triton, when it
    is not installed) are mocked while the modules are imported, as autodoc mocks them."""
    from sphinx.ext.autodoc.mock import mock

    out = Path(app.srcdir) / "api" / "generated"
    out.mkdir(parents=True, exist_ok=True)
    with mock(app.config.autodoc_mock_imports):
        wanted = generated_pages()
    for stale in out.glob("*.rst"):
        if stale.name not in wanted:
            stale.unlink()
    for filename, text in wanted.items():
        path = out / filename
        if not path.is_file() or path.read_text() != text:  # unchanged files keep their mtime
            path.write_text(text)


def setup(app):
    app.connect("builder-inited", write_pages)
    return {"parallel_read_safe": True}
