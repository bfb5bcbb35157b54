#!/usr/bin/env bash
# Builds libztee's minimal guest kernel from Debian's kernel source package
# (linux-source-6.1): `make tinyconfig`, then the fragment (default
# guest/kernel/ztee-minimal.config), then olddefconfig; every option the fragment
# names must come out as it says. Invoked by tools/image-build.sh --kernel minimal;
# usable on its own:
#
#   tools/kernel-build.sh --config FRAGMENT --cache DIR [--force]
#
# The result is cached in DIR/<digest>/ where the digest covers the fragment,
# the source package's version, the compiler's version and this recipe's
# version; a cached kernel is not rebuilt. On success the last line on stdout
# is that directory, holding vmlinuz (bzImage), vmlinux (stripped ELF, PVH
# entry), System.map (the kernel has no kallsyms: this names the address in a
# guest oops or a profile), config, release (uname -r), source_version and
# config_sha256.
# The compile runs under `nice -n 10` with -j$(nproc) and prints progress.
set -euo pipefail

RECIPE_VERSION=2  # 2: System.map kept
SRC_PKG=linux-source-6.1
FRAG=
CACHE=
FORCE=0
EPOCH=${SOURCE_DATE_EPOCH:-1704067200}

die() { echo "kernel-build: error: $*" >&2; exit 1; }
log() { echo "kernel-build: $*" >&2; }

while [[ $# -gt 0 ]]; do
  case "$1" in
    --config) FRAG=${2:?--config needs a file}; shift 2 ;;
    --cache) CACHE=${2:?--cache needs a directory}; shift 2 ;;
    --force) FORCE=1; shift ;;
    -h|--help) sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument: $1 (see --help)" ;;
  esac
done
[[ -n "$FRAG" ]] || FRAG=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/guest/kernel/ztee-minimal.config
[[ -f "$FRAG" ]] || die "kernel config fragment not found: $FRAG"
[[ -n "$CACHE" ]] || CACHE=/var/cache/ztee/kernels

SRC_VERSION=$(dpkg-query -W -f='${db:Status-Status} ${Version}' "$SRC_PKG" 2>/dev/null | awk '$1 == "installed" { print $2 }') || true
[[ -n "$SRC_VERSION" ]] ||
  die "$SRC_PKG is not installed: apt-get install $SRC_PKG bc bison flex libelf-dev libssl-dev make gcc xz-utils"
TARBALL=/usr/src/$SRC_PKG.tar.xz
[[ -f $TARBALL ]] || die "$TARBALL missing: apt-get install --reinstall $SRC_PKG"
for t in make:make gcc:gcc bc:bc bison:bison flex:flex xz:xz-utils objcopy:binutils perl:perl; do
  command -v "${t%%:*}" >/dev/null 2>&1 || die "${t%%:*} not found: apt-get install ${t#*:}"
done
for h in gelf.h:libelf-dev openssl/opensslv.h:libssl-dev; do
  [[ -f /usr/include/${h%%:*} ]] || die "/usr/include/${h%%:*} not found: apt-get install ${h#*:}"
done
CC_VERSION=$(gcc --version | head -n1)
DIGEST=$( { echo "recipe=$RECIPE_VERSION"; echo "source=$SRC_PKG=$SRC_VERSION"; echo "cc=$CC_VERSION";
            cat "$FRAG"; } | sha256sum | cut -c1-16)
OUT=$CACHE/$DIGEST
if [[ $FORCE -eq 1 ]]; then rm -rf "$OUT"; fi
if [[ -f $OUT/.done ]]; then
  log "cached: $OUT (kernel $(cat "$OUT/release"), $SRC_PKG $SRC_VERSION)"
  echo "$OUT"; exit 0
fi

