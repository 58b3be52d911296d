#!/usr/bin/env python3
"""layers.py: checks that dependencies in the C tree only run downward.

The layers, top to bottom (docs/architecture.md "Layers"); a folder may include and call
folders of a lower rank only, and files of its own folder without a cycle:

    5  edge           the process: main, server (threads, listeners, drain), router, front, tls
    4  edge/api       plain request/response endpoints (publish, batch, ops)
    4  edge/ws        the WebSocket transport
    4  fallback       the fallback transports (sse, poll)
    3  edge/core      per-thread state and stats, stream registry, config, output queue,
                      connection limits, HTTP helpers, the publish rule
    2  edge/wire      wire formats (WebSocket frames, permessage-deflate, SSE events, poll bodies)
    2  edge/identity  JWT verification, key sets, channel permissions
    1  edge/util      log, query-string parsing, bounds
    0  pubsub         the subscription layer

Folders of the same rank are siblings and may not depend on each other. A lower layer calls
up only through a function pointer it is given (pe_stream_t.drain, for instance).

Two graphs are checked, each between modules (foo.c + foo.h) and between folders:
  (a) the include graph of every .c/.h under the folders above (`#include "..."` only);
  (b) the call graph between object files, from `nm` of the objects the build produced
      (an undefined symbol of one object defined by another is an edge).
A cycle in either graph, an upward or sideways edge, or a file in a folder not declared
here fails the check; the offending cycle or edge is printed.

Usage: layers.py SOURCE_ROOT [BUILD_ROOT]   (without BUILD_ROOT only (a) runs)
"""
import os
import re
import subprocess
import sys

LAYERS = {
    'edge': 5,
    'edge/api': 4,
    'edge/ws': 4,
    'fallback': 4,
    'edge/core': 3,
    'edge/wire': 2,
    'edge/identity': 2,
    'edge/util': 1,
    'pubsub': 0,
}
TOPS = ('edge', 'fallback', 'pubsub')  # the trees scanned
# Headers generated at build time (meson custom_target), in the build tree, not the source tree:
# an include of one is an edge to nothing (it holds data only).
GENERATED = {'pubsub/redis_lib_lua.h'}
INCLUDE_RE = re.compile(r'^\s*#\s*include\s+"([^"]+)"', re.M)
DEFINED = set('TDBRVWCGSui')


def folder_of(module):
    return os.path.dirname(module)


def find_cycle(graph):
    """Returns one cycle (a list of nodes, first == last) or None. Iterative DFS, three colours."""
    colour = {}
    for start in sorted(graph):
        if colour.get(start):
            continue
        stack = [(start, iter(sorted(graph.get(start, ()))))]
        path = [start]
        colour[start] = 1
        while stack:
            node, it = stack[-1]
            nxt = next(it, None)
            if nxt is None:
                colour[node] = 2
                stack.pop()
                path.pop()
                continue
            c = colour.get(nxt)
            if c == 1:
                return path[path.index(nxt):] + [nxt]
            if c is None:
                colour[nxt] = 1
                path.append(nxt)
                stack.append((nxt, iter(sorted(graph.get(nxt, ())))))
    return None


def check_graph(kind, edges, why):
    """edges: {(from_module, to_module)}; why: {(from, to): example}. Returns the failures."""
    failures = []
    mod_graph, dir_graph, dir_why = {}, {}, {}
    for a, b in sorted(edges):
        if a == b:
            continue
        mod_graph.setdefault(a, set()).add(b)
        fa, fb = folder_of(a), folder_of(b)
        if fa != fb:
            dir_graph.setdefault(fa, set()).add(fb)
            dir_why.setdefault((fa, fb), why[(a, b)])
            if LAYERS[fa] <= LAYERS[fb]:
                failures.append('%s: %s (layer %d) -> %s (layer %d) runs %s: %s' %
                                (kind, fa, LAYERS[fa], fb, LAYERS[fb],
                                 'upward' if LAYERS[fa] < LAYERS[fb] else 'sideways', why[(a, b)]))
    cycle = find_cycle(mod_graph)
    if cycle:
        failures.append('%s: cycle between modules: %s\n    %s' %
                        (kind, ' -> '.join(cycle),
                         '\n    '.join(why[(cycle[i], cycle[i + 1])] for i in range(len(cycle) - 1))))
    cycle = find_cycle(dir_graph)
    if cycle:
        failures.append('%s: cycle between folders: %s\n    %s' %
                        (kind, ' -> '.join(cycle),
                         '\n    '.join(dir_why[(cycle[i], cycle[i + 1])] for i in range(len(cycle) - 1))))
    return failures


