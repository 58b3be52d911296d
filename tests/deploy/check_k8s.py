#!/usr/bin/env python3
"""check_k8s.py: the Kubernetes manifests of deploy/k8s/, checked offline.

  python3 tests/deploy/check_k8s.py SOURCE_ROOT PUSHEDGE_BIN

TAP output. Every manifest parses (python3-yaml); the kustomization lists them all; the pieces
fit together (selectors and labels, the Service's target port, the HPA's target and metric and
the Prometheus adapter rule that provides it, a metric the server exports); the Deployment keeps
the rules docs/operations.md gives (readiness on /readyz, liveness on /healthz, a preStop, a
termination grace longer than preStop + --drain-delay + --drain-timeout, resource requests);
every pushedge option in its args is one `pushedge --help` knows; and every field the
"Kubernetes" section of docs/operations.md names in its table is present with that value.
Without python3-yaml: exit 77 (meson's skip), or a failure with CI=true.
"""
import os
import re
import shutil
import subprocess
import sys

root, binary = os.path.abspath(sys.argv[1]), os.path.abspath(sys.argv[2])
K8S = os.path.join(root, 'deploy', 'k8s')
try:
    import yaml
except ImportError:
    if os.environ.get('CI') == 'true':
        print('1..1\nnot ok 1 - CI=true: python3-yaml is not installed (deploy/install-deps.sh --test)')
        sys.exit(1)
    print('1..0 # SKIP python3-yaml is not installed')
    sys.exit(77)

n = 0
failed = 0


def ok(cond, what, detail=''):
    global n, failed
    n += 1
    print(('ok' if cond else 'not ok') + f' {n} - {what}')
    if not cond:
        failed += 1
        for line in str(detail).splitlines()[-20:]:
            print(f'# {line}')
    return cond


docs = {}
for name in sorted(os.listdir(K8S)):
    if name.endswith('.yaml'):
        with open(os.path.join(K8S, name)) as f:
            try:
                docs[name] = [d for d in yaml.safe_load_all(f) if d is not None]
                ok(len(docs[name]) >= 1 and all(isinstance(d, dict) and d.get('kind') for d in docs[name]),
                   f'{name} parses, each document with a kind')
            except yaml.YAMLError as e:
                ok(False, f'{name} parses', e)


def one(kind):
    found = [(f, d) for f, ds in docs.items() for d in ds if d.get('kind') == kind]
    ok(len(found) == 1, f'one {kind}', found)
    return found[0][1] if found else {}


kust = one('Kustomization')
listed = set(kust.get('resources', []))
ok(listed == {f for f in docs if f != 'kustomization.yaml'}, 'kustomization.yaml lists every manifest', sorted(listed))

dep, svc, pdb, hpa = one('Deployment'), one('Service'), one('PodDisruptionBudget'), one('HorizontalPodAutoscaler')
cm = one('ConfigMap')
pod = dep.get('spec', {}).get('template', {})
labels = pod.get('metadata', {}).get('labels', {})
sub = lambda a, b: all(b.get(k) == v for k, v in a.items())
ok(sub(dep['spec']['selector']['matchLabels'], labels), 'the Deployment selects its own pods')
ok(svc['spec']['selector'] and sub(svc['spec']['selector'], labels), 'the Service selects the pods')
ok(sub(pdb['spec']['selector']['matchLabels'], labels), 'the PodDisruptionBudget selects the pods')
containers = pod['spec']['containers']
c = next((x for x in containers if x['name'] == 'pushedge'), None)
ok(c is not None, 'a container named pushedge')
port_names = {p.get('name') for p in c.get('ports', [])}
ok(all(p['targetPort'] in port_names for p in svc['spec']['ports']), 'the Service targets a named container port', port_names)
ok(c['readinessProbe']['httpGet']['path'] == '/readyz', 'readiness on /readyz')
ok(c['livenessProbe']['httpGet']['path'] == '/healthz', 'liveness on /healthz')
ok(c['resources']['requests'].get('cpu') and c['resources']['requests'].get('memory'), 'cpu and memory requests')

