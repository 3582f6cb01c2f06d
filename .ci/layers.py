#!/usr/bin/env python3
"""Module layering check: no dependency cycles between a crate's modules.

For each crate source dir given, every `crate::a::b` (and `super::...`) path in a module's
code (not its comments, not its `#[cfg(test)] mod tests`) is an arrow from that module to
the module it names. Modules are compared at each depth 1..3 (`control`, `control/grid`,
`grid/replica/roles`): a cycle at any depth fails the check, printed with the files that
make each arrow. A module and its own submodules are one unit (Rust's `super::`), so arrows
between a parent and its children do not count.

    .ci/layers.py host/src wire/src      # exit 1 and the cycles when there are any
    .ci/layers.py --order host/src       # also print the top-level modules, lowest first
"""

import collections
import os
import re
import sys

MAX_DEPTH = 3


def module_of(root, path):
    parts = os.path.relpath(path, root)[:-3].split(os.sep)
    if parts[-1] == "mod":
        parts = parts[:-1]
    return parts


def exists(root, parts):
    base = os.path.join(root, *parts)
    return os.path.exists(base + ".rs") or os.path.exists(os.path.join(base, "mod.rs"))


def resolve(root, parts):
    """The longest prefix of a path (lowercase segments only) that is a module file."""
    mods = []
    for p in parts:
        if not p[:1].islower():
            break
        mods.append(p)
    while mods and not exists(root, mods):
        mods.pop()
    return mods


def code_of(text):
    cut = text.find("#[cfg(test)]\nmod tests")
    if cut >= 0:
        text = text[:cut]
    return re.sub(r"//[^\n]*", "", text)


def arrows(root):
    """(from module, to module, file) for every path into another module."""
    out = []
    for d, _, files in os.walk(root):
        for f in files:
            if not f.endswith(".rs") or f in ("main.rs", "lib.rs") or f == "tests.rs":
                continue
            path = os.path.join(d, f)
            me = module_of(root, path)
            code = code_of(open(path, encoding="utf-8").read())
            parent = me[:-1]
            for m in re.finditer(r"\b(crate|super)::((?:\w+::)*\w+)", code):
                segs = m.group(2).split("::")
                base = [] if m.group(1) == "crate" else parent
                while segs and segs[0] == "super":
                    base, segs = base[:-1], segs[1:]
                target = resolve(root, base + segs)
                if target:
                    out.append((me, target, os.path.relpath(path, root)))
    return out


def graph(edges, depth):
    g = collections.defaultdict(lambda: collections.defaultdict(set))
    for src, dst, file in edges:
        a, b = "/".join(src[:depth]), "/".join(dst[:depth])
        if a == b or a.startswith(b + "/") or b.startswith(a + "/"):
            continue
        g[a][b].add(file)
    return g


def cycles(g):
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, found, n = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = n[0]
        n[0] += 1
        stack.append(v)
        on.add(v)
        for w in g.get(v, {}):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    sys.setrecursionlimit(10000)
    for v in sorted(set(g) | {w for ws in g.values() for w in ws}):
        if v not in index:
            visit(v)
    return found


def order(g):
    """Top-level modules, each after everything it depends on."""
    done, out = set(), []

    def visit(v):
        if v in done:
            return
        done.add(v)
        for w in sorted(g.get(v, {})):
            visit(w)
        out.append(v)

    for v in sorted(set(g) | {w for ws in g.values() for w in ws}):
        visit(v)
    return out


def main(argv):
    show_order = "--order" in argv
    roots = [a for a in argv if not a.startswith("--")]
    bad = False
    for root in roots:
        edges = arrows(root)
        for depth in range(1, MAX_DEPTH + 1):
            g = graph(edges, depth)
            for comp in cycles(g):
                bad = True
                print(f"{root}: modules depend on each other in a cycle: {' '.join(comp)}")
                for a in comp:
                    for b in comp:
                        if b in g.get(a, {}):
                            print(f"    {a} -> {b}  ({', '.join(sorted(g[a][b]))})")
            if bad:
                break
        if show_order and not bad:
            print(f"{root}: lowest first: {' '.join(order(graph(edges, 1)))}")
    if bad:
        print("break the cycle: move the shared piece into the lower module, or pass it in")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