mkdir -p "$CACHE"
exec 8>"$CACHE/.lock-$DIGEST"
flock -n 8 || { log "another build of $DIGEST is running; waiting for it"; flock 8; }
if [[ -f $OUT/.done ]]; then echo "$OUT"; exit 0; fi
rm -rf "$OUT"
WORK=$(mktemp -d "$CACHE/.build-$DIGEST.XXXXXX")
MAKE_PID=
cleanup() { [[ -z $MAKE_PID ]] || kill -- "$MAKE_PID" 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT
trap 'exit 130' INT TERM

log "unpacking $TARBALL ($SRC_PKG $SRC_VERSION)"
tar -C "$WORK" -xf "$TARBALL"
KSRC=$WORK/$SRC_PKG
[[ -f $KSRC/Makefile ]] || die "$TARBALL did not unpack to $SRC_PKG/"
export KBUILD_BUILD_TIMESTAMP="@$EPOCH" KBUILD_BUILD_USER=ztee KBUILD_BUILD_HOST=ztee KBUILD_BUILD_VERSION=1
MK=(make -C "$KSRC" ARCH=x86_64 LOCALVERSION=-ztee-minimal)

log "configuring: tinyconfig + $(basename "$FRAG")"
"${MK[@]}" -s tinyconfig >"$WORK/config.log" 2>&1 || die "make tinyconfig failed: $(tail -n5 "$WORK/config.log")"
(cd "$KSRC" && scripts/kconfig/merge_config.sh -m .config "$FRAG") >>"$WORK/config.log" 2>&1 ||
  die "merge_config.sh failed: $(tail -n5 "$WORK/config.log")"
"${MK[@]}" -s olddefconfig >>"$WORK/config.log" 2>&1 || die "make olddefconfig failed: $(tail -n5 "$WORK/config.log")"
# Every option the fragment names must have survived the dependency resolution.
bad=()
while IFS= read -r line; do
  if [[ $line =~ ^(CONFIG_[A-Z0-9_]+)=(.*)$ ]]; then
    want="${BASH_REMATCH[1]}=${BASH_REMATCH[2]}"
    grep -qxF "$want" "$KSRC/.config" || bad+=("$want (got: $(grep -E "^(# )?${BASH_REMATCH[1]}[= ]" "$KSRC/.config" || echo unset))")
  elif [[ $line =~ ^#\ (CONFIG_[A-Z0-9_]+)\ is\ not\ set$ ]]; then
    ! grep -q "^${BASH_REMATCH[1]}=" "$KSRC/.config" || bad+=("${BASH_REMATCH[1]} unset (got: $(grep "^${BASH_REMATCH[1]}=" "$KSRC/.config"))")
  fi
done < "$FRAG"
[[ ${#bad[@]} -eq 0 ]] || die "the fragment's options did not all apply (missing dependency?): ${bad[*]}"

JOBS=$(nproc)
log "compiling (nice -n 10, -j$JOBS; takes minutes: ~5 min on an idle 2-core machine, up to 30 min on a busy one)"
start=$(date +%s)
nice -n 10 "${MK[@]}" -j"$JOBS" bzImage >"$WORK/build.log" 2>&1 &
MAKE_PID=$!
while kill -0 "$MAKE_PID" 2>/dev/null; do
  sleep 15
  kill -0 "$MAKE_PID" 2>/dev/null || break
  log "compiling: $(find "$KSRC" -name '*.o' | wc -l) objects after $(( $(date +%s) - start )) s"
done
rc=0; wait "$MAKE_PID" || rc=$?
MAKE_PID=
[[ $rc -eq 0 ]] || die "kernel compile failed (exit $rc): $(grep -m5 -E 'error|Error' "$WORK/build.log" || tail -n5 "$WORK/build.log")"
log "compiled in $(( $(date +%s) - start )) s"

mkdir -p "$WORK/out"
cp "$KSRC/arch/x86/boot/bzImage" "$WORK/out/vmlinuz"
objcopy --strip-all "$KSRC/vmlinux" "$WORK/out/vmlinux"
cp "$KSRC/System.map" "$WORK/out/System.map"
cp "$KSRC/.config" "$WORK/out/config"
"${MK[@]}" -s kernelrelease > "$WORK/out/release"
echo "$SRC_VERSION" > "$WORK/out/source_version"
sha256sum "$FRAG" | cut -d' ' -f1 > "$WORK/out/config_sha256"
echo "$DIGEST" > "$WORK/out/digest"
touch "$WORK/out/.done"
mv "$WORK/out" "$OUT"
log "kernel $(cat "$OUT/release") ready: $OUT"
echo "$OUT"
