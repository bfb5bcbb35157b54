#!/bin/bash
# A real boot on the minimal guest kernel (the default of `ztee image build`):
# its manifest and digests, the running kernel, exec and the overlay root,
# guest ASLR, and the interfaces the fragment leaves out (no modules, no
# io_uring, no bpf(), no user namespaces).
#   usage: minimal_kernel_test.sh ZTEE_BINARY
# The image: $ZTEE_MINIMAL_IMAGE_DIR, else the default image ($ZTEE_IMAGE_DIR
# or /var/lib/ztee/images/default). Prints "SKIP: ..." and passes when that
# image was built with --kernel debian (image.debian_kernel covers that one).
set -u
ZTEE=$1
IMG=${ZTEE_MINIMAL_IMAGE_DIR:-${ZTEE_IMAGE_DIR:-/var/lib/ztee/images/default}}
if [ ! -f "$IMG/manifest.json" ]; then
  echo "FAIL: no guest image at $IMG: run tools/dev setup (or set ZTEE_MINIMAL_IMAGE_DIR)" >&2
  exit 1
fi
if ! grep -q '"kernel_origin": "minimal"' "$IMG/manifest.json"; then
  echo "SKIP: the image at $IMG has Debian's kernel (built with --kernel debian); build the default with \`ztee image build --out $IMG\`, or set ZTEE_MINIMAL_IMAGE_DIR"
  exit 0
fi
. "$(dirname "$0")/kernel_lib.sh"
kernel_checks_init "$ZTEE" "$IMG"
check_image
case "$want" in *-ztee-minimal) ;; *) fail "manifest kernel_version '$want' is not a -ztee-minimal release" ;; esac
grep -q '"kernel_config_sha256": "[0-9a-f]\{64\}"' "$IMG/manifest.json" || fail "manifest has no kernel_config_sha256"

# One boot, several checks; each prints "name=value" for the assertions below.
script='
echo "release=$(uname -r)"
echo hello > /root/f && echo "overlay=$(cat /root/f)"
[ -e /proc/modules ] && echo modules=present || echo modules=absent
echo "aslr=$(cat /proc/sys/kernel/randomize_va_space)"
python3 -c "
import ctypes, errno, os
libc = ctypes.CDLL(None, use_errno=True)
def sc(name, nr, *args):
    r = libc.syscall(nr, *args)
    print(name + \"=\" + (\"ok\" if r >= 0 else errno.errorcode[ctypes.get_errno()]))
sc(\"io_uring_setup\", 425, 1, ctypes.create_string_buffer(120))
sc(\"bpf\", 321, 0, None, 0)
sc(\"unshare_user\", 272, 0x10000000)
"
'
boot_script "$script" --guest-aslr on
expect release "$want"
expect overlay hello
expect modules absent
expect aslr 2
expect io_uring_setup ENOSYS
expect bpf ENOSYS
expect unshare_user EINVAL

kernel_checks_done "minimal kernel $want boots and runs on $IMG"
