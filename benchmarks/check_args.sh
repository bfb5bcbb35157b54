#!/usr/bin/env bash
# ctest bench.args: every benchmark binary given answers --help with its usage
# (exit 0) and refuses an unknown option and a malformed number with an error
# and its usage (exit 2), without starting any benchmark work. Each call has
# 10 s: a benchmark that ignored its arguments would boot VMs for minutes.
set -uo pipefail
fail=0
check() {  # check BIN WANT_RC WHAT ARGS...
  local bin=$1 want=$2 what=$3 out err rc
  shift 3
  out=$(mktemp) err=$(mktemp)
  timeout 10 "$bin" "$@" >"$out" 2>"$err" </dev/null
  rc=$?
  if [[ $rc -ne $want ]]; then
    echo "FAIL ${bin##*/} $*: exit $rc, want $want ($what)"; sed 's/^/  /' "$err" | head -5; fail=1
  elif [[ $want -eq 0 ]] && ! grep -q '^usage: ' "$out"; then
    echo "FAIL ${bin##*/} $*: no usage on stdout"; fail=1
  elif [[ $want -eq 2 ]] && ! grep -q '^usage: ' "$err"; then
    echo "FAIL ${bin##*/} $*: no usage on stderr"; fail=1
  else
    echo "ok   ${bin##*/} $* (exit $rc)"
  fi
  rm -f "$out" "$err"
}
# Arguments: BIN or BIN:--OPTION, where OPTION takes a number (else the
# malformed number is given as BIN's positional argument).
for arg in "$@"; do
  bin=${arg%%:*}
  check "$bin" 0 help --help
  check "$bin" 2 "unknown option" --no-such-option
  if [[ $arg == *:* ]]; then check "$bin" 2 "not a number" "${arg#*:}" 12abc
  else check "$bin" 2 "not a number" 12abc; fi
done
[[ $fail -eq 0 ]] && echo "bench.args: $# benchmarks checked" || exit 1
