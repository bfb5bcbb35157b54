#!/usr/bin/env python3
"""Checks deploy/k8s against itself and against deploy/nginx/ztee-serve.conf.

No cluster is needed: every manifest is parsed (PyYAML), and what must agree
is compared: names, namespaces, selectors and labels, ports, the volumes the
server's flags name, the privileges the jail needs, and the proxy's
ConfigMap, which must be the shipped nginx file but for its three marked
parts (that file itself runs in serve.cluster behind a real nginx).
Exits 0 when all holds; otherwise prints every problem and exits 1.
"""
import ipaddress
import os
import re
import shlex
import sys

try:
    import yaml
except ImportError:
    print("SKIP: python3-yaml not found: apt-get install python3-yaml (tools/dev setup does)")
    sys.exit(0)

top = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
k8s = os.path.join(top, "deploy", "k8s")
problems = []


def check(cond, msg):
    if not cond:
        problems.append(msg)
    return cond


def marked_parts_removed(conf):
    return re.sub(r"(# BEGIN ztee (\w+)\n).*?(\n\s*# END ztee \2)", r"\1\3", conf, flags=re.S)


def marked_part(conf, what):
    m = re.search(r"# BEGIN ztee %s\n(.*?)\n\s*# END ztee %s" % (what, what), conf, re.S)
    return [l.strip() for l in m.group(1).splitlines() if l.strip() and not l.strip().startswith("#")] if m else None


objs = {}
for name in sorted(os.listdir(k8s)):
    if not name.endswith(".yaml"):
        continue
    with open(os.path.join(k8s, name)) as f:
        try:
            docs = [d for d in yaml.safe_load_all(f) if d is not None]
        except yaml.YAMLError as e:
            problems.append(f"{name}: not YAML: {e}")
            continue
    for d in docs:
        kind = d.get("kind")
        if kind == "Kustomization":
            for r in d.get("resources", []):
                check(os.path.exists(os.path.join(k8s, r)), f"{name}: resource {r} does not exist")
            continue
        meta = d.get("metadata") or {}
        if not check(d.get("apiVersion") and kind and meta.get("name"), f"{name}: a document without apiVersion, kind or metadata.name"):
            continue
        objs[(kind, meta["name"])] = d

ns = [n for (k, n) in objs if k == "Namespace"]
check(ns == ["ztee"], f"expected one Namespace ztee, found {ns}")
for (kind, name), d in objs.items():
    if kind != "Namespace":
        check(d["metadata"].get("namespace") == "ztee", f"{kind} {name} is not in namespace ztee")


def pod_labels(workload):
    return workload["spec"]["template"]["metadata"]["labels"]


def selects(selector, labels):
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


