#!/bin/bash
# The guest image's supply chain through the `ztee image` commands, on small
# fake images (no VM boots: every refusal happens before a VMM starts; the
# real boot from a signed image is image.trust's).
#   usage: supply_chain_test.sh ZTEE_BINARY TESTS_IMAGE_DIR [build]
# `build` (opt-in, ZTEE_TEST_IMAGE_BUILD=1: two full image builds, ~1.5 min,
# downloads from the host's Debian mirror): `ztee image build
# --verify-reproducible` into a temporary directory, then its SBOM against
# the schema.
set -u
ZTEE=$1
HERE=$2
WHAT=${3:-}
if [ "$WHAT" = build ] && [ "${ZTEE_TEST_IMAGE_BUILD:-0}" != 1 ]; then
  echo "SKIP: set ZTEE_TEST_IMAGE_BUILD=1 to run two full image builds (~1.5 min, root, the Debian mirror)"
  exit 77
fi
fails=0
tmp=$(mktemp -d /tmp/ztee-supply.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
cd "$tmp" || exit 1

fail() { echo "FAIL: $*" >&2; fails=$((fails + 1)); }
# expect_rc WANT CMD... : runs CMD with stdout/stderr into $tmp/out, $tmp/err.
expect_rc() {
  local want=$1; shift
  "$@" >"$tmp/out" 2>"$tmp/err"
  local rc=$?
  if [ "$rc" != "$want" ]; then
    fail "$* exited $rc, want $want; stdout: $(head -c 600 "$tmp/out"); stderr: $(head -c 600 "$tmp/err")"
    return 1
  fi
  return 0
}
# expect_err PATTERN: the last command's stderr matches (grep -E)
expect_err() { grep -Eq -- "$1" "$tmp/err" || fail "stderr lacks /$1/: $(head -c 600 "$tmp/err")"; }
expect_out() { grep -Eq -- "$1" "$tmp/out" || fail "stdout lacks /$1/: $(head -c 600 "$tmp/out")"; }

sha() { sha256sum "$1" | cut -c1-64; }
# fake_image DIR [EXTRA_JSON]: random artifacts and a manifest that matches them.
fake_image() {
  local d=$1 f
  mkdir -p "$d"
  for f in vmlinuz initramfs.cpio rootfs.ext4; do head -c $((4096 + RANDOM)) /dev/urandom >"$d/$f"; done
  printf '{"bomFormat": "CycloneDX", "specVersion": "1.5", "version": 1, "components": []}\n' >"$d/sbom.cdx.json"
  cat >"$d/manifest.json" <<EOF
{
  "format": 1,
  "name": "$(basename "$d")",
  "artifacts": {
    "kernel": {"path": "vmlinuz", "sha256": "$(sha "$d/vmlinuz")", "size": $(stat -c %s "$d/vmlinuz")},
    "initramfs": {"path": "initramfs.cpio", "sha256": "$(sha "$d/initramfs.cpio")", "size": $(stat -c %s "$d/initramfs.cpio"), "format": "newc"},
    "rootfs": {"path": "rootfs.ext4", "sha256": "$(sha "$d/rootfs.ext4")", "size": $(stat -c %s "$d/rootfs.ext4"), "format": "ext4"},
    "sbom": {"path": "sbom.cdx.json", "sha256": "$(sha "$d/sbom.cdx.json")", "size": $(stat -c %s "$d/sbom.cdx.json"), "format": "cyclonedx-json"}
  }${2:-}
}
EOF
}
# What `openssl dgst` (and so cosign verify-blob, which checks the same ECDSA
# P-256 signature over the blob's SHA-256) says about DIR's signature.
openssl_verify() {  # openssl_verify PUB DIR
  base64 -d "$2/manifest.json.sig" >"$tmp/sig.der" 2>/dev/null &&
    openssl dgst -sha256 -verify "$1" -signature "$tmp/sig.der" "$2/manifest.json" >/dev/null 2>&1
}

if [ "$WHAT" = build ]; then
  out=$tmp/built
  "$ZTEE" image build --out "$out" --verify-reproducible >"$tmp/build.log" 2>&1 ||
    { tail -n 20 "$tmp/build.log" >&2; fail "ztee image build --verify-reproducible failed"; }
  grep 'reproducibility:' "$tmp/build.log"
  n=$(debugfs -R "cat /var/lib/dpkg/status" "$out/rootfs.ext4" 2>/dev/null | grep -c '^Status: install ok installed')
  agent_sha=$(/usr/bin/python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["agent_sha256"])' "$out/manifest.json")
  /usr/bin/python3 "$HERE/validate_sbom.py" "$HERE/schema" "$out/sbom.cdx.json" --agent-sha256 "$agent_sha" --packages "$n" ||
    fail "the built SBOM is not valid"
  expect_rc 0 "$ZTEE" image verify "$out"
  echo "image build: $fails failure(s)"
  [ "$fails" = 0 ]
  exit
fi

# ---- keys --------------------------------------------------------------------
expect_rc 0 "$ZTEE" image keygen --out k1
expect_rc 0 "$ZTEE" image keygen --out k2
[ "$(stat -c %a k1.key)" = 600 ] || fail "k1.key mode $(stat -c %a k1.key), want 600"
head -1 k1.pub | grep -q -- '-----BEGIN PUBLIC KEY-----' || fail "k1.pub is not a PEM public key"
openssl pkey -pubin -in k1.pub -noout -text 2>/dev/null | grep -q 'prime256v1' || fail "k1.pub is not P-256"
expect_rc 125 "$ZTEE" image keygen --out k1 && expect_err 'never overwrites'
expect_rc 125 "$ZTEE" image keygen

# ---- sign / verify ------------------------------------------------------------
fake_image img
expect_rc 0 "$ZTEE" image sign --key k1.key img && expect_out 'signed img/manifest.json'
[ -s img/manifest.json.sig ] || fail "no img/manifest.json.sig"
openssl_verify k1.pub img || fail "openssl dgst -verify rejects ztee's signature (not cosign's blob format)"
openssl_verify k2.pub img && fail "openssl dgst -verify accepts the signature under another key"
expect_rc 0 "$ZTEE" image verify --key k1.pub img && {
  expect_out '^OK   signature img/manifest.json.sig by k1.pub'
  for a in kernel initramfs rootfs sbom; do expect_out "^OK   $a "; done
}
# Any one of several keys may match.
expect_rc 0 "$ZTEE" image verify --key k2.pub --key k1.pub img
# A signature made by OpenSSL itself (as cosign sign-blob would) verifies too.
cp -a img img-ossl
openssl dgst -sha256 -sign k2.key img-ossl/manifest.json | base64 -w0 >img-ossl/manifest.json.sig
expect_rc 0 "$ZTEE" image verify --key k2.pub img-ossl
# Without --key: digests only, and it says so.
expect_rc 0 "$ZTEE" image verify img && expect_out '^WARN signature not checked'

# ---- refusals: verify and the runtime (ztee run --trusted-key) ------------------
# Each refusal case: the directory and the stderr pattern both must name.
refusal() {  # refusal DIR PATTERN [run extra args...]
  local d=$1 pat=$2; shift 2
  expect_rc 1 "$ZTEE" image verify --key k1.pub "$d" && expect_err "$pat"
  expect_rc 125 "$ZTEE" run --image "$PWD/$d" --trusted-key "$PWD/k1.pub" "$@" -- true && expect_err "$pat"
}
cp -a img tampered-rootfs; printf 'x' | dd of=tampered-rootfs/rootfs.ext4 bs=1 seek=100 conv=notrunc status=none
refusal tampered-rootfs "tampered-rootfs/rootfs.ext4 does not match its manifest"

cp -a img tampered-manifest; sed -i 's/"name": "img"/"name": "evil"/' tampered-manifest/manifest.json
refusal tampered-manifest "tampered-manifest/manifest.json.sig does not verify with any trusted key"

cp -a img other-key; expect_rc 0 "$ZTEE" image sign --key k2.key other-key
refusal other-key "other-key/manifest.json.sig does not verify with any trusted key .*k1.pub"

cp -a img unsigned; rm unsigned/manifest.json.sig
refusal unsigned "unsigned/manifest.json is unsigned"

cp -a img tampered-sbom; echo '{}' >tampered-sbom/sbom.cdx.json
refusal tampered-sbom "(sbom|SBOM) .*tampered-sbom/sbom.cdx.json does not match its manifest"

# Signing refuses an image whose files do not match (it would attest them).
expect_rc 1 "$ZTEE" image sign --key k1.key tampered-rootfs && expect_err 'rootfs.ext4 does not match'
# A public key is no signing key, a private key is no trusted key.
expect_rc 125 "$ZTEE" image sign --key k1.pub img && expect_err 'not an unencrypted PEM private key'
expect_rc 125 "$ZTEE" image verify --key k1.key img && expect_err 'pass the .pub file'
expect_rc 125 "$ZTEE" run --image "$PWD/img" --trusted-key "$PWD/k1.key" -- true && expect_err 'pass the .pub file'

# ---- vulnerability gate --------------------------------------------------------
FX=$HERE/fixtures
mj() {  # mj DIR PYEXPR: evaluates PYEXPR over manifest.json as m (prints it)
  /usr/bin/python3 -c 'import json,sys; m=json.load(open(sys.argv[1]+"/manifest.json")); print(eval(sys.argv[2]))' "$1" "$2"
}
cp -a img gated
artifacts_before=$(mj gated 'json.dumps(m["artifacts"], sort_keys=True)')
expect_rc 1 "$ZTEE" image gate gated --report "$FX/trivy-report.json" --max-severity high && {
  expect_out '^BLOCK CVE-2099-0001 \(libc6, HIGH\)'
  expect_out '^BLOCK CVE-2099-0003 \(libssl3, CRITICAL\)'
  grep -q 'CVE-2099-0002\|CVE-2099-0004' "$tmp/out" && fail "gate: LOW/UNKNOWN findings listed: $(cat "$tmp/out")"
  expect_out '^FAIL: 4 findings from trivy, 2 at or above high'
  expect_out 'old signature .* was removed; sign it again'
}
[ "$(mj gated 'm["vuln_gate"]["verdict"]')" = fail ] || fail "gate: verdict not recorded as fail: $(cat gated/manifest.json)"
[ "$(mj gated 'm["vuln_gate"]["report_sha256"]')" = "$(sha "$FX/trivy-report.json")" ] || fail "gate: report sha256 not recorded"
[ "$(mj gated 'json.dumps(m["artifacts"], sort_keys=True)')" = "$artifacts_before" ] || fail "gate: artifacts changed"
[ -e gated/manifest.json.sig ] && fail "gate: the stale signature was left in place"
# A recorded failing verdict is refused where a passing one is required.
expect_rc 0 "$ZTEE" image sign --key k1.key gated
expect_rc 1 "$ZTEE" image verify --key k1.pub --require-vuln-gate gated && expect_err 'vulnerability gate verdict is "fail"'
expect_rc 125 "$ZTEE" run --image "$PWD/gated" --trusted-key "$PWD/k1.pub" --require-vuln-gate -- true &&
  expect_err 'gated/manifest.json: its vulnerability gate verdict is "fail"'
# No verdict at all.
expect_rc 1 "$ZTEE" image verify --require-vuln-gate img && expect_err 'img/manifest.json records no vulnerability gate verdict'
expect_rc 125 "$ZTEE" run --image "$PWD/img" --require-vuln-gate -- true && expect_err 'no vulnerability gate verdict'

# The allow-list covers both: pass; re-signed, verify with the gate required.
expect_rc 0 "$ZTEE" image gate gated --report "$FX/trivy-report.json" --max-severity high --allow "$FX/allow-valid.json" && {
  expect_out '^ALLOW CVE-2099-0001 .*until 2999-12-31'
  expect_out '^PASS: 4 findings from trivy, 0 at or above high not allowed, 2 allowed'
}
[ "$(mj gated 'm["vuln_gate"]["verdict"]')" = pass ] || fail "gate: verdict not pass: $(cat gated/manifest.json)"
[ "$(mj gated 'sorted(m["vuln_gate"]["allowed"]) == ["CVE-2099-0001", "CVE-2099-0003"]')" = True ] || fail "gate: allowed ids"
expect_rc 1 "$ZTEE" image verify --key k1.pub gated && expect_err 'unsigned'
expect_rc 0 "$ZTEE" image sign --key k1.key gated
expect_rc 0 "$ZTEE" image verify --key k1.pub --require-vuln-gate gated && expect_out '^OK   vulnerability gate: pass'
openssl_verify k1.pub gated || fail "openssl rejects the signature of the gated manifest"

# An expired entry no longer allows.
expect_rc 1 "$ZTEE" image gate gated --report "$FX/trivy-report.json" --max-severity high --allow "$FX/allow-expired.json" && {
  expect_out '^EXPIRED allow-list entry for CVE-2099-0001 expired on 2001-01-01'
  expect_out '^BLOCK CVE-2099-0001'
  expect_out '^ALLOW CVE-2099-0003'
}
[ "$(mj gated 'm["vuln_gate"]["blocking"]')" = "['CVE-2099-0001']" ] || fail "gate: blocking ids: $(cat gated/manifest.json)"
# Thresholds: critical lets HIGH through; MEDIUM blocks at medium, not at high.
expect_rc 1 "$ZTEE" image gate gated --report "$FX/trivy-report.json" --max-severity critical &&
  expect_out '^FAIL: 4 findings from trivy, 1 at or above critical'
expect_rc 0 "$ZTEE" image gate gated --report "$FX/trivy-clean.json" --max-severity high
expect_rc 1 "$ZTEE" image gate gated --report "$FX/trivy-clean.json" --max-severity MEDIUM && expect_out '^BLOCK CVE-2099-0005'
# Grype's format.
expect_rc 1 "$ZTEE" image gate gated --report "$FX/grype-report.json" --max-severity high && {
  expect_out '^BLOCK CVE-2099-1002 \(libexpat1, High\)'
  expect_out '^FAIL: 3 findings from grype, 1 at or above high'
}
[ "$(mj gated 'm["vuln_gate"]["scanner"]')" = grype ] || fail "gate: scanner not recorded"
expect_rc 1 "$ZTEE" image gate gated --report "$FX/grype-report.json" --max-severity medium && expect_out '^BLOCK CVE-2099-1001'
# Bad input: clear errors, manifest untouched.
cp gated/manifest.json manifest.before
expect_rc 125 "$ZTEE" image gate gated --report "$FX/allow-valid.json" --max-severity high && expect_err 'neither a Trivy'
expect_rc 125 "$ZTEE" image gate gated --report "$FX/trivy-report.json" --max-severity severe && expect_err 'expected low, medium, high or critical'
expect_rc 125 "$ZTEE" image gate gated --report "$FX/trivy-report.json" --max-severity high --allow "$FX/allow-invalid.json" &&
  expect_err 'entry #1 needs "id", a non-empty "reason"'
expect_rc 125 "$ZTEE" image gate gated --report "$tmp/nope.json" --max-severity high
cmp -s gated/manifest.json manifest.before || fail "gate: a refused invocation changed the manifest"

# ---- OCI image layout round trip ------------------------------------------------
expect_rc 0 "$ZTEE" image push img --oci layout:v1 && expect_out '^pushed img to layout:v1'
expect_rc 0 "$ZTEE" image gate gated --report "$FX/trivy-report.json" --max-severity high --allow "$FX/allow-valid.json"
expect_rc 0 "$ZTEE" image sign --key k1.key gated
expect_rc 0 "$ZTEE" image push gated --oci layout:v2
expect_rc 0 "$ZTEE" image push img --oci layout:v1   # same tag again: replaced, not duplicated
/usr/bin/python3 - "$PWD/layout" <<'PY' || fail "OCI layout check failed"
import hashlib, json, os, sys
root = sys.argv[1]
assert json.load(open(f"{root}/oci-layout")) == {"imageLayoutVersion": "1.0.0"}
index = json.load(open(f"{root}/index.json"))
assert index["schemaVersion"] == 2 and index["mediaType"] == "application/vnd.oci.image.index.v1+json"
tags = [m["annotations"]["org.opencontainers.image.ref.name"] for m in index["manifests"]]
assert sorted(tags) == ["v1", "v2"], tags
blobs = f"{root}/blobs/sha256"
for name in os.listdir(blobs):
    assert hashlib.sha256(open(f"{blobs}/{name}", "rb").read()).hexdigest() == name, name
def blob(desc):
    alg, hexd = desc["digest"].split(":")
    data = open(f"{blobs}/{hexd}", "rb").read()
    assert alg == "sha256" and len(data) == desc["size"], desc
    return data
entry = next(m for m in index["manifests"] if m["annotations"]["org.opencontainers.image.ref.name"] == "v1")
assert entry["mediaType"] == "application/vnd.oci.image.manifest.v1+json"
man = json.loads(blob(entry))
assert man["schemaVersion"] == 2 and man["mediaType"] == "application/vnd.oci.image.manifest.v1+json"
assert man["artifactType"] == "application/vnd.libztee.image.v1"
assert man["config"]["mediaType"] == "application/vnd.oci.empty.v1+json" and blob(man["config"]) == b"{}"
layers = {l["annotations"]["org.opencontainers.image.title"]: l["mediaType"] for l in man["layers"]}
assert layers == {
    "vmlinuz": "application/vnd.libztee.kernel.v1",
    "initramfs.cpio": "application/vnd.libztee.initramfs.v1.cpio",
    "rootfs.ext4": "application/vnd.libztee.rootfs.v1.ext4",
    "sbom.cdx.json": "application/vnd.cyclonedx+json",
    "manifest.json": "application/vnd.libztee.image.manifest.v1+json",
    "manifest.json.sig": "application/vnd.libztee.image.signature.v1",
}, layers
for l in man["layers"]:
    blob(l)
PY
expect_rc 0 "$ZTEE" image pull --oci layout:v1 --out pulled --key k1.pub && expect_out '^pulled layout:v1 into pulled'
for f in manifest.json manifest.json.sig vmlinuz initramfs.cpio rootfs.ext4 sbom.cdx.json; do
  cmp -s "img/$f" "pulled/$f" || fail "pull: pulled/$f differs from img/$f"
done
expect_rc 0 "$ZTEE" image verify --key k1.pub pulled
openssl_verify k1.pub pulled || fail "openssl rejects the pulled signature"
expect_rc 0 "$ZTEE" image pull --oci "$PWD/layout:v2" --out pulled2 && expect_rc 0 "$ZTEE" image verify --key k1.pub --require-vuln-gate pulled2
expect_rc 125 "$ZTEE" image pull --oci layout:v1 --out pulled && expect_err 'exists'
expect_rc 125 "$ZTEE" image pull --oci layout:v9 --out pulled9 && expect_err 'no image tagged "v9"'
expect_rc 1 "$ZTEE" image pull --oci layout:v1 --out pulled-k2 --key k2.pub && expect_err 'does not verify with any trusted key'
[ -e pulled-k2 ] && fail "pull: a refused pull left pulled-k2"
# A layer that is no file of the image's manifest.json: refused.
/usr/bin/python3 - "$PWD/layout" <<'PY'
import hashlib, json, sys
root = sys.argv[1]
def put(data):
    h = hashlib.sha256(data).hexdigest()
    open(f"{root}/blobs/sha256/{h}", "wb").write(data)
    return {"digest": f"sha256:{h}", "size": len(data)}
index = json.load(open(f"{root}/index.json"))
entry = next(m for m in index["manifests"] if m["annotations"]["org.opencontainers.image.ref.name"] == "v2")
man = json.loads(open(f"{root}/blobs/sha256/{entry['digest'][7:]}", "rb").read())
man["layers"].append(dict(put(b"#!/bin/sh\n"), mediaType="application/octet-stream",
                          annotations={"org.opencontainers.image.title": "evil.sh"}))
desc = put(json.dumps(man).encode())
index["manifests"].append(dict(entry, digest=desc["digest"], size=desc["size"],
                               annotations={"org.opencontainers.image.ref.name": "extra"}))
json.dump(index, open(f"{root}/index.json", "w"))
PY
expect_rc 1 "$ZTEE" image pull --oci layout:extra --out pulled4 && expect_err 'layer "evil.sh" is not a file of the image'
[ -e pulled4 ] && fail "pull: a refused pull left pulled4"
# A tampered blob in the layout: refused, nothing left behind.
rootfs_blob=layout/blobs/sha256/$(sha img/rootfs.ext4)
chmod u+w "$rootfs_blob"; printf 'x' | dd of="$rootfs_blob" bs=1 seek=10 conv=notrunc status=none
expect_rc 1 "$ZTEE" image pull --oci layout:v1 --out pulled3 && expect_err 'does not match its digest'
[ -e pulled3 ] && fail "pull: a refused pull left pulled3"
ls -a | grep -q '\.pull$' && fail "pull: a refused pull left its temporary directory"
# Push refuses an image whose files do not match its manifest.
expect_rc 1 "$ZTEE" image push tampered-rootfs --oci layout:bad && expect_err 'does not match its manifest'

# ---- SBOM: CycloneDX 1.5 schema and content -----------------------------------
# The default image's SBOM (read only: other tests boot from that image); one
# built before SBOMs existed gets one written from its rootfs here instead.
DEF=${ZTEE_IMAGE_DIR:-/var/lib/ztee/images/default}
if [ ! -r "$DEF/manifest.json" ]; then
  fail "no guest image at $DEF: run tools/dev setup (or set ZTEE_IMAGE_DIR)"
else
  installed=$(debugfs -R "cat /var/lib/dpkg/status" "$DEF/rootfs.ext4" 2>/dev/null | grep -c '^Status: install ok installed')
  agent_sha=$(mj "$DEF" 'm["agent_sha256"]')
  if [ "$(mj "$DEF" '"sbom" in m["artifacts"]')" = True ]; then
    sbom=$DEF/$(mj "$DEF" 'm["artifacts"]["sbom"]["path"]')
    [ "$(sha "$sbom")" = "$(mj "$DEF" 'm["artifacts"]["sbom"]["sha256"]')" ] || fail "$sbom does not match its manifest digest"
  else
    echo "NOTE: $DEF was built before SBOMs (no artifacts.sbom): checking one written from its rootfs"
    sbom=$tmp/sbom.cdx.json
    kpkg=$(mj "$DEF" 'm["kernel_package"]')
    /usr/bin/python3 "$HERE/../../tools/image-sbom.py" --rootfs "$DEF/rootfs.ext4" --name default --epoch 1704067200 \
      --kernel-package "$kpkg" --agent /dev/null >"$sbom" || fail "image-sbom.py failed"
    agent_sha=$(sha /dev/null)
  fi
  kcfg=()
  if [ "$(mj "$DEF" 'm.get("kernel_origin", "debian")')" = minimal ]; then
    kcfg=(--kernel-config-sha256 "$(mj "$DEF" 'm["kernel_config_sha256"]')")
  fi
  /usr/bin/python3 "$HERE/validate_sbom.py" "$HERE/schema" "$sbom" --agent-sha256 "$agent_sha" --packages "$installed" \
    "${kcfg[@]}" >"$tmp/out" 2>"$tmp/err" || fail "SBOM validation: $(cat "$tmp/err")"
  cat "$tmp/out"
  # The validator itself rejects what the schema forbids.
  /usr/bin/python3 -c 'import json,sys; b=json.load(open(sys.argv[1])); b["components"][0]["type"]="gadget"; json.dump(b,open(sys.argv[2],"w"))' \
    "$sbom" "$tmp/bad-sbom.json"
  /usr/bin/python3 "$HERE/validate_sbom.py" "$HERE/schema" "$tmp/bad-sbom.json" >/dev/null 2>&1 &&
    fail "validate_sbom.py accepts a component of type gadget"
fi

echo "supply chain: $fails failure(s)"
[ "$fails" = 0 ]
