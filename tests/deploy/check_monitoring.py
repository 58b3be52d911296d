#!/usr/bin/env python3
"""check_monitoring.py: the alert rules and the Grafana dashboard of deploy/ against the server.

  python3 tests/deploy/check_monitoring.py SOURCE_ROOT PUSHEDGE_BIN

TAP output. Checks: `promtool check rules` and `promtool test rules` on
deploy/prometheus/alerts.yml; the dashboard deploy/grafana/pushedge.json parses, every panel has
a position and queries; and every pushedge_* metric the rules and the dashboard query, with the
label names their selectors match on (and the values of `transport` and `reason`), exists in a
real /metrics scrape of a running pushedge. Without promtool: exit 77 (meson's skip), or a
failure with CI=true.
"""
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request

root, binary = os.path.abspath(sys.argv[1]), os.path.abspath(sys.argv[2])
RULES = os.path.join(root, 'deploy', 'prometheus', 'alerts.yml')
RULE_TESTS = os.path.join(root, 'deploy', 'prometheus', 'alerts.test.yml')
DASHBOARD = os.path.join(root, 'deploy', 'grafana', 'pushedge.json')

n = 0
failed = 0


def ok(cond, what, detail=''):
    global n, failed
    n += 1
    print(('ok' if cond else 'not ok') + f' {n} - {what}')
    if not cond:
        failed += 1
        for line in str(detail).splitlines()[-30:]:
            print(f'# {line}')


promtool = shutil.which('promtool')
if promtool is None:
    if os.environ.get('CI') == 'true':
        print('1..1\nnot ok 1 - CI=true: promtool is not installed (Debian package prometheus; deploy/install-deps.sh --test)')
        sys.exit(1)
    print('1..0 # SKIP promtool is not installed (Debian package prometheus)')
    sys.exit(77)

for args, what in (([promtool, 'check', 'rules', RULES], 'promtool check rules alerts.yml'),
                   ([promtool, 'test', 'rules', RULE_TESTS], 'promtool test rules alerts.test.yml')):
    r = subprocess.run(args, capture_output=True, text=True, timeout=60, cwd=os.path.dirname(RULES))
    ok(r.returncode == 0, what, r.stdout + r.stderr)

# ---- what the rules and the dashboard query ----
exprs = []
with open(RULES) as f:
    for line in f:
        m = re.match(r'\s*expr:\s*(.+?)\s*$', line)
        if m:
            exprs.append(('alerts.yml', m.group(1)))
ok(len(exprs) >= 5, f'alerts.yml has rules ({len(exprs)})')

with open(DASHBOARD) as f:
    dash = json.load(f)
ok(dash.get('title') and isinstance(dash.get('panels'), list), 'the dashboard parses, with a title and panels')
ids = set()
for p in dash['panels']:
    ok('gridPos' in p and p.get('id') not in ids, f'panel {p.get("id")} "{p.get("title")}": a position and a unique id')
    ids.add(p.get('id'))
    if p.get('type') == 'row':
        continue
    targets = p.get('targets') or []
    ok(len(targets) > 0 and all(t.get('expr') for t in targets), f'panel "{p.get("title")}" has queries')
    exprs += [('pushedge.json', t['expr']) for t in targets]
for v in dash.get('templating', {}).get('list', []):
    q = v.get('query')
    exprs.append(('pushedge.json', q['query'] if isinstance(q, dict) else q))

# ---- a real scrape ----
def free_port():
    s = socket.socket()
    s.bind(('127.0.0.1', 0))
    port = s.getsockname()[1]
    s.close()
    return port


port = free_port()
proc = subprocess.Popen([binary, '--listen', f'127.0.0.1:{port}', '--threads', '1'], stdout=subprocess.DEVNULL,
                        stderr=subprocess.PIPE)
text = None
try:
    deadline = time.time() + 15
    while time.time() < deadline and text is None:
        try:
            with urllib.request.urlopen(f'http://127.0.0.1:{port}/metrics', timeout=2) as resp:
                text = resp.read().decode()
        except OSError:
            time.sleep(0.1)
finally:
    proc.terminate()
    try:
        err = proc.communicate(timeout=15)[1].decode(errors='replace')
    except subprocess.TimeoutExpired:
        proc.kill()
        err = proc.communicate()[1].decode(errors='replace')
ok(text is not None, 'GET /metrics of a running pushedge', err)
ok(proc.returncode == 0, f'pushedge exited cleanly ({proc.returncode})', err)

samples = {}  # name -> {label: set(values)}
for line in (text or '').splitlines():
    if not line or line.startswith('#'):
        continue
    m = re.match(r'([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+\S+$', line)
    if m is None:
        ok(False, f'a well-formed sample line: {line}')
        continue
    labels = samples.setdefault(m.group(1), {})
    for lm in re.finditer(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"', m.group(2) or ''):
        labels.setdefault(lm.group(1), set()).add(lm.group(2))

checked = set()
for where, expr in exprs:
    for m in re.finditer(r'\b(pushedge_[a-zA-Z0-9_]+)(\{[^}]*\})?', expr):
        name, sel = m.group(1), m.group(2) or ''
        key = (name, sel)
        if key in checked:
            continue
        checked.add(key)
        if name not in samples:
            ok(False, f'{where}: {name} is exported', f'not in the scrape; exported: {sorted(samples)}')
            continue
        problems = []
        for lm in re.finditer(r'([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*"([^"]*)"', sel):
            label, op, value = lm.groups()
            if label not in samples[name] and label != 'instance' and label != 'job':
                problems.append(f'no label {label}')
            elif label in ('transport', 'reason') and op == '=' and value not in samples[name][label]:
                problems.append(f'{label}="{value}" never exported (have {sorted(samples[name][label])})')
        ok(not problems, f'{where}: {name}{sel} matches the scrape', '; '.join(problems))
ok(len(checked) >= 10, f'metric selectors checked: {len(checked)}')

print(f'1..{n}')
sys.exit(1 if failed else 0)
