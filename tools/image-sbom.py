#!/usr/bin/python3
"""Writes the CycloneDX 1.5 JSON SBOM of a libztee guest image.

Called by image-build.sh; reads the root filesystem image without mounting it
(debugfs from e2fsprogs), so it describes exactly the artifact that ships:

  image-sbom.py --rootfs rootfs.ext4 --name NAME --epoch SECONDS
                --kernel-package PKG=VERSION --kernel-arch ARCH [--kernel-doc DIR]
                [--kernel-config-sha256 HEX] --agent PATH [--builder-version N] > sbom.cdx.json

Components: every Debian package dpkg lists as installed in the rootfs (name,
version, architecture, purl pkg:deb/debian/NAME@VERSION?arch=ARCH&distro=debian-N,
licences from a machine-readable /usr/share/doc/NAME/copyright, best effort),
the kernel (outside the rootfs: Debian's kernel package, or the source package
libztee's minimal kernel is built from, with the resolved .config's SHA-256)
and ztee-agent with its SHA-256.
The output depends only on its inputs (no wall-clock time, sorted), so two
builds of the same inputs give the same bytes.
"""
import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import uuid
from datetime import datetime, timezone
from urllib.parse import quote


def die(msg):
    print(f"image-sbom: error: {msg}", file=sys.stderr)
    sys.exit(1)


def debugfs(image, request):
    r = subprocess.run(["debugfs", "-R", request, image], capture_output=True)
    if r.returncode != 0:
        die(f"debugfs -R '{request}' {image} failed: {r.stderr.decode(errors='replace').strip()}")
    return r.stdout.decode("utf-8", errors="replace")


def paragraphs(text):
    """deb822 paragraphs (dpkg status) as dicts of their single-line fields."""
    out, cur = [], {}
    for line in text.splitlines():
        if not line.strip():
            if cur:
                out.append(cur)
            cur = {}
        elif line[0] not in " \t" and ":" in line:
            k, v = line.split(":", 1)
            cur[k.strip()] = v.strip()
    if cur:
        out.append(cur)
    return out


def licences(copyright_text):
    """License: names of a machine-readable (DEP-5) copyright file, in order."""
    if not copyright_text.startswith("Format:"):
        return []
    seen = []
    for line in copyright_text.splitlines():
        if line.startswith("License:"):
            name = line[len("License:"):].strip()
            if name and name not in seen:
                seen.append(name)
    return seen


def read_doc(docroot, pkg):
    """/usr/share/doc/PKG/copyright from the dumped tree, following the
    package's doc symlink only within the dump."""
    base = os.path.realpath(docroot)
    d = os.path.join(docroot, pkg)
    if os.path.islink(d):
        target = os.readlink(d)
        d = os.path.join(docroot, os.path.basename(target.rstrip("/")))
    path = os.path.realpath(os.path.join(d, "copyright"))
    if not path.startswith(base + os.sep) or not os.path.isfile(path):
        return ""
    with open(path, encoding="utf-8", errors="replace") as f:
        return f.read()


def purl(name, version, arch, distro):
    return f"pkg:deb/debian/{quote(name, safe='+.-_')}@{quote(version, safe='+.-_~')}?arch={quote(arch)}&distro={distro}"