ds = objs.get(("DaemonSet", "ztee-serve"))
proxy = objs.get(("Deployment", "ztee-proxy"))
cm = objs.get(("ConfigMap", "ztee-proxy"))
check(ds and proxy and cm, "missing DaemonSet ztee-serve, Deployment ztee-proxy or ConfigMap ztee-proxy")
if ds and proxy and cm:
    for w in (ds, proxy):
        check(selects(w["spec"]["selector"]["matchLabels"], pod_labels(w)),
              f"{w['kind']} {w['metadata']['name']}: its selector does not match its pod labels")

    # The server's pods.
    spec = ds["spec"]["template"]["spec"]
    c = spec["containers"][0]
    check(spec.get("nodeSelector"), "the DaemonSet has no nodeSelector (it must run on KVM nodes only)")
    check(spec.get("hostNetwork") is True, "the DaemonSet's pods need hostNetwork (the proxy's map names node addresses)")
    check(c.get("securityContext", {}).get("privileged") is True, "the ztee serve container must be privileged (the jail)")
    script = " ".join(c.get("command", []) + c.get("args", []))
    argv = shlex.split(script.split("exec ", 1)[-1]) if "exec " in script else []
    check(argv[:2] == ["ztee", "serve"], f"the container does not exec `ztee serve`: {script!r}")
    flags = {argv[i]: argv[i + 1] for i in range(2, len(argv) - 1) if argv[i].startswith("--")}
    for f in ("--listen", "--node", "--peer", "--keys", "--state-dir"):
        check(f in flags, f"ztee serve in the DaemonSet has no {f}")
    mounts = {m["mountPath"]: m["name"] for m in c.get("volumeMounts", [])}
    vols = {v["name"]: v for v in spec.get("volumes", [])}
    kvm = vols.get(mounts.get("/dev/kvm"), {})
    check(kvm.get("hostPath", {}).get("path") == "/dev/kvm" and kvm["hostPath"].get("type") == "CharDevice",
          "/dev/kvm is not mounted from the host as a CharDevice")
    keys_dir = os.path.dirname(flags.get("--keys", "/"))
    check(vols.get(mounts.get(keys_dir), {}).get("secret"), f"--keys {flags.get('--keys')} is not in a mounted Secret")
    check(vols.get(mounts.get(flags.get("--state-dir")), {}).get("hostPath"),
          f"--state-dir {flags.get('--state-dir')} is not a hostPath (a restarted pod must find what the last one left)")
    port = c["ports"][0]["containerPort"]
    check(flags.get("--listen", "").endswith(f":{port}"), f"--listen {flags.get('--listen')} is not the containerPort {port}")
    for probe in ("readinessProbe", "livenessProbe"):
        p = c.get(probe, {}).get("httpGet", {})
        check(p.get("path") == "/healthz" and p.get("port") == port, f"{probe} is not GET /healthz on {port}")

    # Services: creation (ClusterIP) and peers (headless), both on the server's pods.
    svc = objs.get(("Service", "ztee-serve"))
    peers = objs.get(("Service", "ztee-serve-peers"))
    for s in (svc, peers):
        if check(s, "missing Service ztee-serve or ztee-serve-peers"):
            check(selects(s["spec"]["selector"], pod_labels(ds)), f"Service {s['metadata']['name']} does not select the DaemonSet's pods")
            check(s["spec"]["ports"][0]["targetPort"] == port, f"Service {s['metadata']['name']} does not target port {port}")
    if peers:
        check(peers["spec"].get("clusterIP") == "None", "Service ztee-serve-peers must be headless (clusterIP: None)")
        want = f"http://ztee-serve-peers.ztee.svc.cluster.local:{peers['spec']['ports'][0]['port']}"
        check(flags.get("--peer") == want, f"--peer is {flags.get('--peer')}, expected {want}")

    # The proxy: the shipped nginx file, this cluster's parts, wired to the Services.
    conf = cm["data"].get("ztee-serve.conf", "")
    with open(os.path.join(top, "deploy", "nginx", "ztee-serve.conf")) as f:
        shipped = f.read()
    check(marked_parts_removed(conf) == marked_parts_removed(shipped),
          "the ConfigMap's ztee-serve.conf differs from deploy/nginx/ztee-serve.conf outside its marked parts")
    any_part = marked_part(conf, "any") or []
    check(svc and any(l.startswith(f"server ztee-serve.ztee.svc.cluster.local:{svc['spec']['ports'][0]['port']} ") for l in any_part),
          f"the proxy's ztee_any upstream is not the ztee-serve Service: {any_part}")
    for line in marked_part(conf, "nodes") or []:
        m = re.fullmatch(r"([a-z0-9-]+)\s+([0-9.]+):(\d+);", line)
        if check(m, f"node map line {line!r} is not `NAME ADDRESS:PORT;`"):
            node, addr, p = m.groups()
            check(len(node) <= 32 and not node.startswith("-") and not node.endswith("-"), f"{node} is not a node name")
            try:
                ipaddress.ip_address(addr)
            except ValueError:
                problems.append(f"node map line {line!r}: {addr} is not an IP address")
            check(int(p) == port, f"node map line {line!r}: the nodes listen on {port}")
    listen = marked_part(conf, "listen") or [""]
    pc = proxy["spec"]["template"]["spec"]["containers"][0]
    pport = pc["ports"][0]["containerPort"]
    check(listen == [f"listen {pport};"], f"the proxy listens on {listen}, its containerPort is {pport}")
    pmounts = {m["name"]: m["mountPath"] for m in pc.get("volumeMounts", [])}
    pvols = {v["name"]: v for v in proxy["spec"]["template"]["spec"].get("volumes", [])}
    check(any(v.get("configMap", {}).get("name") == "ztee-proxy" and pmounts.get(n) == "/etc/nginx/conf.d" for n, v in pvols.items()),
          "the proxy does not mount ConfigMap ztee-proxy at /etc/nginx/conf.d")
    psvc = objs.get(("Service", "ztee-proxy"))
    if check(psvc, "missing Service ztee-proxy"):
        check(selects(psvc["spec"]["selector"], pod_labels(proxy)) and psvc["spec"]["ports"][0]["targetPort"] == pport,
              "Service ztee-proxy does not reach the proxy's pods on their port")

for p in problems:
    print(f"deploy/k8s: {p}")
print(f"deploy/k8s: {len(objs)} objects checked, {len(problems)} problems")
sys.exit(1 if problems else 0)
