#!/usr/bin/env python3
"""C ABI checks on a built libztee.so.

  check_abi.py sets    LIB MAP HEADER NM
      The symbols the library exports, the version script lists and the header
      declares (ZTEE_API functions) are the same set; every export carries a
      LIBZTEE_* version from the script; nothing else is exported.
  check_abi.py abidiff LIB BASELINE HEADERS_DIR SUPPRESSIONS
      abidiff of the library against the baseline (an abidw dump kept under
      version control). Any difference fails: an incompatible one because it
      breaks callers, a compatible one (an addition: a new function, a field
      appended to an options struct, which SUPPRESSIONS tells apart) until the
      baseline and the version script are updated in the same commit
      (tools/dev abi-update).
"""
import os
import re
import subprocess
import sys


def fail(msg):
    print(f"check_abi: FAIL: {msg}", file=sys.stderr)
    sys.exit(1)


def exported(lib, nm):
    out = subprocess.run([nm, "-D", "--defined-only", lib], check=True, capture_output=True, text=True).stdout
    syms, versions, other = {}, set(), []
    for line in out.splitlines():
        parts = line.split()
        if len(parts) < 3:
            continue
        name = parts[2]
        base, _, ver = name.partition("@")
        ver = ver.lstrip("@")
        if re.fullmatch(r"LIBZTEE_[0-9.]+", base):
            versions.add(base)
        elif base.startswith("ztee_"):
            syms[base] = ver
        else:
            other.append(name)
    return syms, versions, other


def script_symbols(path):
    text = re.sub(r"/\*.*?\*/", "", open(path).read(), flags=re.S)
    nodes = {}
    for node, body in re.findall(r"(LIBZTEE_[0-9.]+)\s*\{(.*?)\}", text, flags=re.S):
        glob = body.split("local:")[0].replace("global:", "")
        names = [n.strip() for n in glob.split(";") if n.strip()]
        for n in names:
            if not re.fullmatch(r"ztee_[a-z0-9_]+", n):
                fail(f"{path}: node {node} lists '{n}': list C ABI functions by name, no patterns")
        nodes[node] = names
    if not nodes:
        fail(f"{path}: no LIBZTEE_* version node")
    return nodes


def header_functions(path):
    text = re.sub(r"/\*.*?\*/", "", open(path).read(), flags=re.S)
    return set(re.findall(r"ZTEE_API\b[^;{]*?\b(ztee_[a-z0-9_]+)\s*\(", text, flags=re.S))


def check_sets(lib, mapfile, header, nm):
    syms, versions, other = exported(lib, nm)
    if other:
        fail("libztee.so exports symbols outside the C ABI:\n  " + "\n  ".join(other))
    nodes = script_symbols(mapfile)
    listed = {}
    for node, names in nodes.items():
        for n in names:
            if n in listed:
                fail(f"{mapfile}: {n} is listed in both {listed[n]} and {node}")
            listed[n] = node
    declared = header_functions(header)
    problems = []
    for n in sorted(set(syms) - set(listed)):
        problems.append(f"{n}: exported but not in {mapfile}")
    for n in sorted(set(listed) - set(syms)):
        problems.append(f"{n}: in {mapfile} but not exported (not defined?)")
    for n in sorted(declared - set(syms)):
        problems.append(f"{n}: declared in {header} but not exported")
    for n in sorted(set(syms) - declared):
        problems.append(f"{n}: exported but not declared in {header}")
    for n, ver in sorted(syms.items()):
        if n in listed and ver != listed[n]:
            problems.append(f"{n}: exported with version '{ver}', the script puts it in {listed[n]}")
    if versions != set(nodes):
        problems.append(f"version nodes in the library {sorted(versions)} differ from the script's {sorted(nodes)}")
    if problems:
        fail("the exported symbols, the version script and the header disagree:\n  " + "\n  ".join(problems))
    print(f"check_abi: {len(syms)} functions: exported, listed in {len(nodes)} version node(s) and declared alike")


def abidiff(lib, baseline, headers, *extra):
    # The baseline holds only what capi/ztee.h defines (abidw --headers-dir);
    # the library's side needs no header filter: its exported functions are
    # the C ABI, and only types they reach are compared. (A --headers-dir2
    # here made abidiff filter every change out.)
    del headers
    args = ["abidiff", "--exported-interfaces-only", "--no-show-locs", *extra, baseline, lib]
    r = subprocess.run(args, capture_output=True, text=True)
    return r.returncode, (r.stdout + r.stderr).strip()


def counts(report):
    """(removed, changed, added) over functions and variables, from abidiff's summary."""
    removed = changed = added = 0
    for m in re.finditer(r"(?:Functions|Variables) changes summary: (\d+) Removed, (\d+) Changed[^,]*, (\d+) Added",
                         report):
        removed += int(m.group(1))
        changed += int(m.group(2))
        added += int(m.group(3))
    for m in re.finditer(r"(?:Function|Variable) symbols changes summary: (\d+) Removed, (\d+) Added", report):
        removed += int(m.group(1))
        added += int(m.group(2))
    return removed, changed, added


def check_abidiff(lib, baseline, headers, suppressions):
    # Any difference at all, harmless ones included, means the baseline is stale.
    rc, report = abidiff(lib, baseline, headers, "--harmless")
    if rc & 3:
        fail(f"abidiff could not compare (status {rc}):\n{report}")
    if rc == 0 and counts(report) == (0, 0, 0):
        print(f"check_abi: no ABI change against {baseline}")
        return
    # Is it a break? Only new functions, and fields appended to options
    # structs (struct_size: the suppressions), are not.
    rc2, report2 = abidiff(lib, baseline, headers, "--suppressions", suppressions)
    if rc2 & 3:
        fail(f"abidiff could not compare (status {rc2}):\n{report2}")
    removed, changed, _ = counts(report2)
    if rc2 & 8 or removed or changed:
        fail("an INCOMPATIBLE (or unreviewed) ABI change: a function or type existing callers use was "
             "removed or changed. Undo it, or (for a new major ABI) bump ZTEE_ABI_MAJOR and make a new "
             f"baseline.\n{report2}")
    fail("the ABI changed compatibly (a new function, or a field appended to an options struct): update "
         "the baseline and the version script in the same commit: `tools/dev abi-update`, and list new "
         f"functions in a new LIBZTEE_* node of capi/libztee.map.\n{report}")


def main():
    if len(sys.argv) == 6 and sys.argv[1] == "sets":
        check_sets(*sys.argv[2:])
    elif len(sys.argv) == 6 and sys.argv[1] == "abidiff":
        check_abidiff(*sys.argv[2:])
    else:
        print(__doc__, file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