def licence_field(names):
    return [{"license": {"name": n}} for n in names]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rootfs", required=True)
    ap.add_argument("--name", required=True)
    ap.add_argument("--epoch", type=int, required=True)
    ap.add_argument("--kernel-package", required=True, help="PKG=VERSION")
    ap.add_argument("--kernel-arch", default="amd64")
    ap.add_argument("--kernel-doc", default="", help="the kernel package's /usr/share/doc directory")
    ap.add_argument("--kernel-config-sha256", default="",
                    help="a kernel built from --kernel-package (a source package): its .config's sha256")
    ap.add_argument("--agent", required=True)
    ap.add_argument("--builder-version", default="1")
    a = ap.parse_args()

    status = debugfs(a.rootfs, "cat /var/lib/dpkg/status")
    pkgs = [p for p in paragraphs(status) if p.get("Status", "").endswith(" installed") and "Package" in p]
    if not pkgs:
        die(f"{a.rootfs} lists no installed packages in /var/lib/dpkg/status")
    osrel = dict(
        line.split("=", 1) for line in debugfs(a.rootfs, "cat /usr/lib/os-release").splitlines() if "=" in line
    )
    version_id = osrel.get("VERSION_ID", "").strip('"')
    if not version_id:
        version_id = debugfs(a.rootfs, "cat /etc/debian_version").strip().split(".")[0]
    if not version_id:
        die(f"cannot tell the Debian release of {a.rootfs} (no VERSION_ID in /usr/lib/os-release)")
    distro = f"debian-{version_id}"

    with tempfile.TemporaryDirectory(prefix="ztee-sbom.") as tmp:
        debugfs(a.rootfs, f"rdump /usr/share/doc {tmp}")
        docroot = os.path.join(tmp, "doc")
        components = []
        for p in sorted(pkgs, key=lambda p: (p["Package"], p.get("Architecture", ""))):
            name, version, arch = p["Package"], p.get("Version", ""), p.get("Architecture", "")
            ref = purl(name, version, arch, distro)
            c = {"type": "library", "bom-ref": ref, "name": name, "version": version, "purl": ref}
            lic = licences(read_doc(docroot, name)) if os.path.isdir(docroot) else []
            if lic:
                c["licenses"] = licence_field(lic)
            props = [{"name": "libztee:deb:architecture", "value": arch}]
            if p.get("Source"):
                props.append({"name": "libztee:deb:source", "value": p["Source"].split(" ")[0]})
            c["properties"] = props
            components.append(c)

    kname, _, kversion = a.kernel_package.partition("=")
    if not kname or not kversion:
        die("--kernel-package needs PKG=VERSION")
    kref = purl(kname, kversion, a.kernel_arch, distro)
    if a.kernel_config_sha256:
        desc = ("guest kernel built by libztee from this source package (tinyconfig + "
                "guest/kernel/ztee-minimal.config; outside the root filesystem: vmlinuz, vmlinux)")
    else:
        desc = "guest kernel (outside the root filesystem: vmlinuz, vmlinux and the initramfs modules)"
    kernel = {"type": "operating-system", "bom-ref": kref, "name": kname, "version": kversion, "purl": kref,
              "description": desc}
    if a.kernel_config_sha256:
        kernel["properties"] = [{"name": "libztee:kernel:config_sha256", "value": a.kernel_config_sha256}]
    kdoc = os.path.join(a.kernel_doc, kname, "copyright") if a.kernel_doc else ""
    if kdoc and os.path.isfile(kdoc):
        with open(kdoc, encoding="utf-8", errors="replace") as f:
            lic = licences(f.read())
        if lic:
            kernel["licenses"] = licence_field(lic)
    components.append(kernel)

    h = hashlib.sha256()
    with open(a.agent, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    agent_sha = h.hexdigest()
    components.append({"type": "application", "bom-ref": "ztee-agent", "name": "ztee-agent",
                       "description": "libztee guest agent: /init of the initramfs (stripped copy of this binary)",
                       "hashes": [{"alg": "SHA-256", "content": agent_sha}]})

    with open(a.rootfs, "rb") as f:
        rh = hashlib.sha256()
        for chunk in iter(lambda: f.read(1 << 20), b""):
            rh.update(chunk)
    rootfs_sha = rh.hexdigest()
    # The serial number names these inputs: same inputs, same SBOM.
    serial = uuid.uuid5(uuid.NAMESPACE_URL, f"libztee-image:{a.name}:{rootfs_sha}:{a.kernel_package}:{agent_sha}")
    bom = {
        "bomFormat": "CycloneDX",
        "specVersion": "1.5",
        "serialNumber": f"urn:uuid:{serial}",
        "version": 1,
        "metadata": {
            "timestamp": datetime.fromtimestamp(a.epoch, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "tools": {"components": [{"type": "application", "name": "libztee image-build.sh",
                                      "version": str(a.builder_version)}]},
            "component": {"type": "operating-system", "bom-ref": "image", "name": a.name,
                          "description": f"libztee guest image ({distro} root filesystem, kernel {kname})",
                          "properties": [{"name": "libztee:rootfs:sha256", "value": rootfs_sha}]},
        },
        "components": components,
        "dependencies": [{"ref": "image", "dependsOn": [c["bom-ref"] for c in components]}],
    }
    json.dump(bom, sys.stdout, indent=2, ensure_ascii=False)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
