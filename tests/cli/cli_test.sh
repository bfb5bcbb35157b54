#!/bin/bash
# Tests of the `ztee` CLI. usage: cli_test.sh ZTEE_BINARY (usage|run)
#   usage: no VM: help, version, doctor, bad usage
#   run:   boots real sandboxes (needs the guest image; fails without it)
set -u
ZTEE=$1
WHAT=${2:-usage}
fails=0
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

fail() { echo "FAIL: $*" >&2; fails=$((fails + 1)); }
# expect_rc WANT CMD... : runs CMD with stdout/stderr into $tmp/out, $tmp/err.
expect_rc() {
  local want=$1; shift
  "$@" >"$tmp/out" 2>"$tmp/err"
  local rc=$?
  if [ "$rc" != "$want" ]; then
    fail "$* exited $rc, want $want; stdout: $(head -c 500 "$tmp/out"); stderr: $(head -c 500 "$tmp/err")"
    return 1
  fi
  return 0
}

if [ "$WHAT" = usage ]; then
  expect_rc 0 "$ZTEE" --help && { grep -q '^usage: ztee' "$tmp/out" || fail "--help: no usage line"; }
  for c in run doctor version "image build"; do
    # shellcheck disable=SC2086
    expect_rc 0 "$ZTEE" $c --help && { grep -q "^usage: ztee $c" "$tmp/out" || fail "$c --help: no usage"; }
  done
  expect_rc 0 "$ZTEE" version && { grep -Eq '^ztee [0-9]+\.[0-9]+\.[0-9]+$' "$tmp/out" || fail "version: $(cat "$tmp/out")"; }

  # Bad usage: exit 125 with "ztee: <message>" on stderr.
  for args in "" "frobnicate" "run" "run --" "run --bogus -- true" "run --timeout" \
              "run --timeout abc -- true" "run --memory -5 -- true" "run --env NOEQ -- true" \
              "image" "image frob" "doctor extra"; do
    # shellcheck disable=SC2086
    expect_rc 125 "$ZTEE" $args && { grep -q '^ztee: ' "$tmp/err" || fail "'$args': no 'ztee: ' message"; }
  done

  # doctor: one line per check, each OK/WARN/FAIL; exit 0 iff no FAIL.
  "$ZTEE" doctor >"$tmp/out" 2>"$tmp/err"
  rc=$?
  for check in KVM TUN io_uring cgroups QEMU image; do
    grep -Eq "^(OK|WARN|FAIL) +$check\b" "$tmp/out" || fail "doctor: no line for $check: $(cat "$tmp/out")"
  done
  if grep -Evq '^(OK|WARN|FAIL) ' "$tmp/out"; then fail "doctor: malformed line: $(cat "$tmp/out")"; fi
  if grep -q '^FAIL' "$tmp/out"; then want=1; else want=0; fi
  [ "$rc" = "$want" ] || fail "doctor exited $rc, want $want"
else
  # Exit code and both streams of the command come through.
  if expect_rc 3 "$ZTEE" run -- sh -c 'echo out; echo err >&2; exit 3'; then
    [ "$(cat "$tmp/out")" = out ] || fail "run: stdout '$(cat "$tmp/out")', want 'out'"
    [ "$(cat "$tmp/err")" = err ] || fail "run: stderr '$(cat "$tmp/err")', want 'err'"
  fi
  # A single argument with spaces runs through the shell; --env and --cwd apply.
  if expect_rc 0 "$ZTEE" run --env GREETING=hi --cwd /tmp -- 'echo $GREETING; pwd'; then
    [ "$(cat "$tmp/out")" = "$(printf 'hi\n/tmp')" ] || fail "run shell: stdout '$(cat "$tmp/out")'"
  fi
  # Timeout: 124 like timeout(1), well before the command would end.
  start=$(date +%s)
  expect_rc 124 "$ZTEE" run --timeout 1 -- sleep 30
  [ $(( $(date +%s) - start )) -lt 25 ] || fail "run --timeout 1 took too long"
  # Killed by a signal: 128+N.
  expect_rc 137 "$ZTEE" run -- sh -c 'kill -9 $$'
  # A command that does not exist.
  expect_rc 127 "$ZTEE" run -- ztee-no-such-command && { grep -q '^ztee: ' "$tmp/err" || fail "not found: no message"; }
  # A missing image: 125 and the fix in the message.
  expect_rc 125 "$ZTEE" run --image "$tmp/no-image" -- true && {
    grep -q "$tmp/no-image" "$tmp/err" || fail "no image: path missing from: $(cat "$tmp/err")"
    grep -q 'ztee image build' "$tmp/err" || fail "no image: fix missing from: $(cat "$tmp/err")"
  }
fi

if [ "$fails" -ne 0 ]; then
  echo "cli_test $WHAT: $fails failure(s)" >&2
  exit 1
fi
echo "cli_test $WHAT: all passed"