args = c.get('args', [])
opt = lambda name: next((int(a.split('=', 1)[1]) for a in args if a.startswith(f'--{name}=')), 0)
cmd = ' '.join(c['lifecycle']['preStop']['exec']['command'])
m = re.search(r'sleep (\d+)', cmd)
pre = int(m.group(1)) if m else 0
grace = pod['spec'].get('terminationGracePeriodSeconds', 30)
need = pre + opt('drain-delay') + opt('drain-timeout')
ok(pre > 0, f'a preStop that waits ({cmd})')
ok(opt('drain-timeout') > 0 and grace > need,
   f'terminationGracePeriodSeconds {grace} > preStop {pre} + drain-delay {opt("drain-delay")} + drain-timeout {opt("drain-timeout")}')
probe = c['readinessProbe']
ok(opt('drain-delay') >= probe['periodSeconds'] * probe['failureThreshold'],
   'the pre-drain outlasts the readiness probe\'s failure window')

helped = subprocess.run([binary, '--help'], capture_output=True, text=True, timeout=20).stdout
for a in args:
    name = a[2:].split('=', 1)[0]
    ok(f'--{name}' in helped, f'pushedge knows --{name}')
for e in c.get('env', []):
    if e['name'].startswith('PUSHEDGE_'):
        name = e['name'][len('PUSHEDGE_'):].lower().replace('_', '-')
        ok(f'--{name}' in helped, f'pushedge reads {e["name"]} (--{name})')

target = hpa['spec']['scaleTargetRef']
ok(target['kind'] == 'Deployment' and target['name'] == dep['metadata']['name'], 'the HPA scales the Deployment')
metric = hpa['spec']['metrics'][0]['pods']['metric']['name']
adapter = yaml.safe_load(cm['data']['config.yaml'])
rule = next((r for r in adapter.get('rules', []) if r.get('name', {}).get('as') == metric), None)
ok(rule is not None, f'the adapter rule provides {metric}')
series = re.match(r'([a-z_]+)', rule['seriesQuery']).group(1) if rule else ''
with open(os.path.join(root, 'edge', 'api', 'ops.c')) as f:
    ok(f'"{series}{{' in f.read(), f'the server exports {series} (edge/api/ops.c)')
ok(rule is not None and re.fullmatch(rule['name']['matches'].strip('^$'), series) is not None, 'the rule matches that series')

kubectl = shutil.which('kubectl')
if kubectl:
    r = subprocess.run([kubectl, 'kustomize', K8S], capture_output=True, text=True, timeout=60)
    ok(r.returncode == 0, 'kubectl kustomize deploy/k8s (offline)', r.stderr)


# ---- the fields docs/operations.md names ----
def resolve(node, path):
    for part in re.findall(r'[^.\[\]]+|\["[^"]*"\]|\[[^\]]*\]', path):
        if part.startswith('["'):
            node = node.get(part[2:-2]) if isinstance(node, dict) else None
        elif part.startswith('['):
            key = part[1:-1]
            if '=' in key:
                k, v = key.split('=', 1)
                node = next((x for x in node if isinstance(x, dict) and str(x.get(k)) == v), None)
            else:
                node = node[int(key)] if isinstance(node, list) and int(key) < len(node) else None
        else:
            node = node.get(part) if isinstance(node, dict) else None
        if node is None:
            return None
    return node


with open(os.path.join(root, 'docs', 'operations.md')) as f:
    text = f.read()
section = text[text.index('## Kubernetes'):]
section = section[:section.find('\n## ', 3)] if '\n## ' in section[3:] else section
rows = re.findall(r'^\| `([\w.-]+\.yaml)` \| `([^`]+)` \| `([^`]*)` \|', section, re.M)
ok(len(rows) >= 15, f'the docs name fields in a table ({len(rows)})')
for fname, path, want in rows:
    ds = docs.get(fname)
    if not ok(ds is not None, f'{fname} exists'):
        continue
    base = ds[0]
    if base.get('kind') == 'ConfigMap' and path.startswith('rules'):
        base = yaml.safe_load(base['data']['config.yaml'])
    got = resolve(base, path)
    ok(got is not None and (want == '' or str(got) == want or
                            (isinstance(got, list) and (want in map(str, got) or ' '.join(map(str, got)) == want))),
       f'{fname}: {path} = {want or "(present)"}', f'found {got!r}')

print(f'1..{n}')
sys.exit(1 if failed else 0)
