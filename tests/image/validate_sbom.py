#!/usr/bin/python3
"""Validates a libztee image SBOM against the CycloneDX 1.5 JSON schema
(tests/image/schema, with its spdx and jsf sub-schemas) and checks what the
image builder promises: every dpkg package with name, version, architecture
and purl, the kernel package, ztee-agent with its SHA-256.

  validate_sbom.py SCHEMA_DIR SBOM.json [--agent-sha256 HEX] [--packages N] [--kernel-config-sha256 HEX]
"""
import json
import re
import sys

import jsonschema
import jsonschema._validators


def _extras_msg(extras):
    # Debian's jsonschema 4.10 sorts the extra items for its message, which
    # fails on objects (a licences array of two entries checked against the
    # one-expression branch of a oneOf); the message needs no order.
    return ", ".join(repr(e) for e in extras), "was" if len(extras) == 1 else "were"


jsonschema._validators.extras_msg = _extras_msg


def main():
    schema_dir, path = sys.argv[1], sys.argv[2]
    opts = dict(zip(sys.argv[3::2], sys.argv[4::2]))
    store = {}
    for name in ("bom-1.5.schema.json", "spdx.schema.json", "jsf-0.82.schema.json"):
        with open(f"{schema_dir}/{name}") as f:
            s = json.load(f)
        store[s["$id"]] = s
        store[name] = s
    schema = store["bom-1.5.schema.json"]
    resolver = jsonschema.RefResolver.from_schema(schema, store=store)
    with open(path) as f:
        bom = json.load(f)
    errors = sorted(jsonschema.Draft7Validator(schema, resolver=resolver).iter_errors(bom), key=lambda e: list(e.path))
    for e in errors[:10]:
        print(f"schema: {'/'.join(map(str, e.path))}: {e.message[:300]}", file=sys.stderr)
    if errors:
        sys.exit(f"{path}: {len(errors)} CycloneDX 1.5 schema violation(s)")

    comps = bom["components"]
    debs = [c for c in comps if c.get("purl", "").startswith("pkg:deb/debian/")]
    purl_re = re.compile(r"^pkg:deb/debian/[a-z0-9][a-z0-9+.-]*@[A-Za-z0-9.+~%_-]+\?arch=[a-z0-9]+&distro=debian-[0-9]+$")
    problems = []
    for c in debs:
        if not purl_re.match(c["purl"]):
            problems.append(f"bad purl {c['purl']}")
        if not c.get("version"):
            problems.append(f"{c['name']}: no version")
    # The guest kernel: Debian's kernel package, or the source package of the
    # minimal kernel (with its resolved .config's sha256).
    kernels = [c for c in debs if c["type"] == "operating-system"]
    if len(kernels) != 1:
        problems.append(f"want one kernel component, got {len(kernels)}")
    elif kernels[0]["name"].startswith("linux-source-"):
        props = {p["name"]: p["value"] for p in kernels[0].get("properties", [])}
        if not re.fullmatch(r"[0-9a-f]{64}", props.get("libztee:kernel:config_sha256", "")):
            problems.append("the minimal kernel's component has no libztee:kernel:config_sha256")
        if "--kernel-config-sha256" in opts and props.get("libztee:kernel:config_sha256") != opts["--kernel-config-sha256"]:
            problems.append(f"kernel config sha256 {props.get('libztee:kernel:config_sha256')} != manifest's "
                            f"{opts['--kernel-config-sha256']}")
    elif not kernels[0]["name"].startswith("linux-image-"):
        problems.append(f"kernel component {kernels[0]['name']} is neither linux-image-* nor linux-source-*")
    rootfs_debs = [c for c in debs if c["type"] == "library"]
    for must in ("libc6", "bash", "dpkg", "python3"):
        if not any(c["name"] == must for c in rootfs_debs):
            problems.append(f"package {must} missing")
    if "--packages" in opts and len(rootfs_debs) != int(opts["--packages"]):
        problems.append(f"{len(rootfs_debs)} rootfs packages, dpkg lists {opts['--packages']}")
    if not any("licenses" in c for c in rootfs_debs):
        problems.append("no package has a licence")
    agents = [c for c in comps if c["name"] == "ztee-agent"]
    if len(agents) != 1 or agents[0].get("hashes", [{}])[0].get("alg") != "SHA-256":
        problems.append("no ztee-agent component with a SHA-256")
    elif "--agent-sha256" in opts and agents[0]["hashes"][0]["content"] != opts["--agent-sha256"]:
        problems.append(f"agent sha256 {agents[0]['hashes'][0]['content']} != manifest's {opts['--agent-sha256']}")
    if problems:
        sys.exit(f"{path}: " + "; ".join(problems[:10]))
    print(f"OK {path}: CycloneDX 1.5 valid, {len(rootfs_debs)} packages ({sum('licenses' in c for c in rootfs_debs)} "
          f"with licences), kernel {kernels[0]['version']}, agent")


if __name__ == "__main__":
    main()
