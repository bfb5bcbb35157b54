# Shared by minimal_kernel_test.sh and debian_kernel_test.sh (sourced): check
# an image's manifest, boot it once with a script printing "name=value" lines,
# and compare them.
#   kernel_checks_init ZTEE IMG     sets fails, tmp (removed on exit)
#   check_image                     ztee image verify; sets want (manifest kernel_version)
#   boot_script SCRIPT [ARGS...]    ztee run --image IMG [ARGS] -- SCRIPT; output in $tmp/out
#   expect KEY VALUE                the output has the line KEY=VALUE
#   kernel_checks_done WHAT         exit 1 with the count of failures, else print OK
kernel_checks_init() {
  ZTEE=$1
  IMG=$2
  fails=0
  tmp=$(mktemp -d /tmp/ztee-kernel-test.XXXXXX)
  trap 'rm -rf "$tmp"' EXIT
}
fail() { echo "FAIL: $*" >&2; fails=$((fails + 1)); }
check_image() {
  "$ZTEE" image verify "$IMG" >"$tmp/verify" 2>&1 || fail "ztee image verify $IMG: $(cat "$tmp/verify")"
  want=$(sed -n 's/^  "kernel_version": "\(.*\)",$/\1/p' "$IMG/manifest.json")
}
boot_script() {
  local script=$1
  shift
  if ! "$ZTEE" run --image "$IMG" "$@" --timeout 120 -- "$script" >"$tmp/out" 2>"$tmp/err"; then
    fail "ztee run on $IMG failed: $(head -c 800 "$tmp/err")"
  fi
  cat "$tmp/out"
}
expect() {  # expect KEY VALUE
  grep -qxF "$1=$2" "$tmp/out" || fail "want $1=$2, got: $(grep "^$1=" "$tmp/out" || echo nothing)"
}
kernel_checks_done() {
  if [ "$fails" -ne 0 ]; then echo "$fails check(s) failed on $IMG"; exit 1; fi
  echo "OK: $1"
}
