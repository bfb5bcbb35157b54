#!/usr/bin/env bash
# Builds a libztee guest image: kernel, initramfs (ztee-agent as /init plus the
# virtio modules it needs), a read-only ext4 root filesystem and its CycloneDX
# SBOM (sbom.cdx.json, written by image-sbom.py beside this script), described
# by manifest.json. Invoked by `ztee image build`; usable on its own:
#
#   tools/image-build.sh --out DIR --agent PATH/TO/ztee-agent [--force]
#
# Options:
#   --out DIR        image directory (default /var/lib/ztee/images/default)
#   --agent PATH     the static ztee-agent binary (required)
#   --name NAME      image name recorded in the manifest (default: basename of DIR)
#   --suite SUITE    Debian suite (default bookworm)
#   --include PKGS   comma-separated extra packages for the rootfs (default python3)
#   --mirror LINE    apt source for mmdebstrap (a sources.list line or file),
#                    repeatable (default: the host's Debian apt sources)
#   --cache DIR      cache directory (default $ZTEE_IMAGE_CACHE or DIR/.cache)
#   --no-vmlinux     do not extract the uncompressed vmlinux
#   --kernel minimal|debian
#                    minimal (default): built from Debian's linux-source-6.1
#                    with guest/kernel/ztee-minimal.config on top of tinyconfig
#                    (kernel-build.sh beside this script; minutes the first
#                    time, then cached), everything built in, no modules.
#                    debian: Debian's cloud kernel package, virtio drivers as
#                    modules in the initramfs
#   --kernel-cache DIR
#                    where minimal kernels are cached (default
#                    $ZTEE_KERNEL_CACHE or /var/cache/ztee/kernels)
#   --force          rebuild everything, ignoring caches
#   --verify-reproducible
#                    after the build, rebuild from scratch (fresh cache, same
#                    inputs) in a temporary directory and compare every file
#                    byte for byte; exit 1 on a difference
#
# Caching: the kernel (package or build) and the rootfs (keyed by suite, variant, package
# list, mirrors and ROOTFS_RECIPE_VERSION) are cached; a rerun with an unchanged
# agent only re-checks them, a changed agent rebuilds the initramfs and the
# manifest. Artifacts are built in a temporary directory and renamed into
# place; the manifest is removed first and written last, so an interrupted
# build leaves no manifest rather than a manifest that lies.
set -euo pipefail

SCRIPT_VERSION=2
# Bump when the rootfs recipe (post-processing below) changes.
ROOTFS_RECIPE_VERSION=2

OUT=/var/lib/ztee/images/default
AGENT=
NAME=
SUITE=bookworm
VARIANT=essential
INCLUDE=python3
MIRRORS=()
CACHE=${ZTEE_IMAGE_CACHE:-}
FORCE=0
REPRO=0
VMLINUX=1
KERNEL=minimal
KERNEL_CACHE=${ZTEE_KERNEL_CACHE:-/var/cache/ztee/kernels}
KERNEL_META=linux-image-cloud-amd64
# Modules loaded by the agent, in this order after their dependencies.
MODULES=(virtio_mmio virtio_blk virtio_console virtio-rng virtio_net overlay)
# Extra kernel arguments the image wants (recorded in the manifest; the runtime appends
# them to its own). cryptomgr.notests skips the crypto self-tests: ~0.35 s of a TCG boot.
KERNEL_CMDLINE="cryptomgr.notests"
# Fixed timestamp for reproducible artifacts (2024-01-01T00:00:00Z).
EPOCH=${SOURCE_DATE_EPOCH:-1704067200}

die() { echo "image-build: error: $*" >&2; exit 1; }
log() { echo "image-build: $*" >&2; }

need() {  # need <command> <package>
  command -v "$1" >/dev/null 2>&1 || die "$1 not found: apt-get install $2"
}

