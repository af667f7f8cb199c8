"""Docstring conventions of this project that napoleon does not read as intended, and
cross-references by short name.

* An ``Args:`` entry may name several arguments over more than one line
  (``d_model, nhead, ...,`` / ``dropout, activation: as torch``); napoleon would take each line
  for an argument.  The names are joined onto one line before napoleon reads the section.
* ``Args: as :class:`torch.nn.X`, plus:`` followed by an indented list: the text stays a
  sentence and the list becomes the ``Args:`` section.
* A reference by bare name (``:class:`GraphSequenceModel``` in another module's docstring)
  resolves when exactly one documented object has that name; an ambiguous or unknown name
  stays a warning, as Sphinx's nitpicky mode wants.
"""
from __future__ import annotations

import re

SECTIONS = ("Args", "Arguments", "Parameters", "Keyword Args", "Keyword Arguments", "Attributes")
_HEADER_WITH_TEXT = re.compile(r"^(\s*)(Args|Arguments|Parameters):\s+(\S.*)$")
_HEADER = re.compile(r"^(\s*)(" + "|".join(SECTIONS) + r"):\s*$")


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def normalise(lines: list[str]) -> list[str]:
    """The docstring lines with the two conventions above rewritten for napoleon."""
    out: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        match = _HEADER_WITH_TEXT.match(line)
        following = next((l for l in lines[i + 1:] if l.strip()), "")
        if match and following and _indent(following) > len(match.group(1)):
            out += [match.group(1) + match.group(3), "", match.group(1) + match.group(2) + ":"]
            i += 1
            continue
        header = _HEADER.match(line)
        out.append(line)
        i += 1
        if not header:
            continue
        base = len(header.group(1))
        entry = None  # the indent of the section's entries
        while i < len(lines) and (not lines[i].strip() or _indent(lines[i]) > base):
            current = lines[i]
            if current.strip() and entry is None:
                entry = _indent(current)
            # "a, b, c," at the entry indent with no colon: the names go on on the next line
            while (current.strip() and _indent(current) == entry and current.rstrip().endswith(",")
                   and ":" not in current and i + 1 < len(lines)):
                i += 1
                current = current.rstrip() + " " + lines[i].strip()
            out.append(current)
            i += 1
    return out


def process_docstring(app, what, name, obj, options, lines):
    lines[:] = normalise(lines)


def resolve_short_name(app, env, node, contnode):
    """A py reference by a name that exactly one documented object ends with."""
    if node.get("refdomain") != "py":
        return None
    target = node.get("reftarget", "")
    if not re.fullmatch(r"[A-Za-z_][\w.]*", target):
        return None
    domain = env.get_domain("py")
    short = target.split(".")[-1]
    suffix = "." + target
    matches = {full for full, obj in domain.objects.items() if not obj.aliased and
               (full.endswith(suffix) or full == target)}
    if not matches:  # a module path the object is re-exported under: match by the last name
        matches = {full for full, obj in domain.objects.items() if not obj.aliased and full.endswith("." + short)
                   and obj.objtype != "module"} if "." in target else set()
        if len(matches) != 1:
            return None
    if len(matches) != 1:
        return None
    full = matches.pop()
    obj = domain.objects[full]
    from sphinx.util.nodes import make_refnode

    return make_refnode(app.builder, node["refdoc"], obj.docname, obj.node_id, contnode, full)


def setup(app):
    # before napoleon (priority 500) rewrites the sections
    app.connect("autodoc-process-docstring", process_docstring, priority=400)
    app.connect("missing-reference", resolve_short_name)
    return {"parallel_read_safe": True}
