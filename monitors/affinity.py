"""Name affinity: which of the valid attributes the code around a dereference names already.

In `enc = self.` or `response_class=app.`, the variable or keyword being assigned usually
says which attribute comes next (`encoding`, `response_class`). A small model ranks the
valid names by their local likelihood and often misses that link. The name monitor uses
this module to add a logit bonus (the `nameAffinity` setting, times the relation's
strength) to the names related to the assignment target.

Relations, strongest first (case and leading underscores ignored):
- equal: `root_path = self.` -> `root_path` (or `last_child` -> `lastChild`);
- close: the target starts the name (`enc` -> `encoding`), is its acronym (`scc` ->
  `strongly_connected_components`; both need 3+ characters: `sp` says too little), or one
  ends with the other's words (`potential_cut_size` -> `cut_size`, `timeout` ->
  `connection_timeout`).

Not when the value transforms the target (`url = url.replace(...)`), nor for one element of
a tuple target (`k, v = parser.`).
"""

from __future__ import annotations

import re

EQUAL = 1.0
"""Strength of the relation of a name equal to the assignment target."""
CLOSE = 0.8
"""Strength of a close relation (prefix, acronym, word suffix): weaker evidence."""

# The target of an assignment (`x = `, `x: T = `, `self.x = `, `x += `) or a keyword argument
# (`key=`) whose value is a dotted name ending at the dereference: `x = a.b.`.
_TARGET = re.compile(r"(?<![\w.])(?:[A-Za-z_]\w*\.)*([A-Za-z_]\w*)[ \t]*(?::[^=\n]*)?[-+*/|&%@^]?="
                     r"[ \t]*(?:await[ \t]+)?((?:[A-Za-z_]\w*\.)+)\Z")
_CAMEL = re.compile(r"([a-z0-9])([A-Z])")


def assignment_target(before: str) -> str | None:
    """The name being assigned to by the dotted expression that ends `before` (at its `.`)."""
    line = before[before.rfind("\n") + 1 :][-200:]
    m = _TARGET.search(line)
    if m is None:
        return None
    head = line[: m.start()]
    depth = sum(head.count(c) for c in "([{") - sum(head.count(c) for c in ")]}")
    if depth <= 0 and head.rstrip().endswith(","):
        return None  # `a, b = obj.`: which element the value goes to is not known here
    if m.group(1) in m.group(2).split("."):
        return None  # `url = url.`: a method that transforms the value, not the attribute named
    return m.group(1)


def words(name: str) -> list[str]:
    """Lower-case words of a snake_case or camelCase name."""
    return [w for w in _CAMEL.sub(r"\1_\2", name).lower().split("_") if w]


def affinity(name: str, target: str) -> float:
    """How strongly `target = obj.` points to `name`: EQUAL, CLOSE or 0 (unrelated)."""
    n, t = name.lstrip("_").lower(), target.lstrip("_").lower()
    if not n or not t:
        return 0.0
    nw, tw = words(name), words(target)
    if n == t or nw == tw:
        return EQUAL
    if len(t) >= 3 and n.startswith(t):
        return CLOSE
    if len(t) >= 3 and "".join(w[0] for w in nw) == t:
        return CLOSE
    if len(tw) > len(nw) and tw[-len(nw) :] == nw:
        return CLOSE
    if len(nw) > len(tw) and nw[-len(tw) :] == tw and len(t) >= 3:
        return CLOSE
    return 0.0


def preferred(names: frozenset[str], before: str) -> dict[float, frozenset[str]]:
    """Names related to the assignment target before the dot, grouped by strength."""
    target = assignment_target(before)
    if target is None:
        return {}
    groups: dict[float, set[str]] = {}
    for name in names:
        if strength := affinity(name, target):
            groups.setdefault(strength, set()).add(name)
    return {k: frozenset(g) for k, g in groups.items()}