while [[ $# -gt 0 ]]; do
  case "$1" in
    --out) OUT=${2:?--out needs a directory}; shift 2 ;;
    --agent) AGENT=${2:?--agent needs a path}; shift 2 ;;
    --name) NAME=${2:?--name needs a value}; shift 2 ;;
    --suite) SUITE=${2:?--suite needs a value}; shift 2 ;;
    --include) INCLUDE=${2?--include needs a value}; shift 2 ;;
    --mirror) MIRRORS+=("${2:?--mirror needs a value}"); shift 2 ;;
    --cache) CACHE=${2:?--cache needs a directory}; shift 2 ;;
    --no-vmlinux) VMLINUX=0; shift ;;
    --kernel) KERNEL=${2:?--kernel needs minimal or debian}; shift 2 ;;
    --kernel-cache) KERNEL_CACHE=${2:?--kernel-cache needs a directory}; shift 2 ;;
    --force) FORCE=1; shift ;;
    --verify-reproducible) REPRO=1; shift ;;
    -h|--help) sed -n '2,40p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument: $1 (see --help)" ;;
  esac
done

[[ $KERNEL == debian || $KERNEL == minimal ]] || die "--kernel must be minimal or debian, not $KERNEL"
[[ -n "$AGENT" ]] || die "--agent PATH/TO/ztee-agent is required"
[[ -f "$AGENT" ]] || die "agent binary not found at $AGENT: build it first (cmake --build build --target ztee-agent)"
[[ $(id -u) -eq 0 ]] || die "must run as root (mmdebstrap and device nodes need it)"
if [[ ${#MIRRORS[@]} -eq 0 ]]; then
  # The host's own Debian apt sources (deb822 or one-line format), so the image
  # comes from the same mirror as the host's packages; other repositories the
  # host may list are left out.
  for f in /etc/apt/sources.list.d/debian.sources /etc/apt/sources.list; do
    if [[ -s $f ]] && grep -qE '^[[:space:]]*(URIs:|deb[[:space:]])' "$f"; then MIRRORS=("$f"); break; fi
  done
  [[ ${#MIRRORS[@]} -gt 0 ]] ||
    die "no Debian apt sources found in /etc/apt/sources.list.d/debian.sources or /etc/apt/sources.list: pass --mirror 'deb URL $SUITE main'"
fi

need apt-get apt
need apt-cache apt
need dpkg-deb dpkg
need mmdebstrap mmdebstrap
need mkfs.ext4 e2fsprogs
need cpio cpio
need modprobe kmod
need depmod kmod
need sha256sum coreutils
need debugfs e2fsprogs
PYTHON=/usr/bin/python3
[[ -x $PYTHON ]] || die "/usr/bin/python3 not found (writes the SBOM): apt-get install python3"
SBOM_SCRIPT=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/image-sbom.py
[[ -f $SBOM_SCRIPT ]] || die "image-sbom.py not found beside $0: reinstall ztee"
need mknod coreutils

# The agent must be a static executable: it runs as PID 1 before any library exists.
if command -v file >/dev/null 2>&1; then
  file -L "$AGENT" | grep 'statically linked\|static-pie linked' >/dev/null ||
    die "agent $AGENT is not a static executable"
fi

mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
AGENT=$(cd "$(dirname "$AGENT")" && pwd)/$(basename "$AGENT")
# The host<->agent protocol it speaks: the runtime refuses an image whose agent
# speaks another one (instead of a boot that never completes).
AGENT_PROTOCOL=$("$AGENT" --protocol) && [[ $AGENT_PROTOCOL =~ ^[0-9]+$ ]] ||
  die "$AGENT --protocol did not print a protocol version: is it a ztee-agent of this tree?"
[[ -n "$NAME" ]] || NAME=$(basename "$OUT")
[[ -n "$CACHE" ]] || CACHE=$OUT/.cache
mkdir -p "$CACHE"
CACHE=$(cd "$CACHE" && pwd)

# One build at a time per image directory.
exec 9>"$OUT/.lock"
command -v flock >/dev/null 2>&1 && { flock -n 9 || die "another build holds $OUT/.lock"; }

# Builds that share a cache (--cache or $ZTEE_IMAGE_CACHE) take turns.
exec 7>"$CACHE/.lock"
if command -v flock >/dev/null 2>&1 && ! flock -n 7; then
  log "another build is using the cache $CACHE; waiting for it"
  flock 7
fi

TMP=$(mktemp -d "$OUT/.build.XXXXXX")
cleanup() { rm -rf "$TMP"; }
trap cleanup EXIT
trap 'exit 130' INT TERM

sha256() { sha256sum "$1" | cut -d' ' -f1; }

# ---------------------------------------------------------------- kernel
SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
if [[ $KERNEL == minimal ]]; then
  KBUILD=$SCRIPT_DIR/kernel-build.sh
  [[ -f $KBUILD ]] || die "kernel-build.sh not found beside $0: reinstall ztee"
  FRAG=
  for f in "$SCRIPT_DIR/kernel/ztee-minimal.config" "$SCRIPT_DIR/../guest/kernel/ztee-minimal.config"; do
    [[ -n $FRAG || ! -f $f ]] || FRAG=$f
  done
  [[ -n $FRAG ]] || die "ztee-minimal.config not found in $SCRIPT_DIR/kernel/ or the source tree's guest/kernel/: reinstall ztee"
  kargs=(--config "$FRAG" --cache "$KERNEL_CACHE")
  [[ $FORCE -eq 0 ]] || kargs+=(--force)
  MKDIR=$(bash "$KBUILD" "${kargs[@]}" | tail -n1) || die "building the minimal kernel failed (see above)"
  [[ -f $MKDIR/.done ]] || die "kernel-build.sh gave no kernel directory (got: $MKDIR)"
  KVER=$(cat "$MKDIR/release")
  KPKG=linux-source-6.1
  KPKG_VERSION=$(cat "$MKDIR/source_version")
  KDOC=/usr/share/doc
  KCONFIG_SHA=$(sha256 "$MKDIR/config")
  MODULES=()
  cp "$MKDIR/vmlinuz" "$TMP/vmlinuz"
else
log "resolving kernel package ($KERNEL_META)"
KPKG=$(apt-cache depends "$KERNEL_META" 2>/dev/null |
       awk '$1 == "Depends:" && $2 ~ /^linux-image-.*-cloud-amd64$/ { print $2; exit }') || true
[[ -n "$KPKG" ]] || die "cannot resolve $KERNEL_META: is $SUITE in the host's apt sources? run apt-get update"
KVER=${KPKG#linux-image-}
KDIR=$CACHE/kernel/$KPKG
if [[ $FORCE -eq 1 ]]; then rm -rf "$KDIR"; fi
if [[ ! -f "$KDIR/.done" ]]; then
  log "downloading $KPKG"
  rm -rf "$KDIR"; mkdir -p "$KDIR/deb"
  (cd "$KDIR/deb" && apt-get download -q -o APT::Sandbox::User=root "$KPKG" >&2) ||
    die "apt-get download $KPKG failed (check the apt sources and network)"
  deb=$(ls "$KDIR"/deb/*.deb | head -n1)
  dpkg-deb -x "$deb" "$KDIR/x"
  dpkg-deb -f "$deb" Version > "$KDIR/version"
  [[ -f "$KDIR/x/boot/vmlinuz-$KVER" ]] || die "$KPKG has no boot/vmlinuz-$KVER"
  # The .deb ships no modules.dep (dpkg's postinst makes it); make one here.
  depmod -b "$KDIR/x" "$KVER" || die "depmod failed for $KVER"
  touch "$KDIR/.done"
fi
KPKG_VERSION=$(cat "$KDIR/version")
KDOC=$KDIR/x/usr/share/doc
cp "$KDIR/x/boot/vmlinuz-$KVER" "$TMP/vmlinuz"
fi

# vmlinux: the uncompressed ELF inside the bzImage (same idea as the kernel's
# scripts/extract-vmlinux, using the setup header to find the payload).
extract_vmlinux() {  # extract_vmlinux <bzImage> <out>
  local img=$1 out=$2 setup po pl magic dec
  setup=$(( ($(od -An -tu1 -j $((0x1f1)) -N1 "$img") + 1) * 512 ))
  po=$(od -An -tu4 -j $((0x248)) -N4 "$img"); pl=$(od -An -tu4 -j $((0x24c)) -N4 "$img")
  magic=$(od -An -tx1 -j $((setup + po)) -N4 "$img" | tr -d ' \n')
  case "$magic" in
    02214c18) dec="lz4 -dc" ;;
    28b52ffd) dec="zstd -dcq" ;;
    fd377a58) dec="xz -dcq" ;;
    1f8b08*) dec="gzip -dcq" ;;
    *) log "warning: unknown kernel compression (magic $magic); skipping vmlinux"; return 1 ;;
  esac
  command -v "${dec%% *}" >/dev/null 2>&1 ||
    { log "warning: ${dec%% *} not found; skipping vmlinux"; return 1; }
  tail -c +$((setup + po + 1)) "$img" | head -c "$pl" | $dec > "$out" 2>/dev/null || true
  [[ "$(head -c4 "$out" | od -An -tx1 | tr -d ' \n')" == 7f454c46 ]] ||
    { log "warning: vmlinux extraction failed; skipping"; rm -f "$out"; return 1; }
}
HAVE_VMLINUX=0
if [[ $VMLINUX -eq 1 && $KERNEL == minimal ]]; then
  cp "$MKDIR/vmlinux" "$TMP/vmlinux"; HAVE_VMLINUX=1
elif [[ $VMLINUX -eq 1 ]] && extract_vmlinux "$TMP/vmlinuz" "$TMP/vmlinux"; then HAVE_VMLINUX=1; fi

# ---------------------------------------------------------------- initramfs
log "building initramfs (agent $(basename "$AGENT"), modules ${MODULES[*]:-none: all built in})"
IR=$TMP/initramfs
mkdir -p "$IR"/{dev,proc,sys,lower,rw,newroot,etc/ztee,lib/modules}
mknod -m 600 "$IR/dev/console" c 5 1
install -m 0755 "$AGENT" "$IR/init"
# Debug info only slows the boot (the kernel copies every initramfs byte).
if command -v strip >/dev/null 2>&1; then strip --strip-all "$IR/init"; fi
: > "$IR/etc/ztee/modules"
declare -A SEEN=()
for m in ${MODULES[@]+"${MODULES[@]}"}; do
  deps=$(modprobe -d "$KDIR/x" -S "$KVER" --show-depends "$m" 2>&1) ||
    die "module $m not found for $KVER: $deps"
  while read -r kind path _; do
    [[ "$kind" == insmod ]] || continue   # "builtin X" needs no loading
    ko=$(basename "$path")
    [[ -z "${SEEN[$ko]:-}" ]] || continue
    SEEN[$ko]=1
    install -m 0644 "$path" "$IR/lib/modules/$ko"
    echo "$ko" >> "$IR/etc/ztee/modules"
  done <<< "$deps"
done
find "$IR" -exec touch -h -d "@$EPOCH" {} +
(cd "$IR" && find . -mindepth 1 | LC_ALL=C sort |
   cpio -o -H newc -R 0:0 --reproducible --quiet 2>&1 >"$TMP/initramfs.cpio" |
   { grep -v '^[0-9]* blocks$' >&2 || true; })
rm -rf "$IR"

# ---------------------------------------------------------------- rootfs
# mkfs.ext4 -d copies each file's ctime (when this build wrote it: no option
# sets it) and atime (when something last read it). Sets both to EPOCH in
# every used inode, with the superblock's write time faked to EPOCH too.
fix_inode_times() {  # fix_inode_times <ext4 image>
  dumpe2fs "$1" 2>/dev/null | awk -v epoch="$EPOCH" '
    /^Inodes per group:/ { ipg = $4 }
    /^Group [0-9]+:/ { g = $2; sub(":", "", g) }
    /^  Free inodes:/ {
      split("", free); s = $0; sub(/^  Free inodes: */, "", s); n = split(s, parts, /, */)
      for (k = 1; k <= n; k++) {
        if (parts[k] == "") continue
        m = split(parts[k], r, "-"); lo = r[1] + 0; hi = (m > 1 ? r[2] : r[1]) + 0
        for (i = lo; i <= hi; i++) free[i] = 1
      }
      for (i = g * ipg + 1; i <= (g + 1) * ipg; i++)
        if (!(i in free) && (i == 2 || i >= 11)) printf "sif <%d> ctime @%s\nsif <%d> atime @%s\n", i, epoch, i, epoch
    }' > "$TMP/inode-times.cmd"
  [[ -s "$TMP/inode-times.cmd" ]] || die "dumpe2fs $1 listed no used inodes"
  E2FSPROGS_FAKE_TIME=$EPOCH debugfs -w -f "$TMP/inode-times.cmd" "$1" >/dev/null 2>"$TMP/inode-times.err" ||
    die "debugfs could not set the inode times of $1: $(tail -n3 "$TMP/inode-times.err")"
  if grep -v '^debugfs ' "$TMP/inode-times.err" | grep . >/dev/null; then
    die "debugfs could not set the inode times of $1: $(grep -v '^debugfs ' "$TMP/inode-times.err" | head -n3)"
  fi
}
KEY=$(printf '%s\n' "suite=$SUITE" "variant=$VARIANT" "include=$INCLUDE" \
        "recipe=$ROOTFS_RECIPE_VERSION" "${MIRRORS[@]}" \
        "$(for m in "${MIRRORS[@]}"; do [[ -f $m ]] && cat "$m"; done)" | sha256sum | cut -c1-16)
RCACHE=$CACHE/rootfs-$KEY.ext4
if [[ $FORCE -eq 1 ]]; then rm -f "$RCACHE" "$RCACHE.sha256"; fi
if [[ ! -f "$RCACHE" || ! -f "$RCACHE.sha256" ]]; then
  log "building rootfs $SUITE/$VARIANT +${INCLUDE:-nothing} (key $KEY; takes minutes)"
  ROOT=$TMP/root
  args=(--variant="$VARIANT" --mode=root --aptopt='Acquire::Retries "3"' --aptopt='APT::Sandbox::User "root"')
  [[ -n "$INCLUDE" ]] && args+=(--include="$INCLUDE")
  SOURCE_DATE_EPOCH=$EPOCH mmdebstrap "${args[@]}" "$SUITE" "$ROOT" "${MIRRORS[@]}" </dev/null >&2 ||
    die "mmdebstrap failed (see its output above)"
  # What the agent and ordinary programs expect to find.
  echo ztee > "$ROOT/etc/hostname"
  printf '127.0.0.1\tlocalhost\n127.0.1.1\tztee\n::1\tlocalhost ip6-localhost ip6-loopback\n' > "$ROOT/etc/hosts"
  grep -q '^root:' "$ROOT/etc/passwd" || die "rootfs has no root user in /etc/passwd"
  mkdir -p "$ROOT"/{tmp,root,lower,rw,proc,sys,dev,run}
  chmod 1777 "$ROOT/tmp"; chmod 0700 "$ROOT/root"
  : > "$ROOT/etc/machine-id"
  # Caches and logs only make the image bigger and less reproducible.
  rm -rf "$ROOT"/var/lib/apt/lists/* "$ROOT"/var/cache/apt/*.bin "$ROOT"/var/cache/apt/archives/*.deb \
         "$ROOT"/var/log/*.log "$ROOT"/var/log/apt/* "$ROOT"/var/cache/ldconfig/aux-cache
  find "$ROOT" -xdev -newermt "@$EPOCH" -exec touch -h -d "@$EPOCH" {} + 2>/dev/null || true
  used_mb=$(du -sm --apparent-size "$ROOT" | cut -f1)
  size_mb=$(( used_mb + used_mb / 5 + 64 ))
  uuid=$(printf '%s' "$KEY" | sha256sum | sed -E 's/^(.{8})(.{4})(.{4})(.{4})(.{12}).*/\1-\2-\3-\4-\5/')
  E2FSPROGS_FAKE_TIME=$EPOCH mkfs.ext4 -q -F -L ztee-root -U "$uuid" -E "hash_seed=$uuid" \
    -O ^has_journal -m 0 -b 4096 -d "$ROOT" "$TMP/rootfs.ext4" "${size_mb}M" ||
    die "mkfs.ext4 -d failed"
  fix_inode_times "$TMP/rootfs.ext4"
  rm -rf "$ROOT"
  sha256 "$TMP/rootfs.ext4" > "$TMP/rootfs.ext4.sha256"
  mv -f "$TMP/rootfs.ext4" "$RCACHE"
  mv -f "$TMP/rootfs.ext4.sha256" "$RCACHE.sha256"
fi
ROOTFS_SHA=$(cat "$RCACHE.sha256")

# ---------------------------------------------------------------- SBOM
log "writing the SBOM (CycloneDX 1.5) of the rootfs, kernel and agent"
sbom_kernel=(--kernel-package "$KPKG=$KPKG_VERSION" --kernel-arch amd64 --kernel-doc "$KDOC")
# The minimal kernel's component is the source package it is built from (architecture all).
[[ $KERNEL == debian ]] || sbom_kernel=(--kernel-package "$KPKG=$KPKG_VERSION" --kernel-arch all
                                       --kernel-doc "$KDOC" --kernel-config-sha256 "$KCONFIG_SHA")
"$PYTHON" "$SBOM_SCRIPT" --rootfs "$RCACHE" --name "$NAME" --epoch "$EPOCH" "${sbom_kernel[@]}" \
  --agent "$AGENT" --builder-version "$SCRIPT_VERSION" > "$TMP/sbom.cdx.json" ||
  die "writing the SBOM failed (see above)"

# ---------------------------------------------------------------- manifest
artifact() {  # artifact <key> <file> <size-of-path> [extra json] [sha256]
  printf '    "%s": {"path": "%s", "sha256": "%s", "size": %s%s}' \
    "$1" "$2" "${5:-$(sha256 "$3")}" "$(stat -c %s "$3")" "${4:-}"
}
{
  printf '{\n  "format": 1,\n  "name": "%s",\n' "$NAME"
  printf '  "kernel_version": "%s",\n  "kernel_package": "%s=%s",\n' "$KVER" "$KPKG" "$KPKG_VERSION"
  # Recorded for the minimal kernel only for now, so that a Debian-kernel image's
  # manifest stays byte-identical to earlier builds (an absent origin means debian).
  if [[ $KERNEL == minimal ]]; then
    printf '  "kernel_origin": "%s",\n  "kernel_config_sha256": "%s",\n' "$KERNEL" "$KCONFIG_SHA"
  fi
  printf '  "cmdline": "%s",\n' "$KERNEL_CMDLINE"
  printf '  "suite": "%s",\n  "variant": "%s",\n  "include": "%s",\n' "$SUITE" "$VARIANT" "$INCLUDE"
  printf '  "agent_sha256": "%s",\n  "agent_protocol": %s,\n  "builder_version": %s,\n' "$(sha256 "$AGENT")" \
    "$AGENT_PROTOCOL" "$SCRIPT_VERSION"
  printf '  "source_date_epoch": %s,\n' "$EPOCH"
  # What two builds of the same inputs may not share, and why (--verify-reproducible
  # checks the rest on this host).
  printf '  "non_reproducible": [{"artifact": "rootfs", "when": "built on another host filesystem", "why": %s}],\n' \
    '"mkfs.ext4 -d (e2fsprogs 1.47.0) adds files in the readdir order of the build directory, which on ext4 follows a per-filesystem hash seed: the same files, inode numbers and directory blocks can differ between build hosts"'
  printf '  "artifacts": {\n'
  artifact kernel vmlinuz "$TMP/vmlinuz"; printf ',\n'
  if [[ $HAVE_VMLINUX -eq 1 ]]; then artifact vmlinux vmlinux "$TMP/vmlinux" ', "boot": "pvh"'; printf ',\n'; fi
  artifact initramfs initramfs.cpio "$TMP/initramfs.cpio" ', "format": "newc"'; printf ',\n'
  artifact rootfs rootfs.ext4 "$RCACHE" ', "format": "ext4"' "$ROOTFS_SHA"; printf ',\n'
  artifact sbom sbom.cdx.json "$TMP/sbom.cdx.json" ', "format": "cyclonedx-json", "spec_version": "1.5"'; printf '\n'
  printf '  }\n}\n'
} > "$TMP/manifest.json"

# ---------------------------------------------------------------- reproducibility
# Rebuilds from the same inputs with a fresh cache and compares every file.
verify_reproducible() {
  local r=$TMP/repro f differ=0
  local args=(--out "$r/image" --agent "$AGENT" --name "$NAME" --suite "$SUITE" --include "$INCLUDE"
              --cache "$r/cache" --kernel "$KERNEL" --kernel-cache "$r/kernels" --force)
  for f in "${MIRRORS[@]}"; do args+=(--mirror "$f"); done
  [[ $VMLINUX -eq 1 ]] || args+=(--no-vmlinux)
  log "reproducibility: rebuilding from scratch in $r"
  SOURCE_DATE_EPOCH=$EPOCH bash "${BASH_SOURCE[0]}" "${args[@]}" || die "reproducibility: the second build failed"
  for f in manifest.json vmlinuz vmlinux initramfs.cpio rootfs.ext4 sbom.cdx.json; do
    [[ -e "$OUT/$f" || -e "$r/image/$f" ]] || continue
    if cmp -s "$OUT/$f" "$r/image/$f"; then
      log "reproducibility: $f identical ($(sha256 "$OUT/$f"))"
    else
      log "reproducibility: $f DIFFERS: $(cmp "$OUT/$f" "$r/image/$f" 2>&1 | head -n1)"
      differ=1
    fi
  done
  [[ $differ -eq 0 ]] || die "reproducibility: two builds of the same inputs differ (second build kept nowhere; rerun to inspect with --out)"
  log "reproducibility: two builds of the same inputs are byte-identical"
}

# ---------------------------------------------------------------- install
same() { cmp -s "$TMP/$1" "$OUT/$1"; }
if same manifest.json && same vmlinuz && same initramfs.cpio && same sbom.cdx.json &&
   { [[ $HAVE_VMLINUX -eq 0 ]] || same vmlinux; } && [[ "$OUT/rootfs.ext4" -ef "$RCACHE" ]]; then
  log "image up to date: $OUT (kernel $KVER, rootfs key $KEY)"
  [[ $REPRO -eq 0 ]] || verify_reproducible
  exit 0
fi
# Remove the manifest first: from here until it is rewritten the image is
# "not built", never "built but inconsistent".
rm -f "$OUT/manifest.json"
for f in vmlinuz initramfs.cpio sbom.cdx.json; do mv -f "$TMP/$f" "$OUT/$f"; done
if [[ $HAVE_VMLINUX -eq 1 ]]; then mv -f "$TMP/vmlinux" "$OUT/vmlinux"; else rm -f "$OUT/vmlinux"; fi
# The rootfs is shared with the cache by hard link when possible (QEMU opens it read-only).
if [[ ! "$OUT/rootfs.ext4" -ef "$RCACHE" ]]; then
  ln -f "$RCACHE" "$TMP/rootfs.ext4" 2>/dev/null || cp --sparse=always "$RCACHE" "$TMP/rootfs.ext4"
  mv -f "$TMP/rootfs.ext4" "$OUT/rootfs.ext4"
fi
mv -f "$TMP/manifest.json" "$OUT/manifest.json"
log "image ready: $OUT (kernel $KVER, rootfs key $KEY)"
[[ $REPRO -eq 0 ]] || verify_reproducible
