#!/bin/bash
# The guest image's supply chain through the `ztee image` commands, on small
# fake images (no VM boots: every refusal happens before a VMM starts; the
# real boot from a signed image is image.trust's).
#   usage: supply_chain_test.sh ZTEE_BINARY TESTS_IMAGE_DIR
set -u
ZTEE=$1
HERE=$2
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

echo "supply chain: $fails failure(s)"
[ "$fails" = 0 ]