def source_files(root):
    out = []
    for top in TOPS:
        for d, _, files in os.walk(os.path.join(root, top)):
            for f in files:
                if f.endswith(('.c', '.h')):
                    out.append(os.path.relpath(os.path.join(d, f), root))
    return sorted(out)


def include_edges(root, failures):
    edges, why = set(), {}
    for path in source_files(root):
        module = os.path.splitext(path)[0]
        if folder_of(module) not in LAYERS:
            failures.append('folder %s (of %s) is not a declared layer: add it to tests/layers.py' %
                            (folder_of(module), path))
            continue
        with open(os.path.join(root, path), encoding='utf-8', errors='replace') as f:
            text = f.read()
        for name in INCLUDE_RE.findall(text):
            # Resolved as the compiler does for quotes: the file's own folder, then the root.
            target = None
            for base in (os.path.dirname(path), ''):
                cand = os.path.normpath(os.path.join(base, name))
                if os.path.isfile(os.path.join(root, cand)):
                    target = cand
                    break
            if target is None and os.path.normpath(os.path.join(os.path.dirname(path), name)) in GENERATED:
                continue
            if target is None:
                failures.append('%s includes "%s", which is not in the tree' % (path, name))
                continue
            tmod = os.path.splitext(target)[0]
            if folder_of(tmod) not in LAYERS:
                continue
            edges.add((module, tmod))
            why.setdefault((module, tmod), '%s includes "%s"' % (path, name))
    return edges, why


def nm_inputs(build):
    """The static library of every checked folder (build/F/lib*.a: its current members only, so
    objects of files since moved away are not read) and the objects of the executables built in
    a checked folder (build/F/NAME.p/*.c.o: edge/main.c)."""
    out = []
    for d, _, files in os.walk(build):
        rel = os.path.relpath(d, build)
        if rel in LAYERS:
            out += [os.path.join(d, f) for f in sorted(files) if f.endswith('.a')]
        elif d.endswith('.p') and not d.endswith('.a.p') and os.path.relpath(os.path.dirname(d), build) in LAYERS:
            out += [os.path.join(d, f) for f in sorted(files) if f.endswith('.c.o')]
    return sorted(out)


def call_edges(build, failures):
    defs, undefs = {}, {}
    for path in nm_inputs(build):
        folder = os.path.relpath(os.path.dirname(path), build)
        if folder.endswith('.p'):
            folder = os.path.dirname(folder)
        res = subprocess.run(['nm', '-P', '-A', path], capture_output=True, text=True)
        if res.returncode != 0:
            failures.append('nm %s: %s' % (path, res.stderr.strip()))
            continue
        for line in res.stdout.splitlines():
            where, _, rest = line.partition(': ')
            parts = rest.split()
            if len(parts) < 2:
                continue
            member = where[where.index('[') + 1:-1] if where.endswith(']') else where
            name = os.path.basename(member)
            if not name.endswith('.c.o'):
                continue
            module = folder + '/' + name[:-len('.c.o')]
            sym, t = parts[0], parts[1]
            if t == 'U':
                undefs.setdefault(module, set()).add(sym)
            elif t in DEFINED:
                defs.setdefault(sym, module)
    edges, why = set(), {}
    for module, syms in undefs.items():
        for sym in sorted(syms):
            target = defs.get(sym)
            if target is None or target == module:
                continue
            edges.add((module, target))
            why.setdefault((module, target), '%s uses %s (%s)' % (module, sym, target))
    return edges, why, len(defs)


def main():
    if len(sys.argv) < 2:
        print(__doc__)
        return 2
    root = sys.argv[1]
    failures = []
    edges, why = include_edges(root, failures)
    failures += check_graph('includes', edges, why)
    print('# includes: %d edges between modules' % len(edges))
    if len(sys.argv) > 2:
        cedges, cwhy, ndefs = call_edges(sys.argv[2], failures)
        if ndefs == 0:
            failures.append('calls: no objects found under %s (built?)' % sys.argv[2])
        failures += check_graph('calls', cedges, cwhy)
        print('# calls: %d edges between modules' % len(cedges))
    for f in failures:
        print('FAIL ' + f)
    if not failures:
        print('layers: ok')
    return 1 if failures else 0


if __name__ == '__main__':
    sys.exit(main())
