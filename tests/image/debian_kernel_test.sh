#!/bin/bash
# The Debian cloud kernel stays selectable (`ztee image build --kernel debian`):
# builds such an image (cached: a second run only checks it), then one real
# boot: the running kernel is the manifest's, the virtio drivers and overlayfs
# come in as modules from the initramfs, exec and the overlay root work.
#   usage: debian_kernel_test.sh ZTEE_BINARY
# The image: $ZTEE_DEBIAN_IMAGE_DIR, default /var/lib/ztee/images/debian (also
# the baseline of ztee-bench-kernels). It shares the default image's cache
# (rootfs and packages), so only the kernel package is downloaded.
set -u
ZTEE=$1
IMG=${ZTEE_DEBIAN_IMAGE_DIR:-/var/lib/ztee/images/debian}
DEF=${ZTEE_IMAGE_DIR:-/var/lib/ztee/images/default}
. "$(dirname "$0")/kernel_lib.sh"
kernel_checks_init "$ZTEE" "$IMG"

cache=${ZTEE_IMAGE_CACHE:-}
[ -n "$cache" ] || { [ -d "$DEF/.cache" ] && cache=$DEF/.cache; }
if ! ZTEE_IMAGE_CACHE=$cache "$ZTEE" image build --kernel debian --out "$IMG" >"$tmp/build" 2>&1; then
  tail -n 20 "$tmp/build" >&2
  echo "FAIL: ztee image build --kernel debian --out $IMG failed" >&2
  exit 1
fi
tail -n 1 "$tmp/build"
check_image
case "$want" in *-cloud-amd64) ;; *) fail "manifest kernel_version '$want' is not a Debian cloud kernel" ;; esac
grep -q '"kernel_origin"' "$IMG/manifest.json" && fail "a Debian-kernel manifest records a kernel_origin"

script='
echo "release=$(uname -r)"
echo hello > /root/f && echo "overlay=$(cat /root/f)"
for m in virtio_blk virtio_console virtio_net overlay; do
  grep -q "^$m " /proc/modules && echo "module_$m=loaded" || echo "module_$m=missing"
done
'
boot_script "$script"
expect release "$want"
expect overlay hello
for m in virtio_blk virtio_console virtio_net overlay; do expect "module_$m" loaded; done

kernel_checks_done "Debian kernel $want boots and runs on $IMG"
