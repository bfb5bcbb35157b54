#!/bin/bash
# Tests of the `ztee` CLI. usage: cli_test.sh ZTEE_BINARY (usage|run|pool)
#   usage: no VM: help, version, doctor, bad usage
#   run:   boots real sandboxes (needs the guest image; fails without it)
#   pool:  `ztee pool` (one boot plus clones; needs the guest image)
#   gate:  `ztee policy`, `ztee audit verify` and `ztee call` (three sandboxes)
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
  expect_rc 0 "$ZTEE" --help && {
    grep -q '^usage: ztee' "$tmp/out" || fail "--help: no usage line"
    grep -Eq '^  pool ' "$tmp/out" || fail "--help: no pool command"
  }
  expect_rc 0 "$ZTEE" run --help && { grep -q -- '--template DIR' "$tmp/out" || fail "run --help: no --template"; }
  for c in run pool doctor version gc "image build"; do
    # shellcheck disable=SC2086
    expect_rc 0 "$ZTEE" $c --help && { grep -q "^usage: ztee $c" "$tmp/out" || fail "$c --help: no usage"; }
  done
  expect_rc 0 "$ZTEE" version && { grep -Eq '^ztee [0-9]+\.[0-9]+\.[0-9]+$' "$tmp/out" || fail "version: $(cat "$tmp/out")"; }

  # Bad usage: exit 125 with "ztee: <message>" on stderr.
  for args in "" "frobnicate" "run" "run --" "run --bogus -- true" "run --timeout" \
              "run --timeout abc -- true" "run --memory -5 -- true" "run --env NOEQ -- true" \
              "image" "image frob" "doctor extra" "run --template" \
              "pool --bogus" "pool extra" "pool --min-ready 0" "pool --min-ready x" \
              "pool --leases -1" "pool --min-ready 3 --max-total 2" "pool --cold --template /x" \
              "pool --wait 0" "gc extra" "gc --state-dir" "run --allow" \
              "run --guest-aslr" "run --guest-aslr maybe -- true" "pool --warm-up" \
              "run --accel" "run --accel warp -- true" "pool --accel fast" \
              "run --mount" "run --mount nocolon -- true" "run --mount /tmp: -- true" \
              "run --patch p -- true" "run --export all --yes -- true" "run --export"; do
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
  # The backend a runtime would pick, and why; on a /dev/kvm that cannot run
  # the image (kvm_pvm), a WARN with the consequence, never an OK.
  grep -Eq '^OK +backend: qemu/(kvm|tcg) \(.+\)' "$tmp/out" || fail "doctor: no backend line: $(cat "$tmp/out")"
  if [ -c /dev/kvm ] && [ -d /sys/module/kvm_pvm ] && ! grep -qw vmx /proc/cpuinfo && ! grep -qw svm /proc/cpuinfo; then
    grep -Eq '^WARN KVM: /dev/kvm is present but cannot run this image: it is kvm_pvm.*TCG' "$tmp/out" ||
      fail "doctor on a kvm_pvm host: $(grep KVM "$tmp/out")"
    grep -Eq '^OK +backend: qemu/tcg \(/dev/kvm is kvm_pvm' "$tmp/out" || fail "doctor: backend on kvm_pvm: $(cat "$tmp/out")"
  fi
  if [ "$(id -u)" = 0 ] && [ -c /dev/kvm ]; then
    grep -Eq '^OK +KVM node: a jailed VMM \(uid [0-9]+\) opens its own /dev/kvm \(owner uid [0-9]+, mode 0600\)' "$tmp/out" ||
      fail "doctor: jailed KVM node: $(grep 'KVM node' "$tmp/out")"
  fi
  # ZTEE_ACCEL is honoured: tcg is always possible.
  ZTEE_ACCEL=tcg "$ZTEE" doctor >"$tmp/out" 2>&1
  grep -Eq '^OK +backend: qemu/tcg \(ZTEE_ACCEL=tcg\)' "$tmp/out" || fail "doctor with ZTEE_ACCEL=tcg: $(cat "$tmp/out")"
  if grep -q '^FAIL' "$tmp/out"; then want=1; else want=0; fi
  [ "$rc" = "$want" ] || fail "doctor exited $rc, want $want"
elif [ "$WHAT" = pool ]; then
  status_re='^status: ready=[0-9]+ starting=[0-9]+ leased=[0-9]+ created=[0-9]+ failed=[0-9]+ leases=[0-9]+ lease_timeouts=[0-9]+ backing_off=(yes|no)'
  if expect_rc 0 "$ZTEE" pool --min-ready 1 --leases 2; then
    out=$(cat "$tmp/out")
    grep -Eq "$status_re" "$tmp/out" || fail "pool: no status line: $out"
    grep -Eq '^status: ready=[1-9]' "$tmp/out" || fail "pool: never showed a ready sandbox: $out"
    id1=$(sed -n 's/^lease 1: \(sb-[0-9a-z]*\) in .*exited 0.*/\1/p' "$tmp/out")
    id2=$(sed -n 's/^lease 2: \(sb-[0-9a-z]*\) in .*exited 0.*/\1/p' "$tmp/out")
    [ -n "$id1" ] && [ -n "$id2" ] || fail "pool: no 'lease 1/2: sb-...' lines: $out"
    [ "$id1" != "$id2" ] || fail "pool: both leases got $id1"
    grep -q '^lease 3:' "$tmp/out" && fail "pool: a third lease with --leases 2"
    # The final block: status, last error, lease-wait histogram.
    tail -n 3 "$tmp/out" | head -n 1 | grep -Eq "$status_re" || fail "pool: no final status: $out"
    tail -n 3 "$tmp/out" | head -n 1 | grep -Eq ' leased=0 .* failed=0 leases=2 lease_timeouts=0 backing_off=no' ||
      fail "pool: final status wrong: $(tail -n 3 "$tmp/out" | head -n 1)"
    tail -n 2 "$tmp/out" | head -n 1 | grep -Eq '^last_error: \(none\)$' || fail "pool: last_error: $out"
    hist=$(tail -n 1 "$tmp/out")
    if echo "$hist" | grep -Eq '^lease_wait: <10us=[0-9]+ <100us=[0-9]+ <1ms=[0-9]+ <10ms=[0-9]+ <100ms=[0-9]+ <1s=[0-9]+ <10s=[0-9]+ >=10s=[0-9]+$'; then
      sum=0
      for n in $(echo "$hist" | grep -Eo '=[0-9]+( |$)' | tr -d '= '); do sum=$((sum + n)); done
      [ "$sum" = 2 ] || fail "pool: lease_wait counts sum to $sum, want 2: $hist"
    else
      fail "pool: no lease_wait histogram: $hist"
    fi
  fi
  # A warm-up that fails in the pool's template: 125, and the command quoted.
  expect_rc 125 "$ZTEE" pool --min-ready 1 --leases 1 --warm-up 'exit 3' && {
    grep -q 'warm-up `exit 3` exited 3' "$tmp/err" || fail "pool --warm-up: not quoted in: $(cat "$tmp/err")"
  }
  # A pool over a missing image fails with 125 and says why.
  expect_rc 125 "$ZTEE" pool --image "$tmp/no-image" --min-ready 1 --leases 1 --wait 20 && {
    grep -q "$tmp/no-image" "$tmp/err" || fail "pool no image: path missing from: $(cat "$tmp/err")"
  }
  # run --template: a missing template is refused with its path.
  expect_rc 125 "$ZTEE" run --template "$tmp/no-template" -- true && {
    grep -q "$tmp/no-template" "$tmp/err" || fail "run --template: path missing from: $(cat "$tmp/err")"
  }
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
  # Network: a bad --allow entry is quoted; a good one gives the guest eth0
  # (no packet is sent here); `ztee gc` finds nothing of ours to remove.
  expect_rc 125 "$ZTEE" run --allow 198.18.0.10:99999 -- true && {
    grep -q '"198.18.0.10:99999"' "$tmp/err" || fail "bad --allow: entry not quoted: $(cat "$tmp/err")"
  }
  expect_rc 0 "$ZTEE" run --allow 198.18.0.10:47080/tcp --dns 198.18.0.53 -- ls /sys/class/net && {
    [ "$(cat "$tmp/out")" = "$(printf 'eth0\nlo')" ] || fail "--allow: interfaces: $(cat "$tmp/out")"
  }
  # (The same boot checks --guest-aslr on: the default under TCG is off.)
  expect_rc 0 "$ZTEE" run --guest-aslr on -- sh -c 'ls /sys/class/net; cat /proc/sys/kernel/randomize_va_space' && {
    [ "$(cat "$tmp/out")" = "$(printf 'lo\n2')" ] || fail "no --allow, --guest-aslr on: $(cat "$tmp/out")"
  }
  # --accel: tcg always runs; kvm where KVM cannot run the image fails
  # before any VMM starts, with the reason.
  expect_rc 0 "$ZTEE" run --accel tcg -- true
  if [ ! -c /dev/kvm ] || { ! grep -qw vmx /proc/cpuinfo && ! grep -qw svm /proc/cpuinfo; }; then
    expect_rc 125 "$ZTEE" run --accel kvm -- true && {
      grep -q 'accel kvm cannot run this image' "$tmp/err" || fail "--accel kvm: $(cat "$tmp/err")"
    }
    ZTEE_ACCEL=kvm expect_rc 125 "$ZTEE" run -- true && {
      grep -q 'from \$ZTEE_ACCEL' "$tmp/err" || fail "ZTEE_ACCEL=kvm: $(cat "$tmp/err")"
    }
  fi
  # A host without /dev/kvm: in a private mount namespace where a socket is
  # bound over /dev/kvm (no character device there, as on a host without KVM),
  # doctor says so, a sandbox runs under TCG, and --accel kvm fails before any
  # VMM starts. CI hosts all have a /dev/kvm, so this is the only run of that
  # kind of host in the suite.
  if [ "$(id -u)" = 0 ] && command -v unshare >/dev/null; then
    host_kvm=0
    [ ! -c /dev/kvm ] || host_kvm=1  # a host may have the kvm module and still no node
    nokvm() {
      unshare -m --propagation private bash -c '
        sock=$1; shift
        if [ -e /dev/kvm ]; then
          python3 -c "import socket, sys; socket.socket(socket.AF_UNIX).bind(sys.argv[1])" "$sock" &&
            mount --bind "$sock" /dev/kvm && rm -f "$sock" || { echo "cannot mask /dev/kvm" >&2; exit 99; }
        fi
        [ ! -c /dev/kvm ] || { echo "/dev/kvm still a device" >&2; exit 99; }
        exec "$@"' nokvm "$tmp/kvm.sock" "$@"
    }
    expect_rc 0 nokvm "$ZTEE" doctor && {
      grep -Eq '^WARN KVM: no /dev/kvm: sandboxes run under TCG' "$tmp/out" || fail "doctor without /dev/kvm: $(cat "$tmp/out")"
      grep -Eq '^OK +backend: qemu/tcg \(no usable /dev/kvm\)' "$tmp/out" ||
        fail "doctor without /dev/kvm: backend: $(cat "$tmp/out")"
      if grep -q '^[A-Z]* *KVM node' "$tmp/out"; then fail "doctor without /dev/kvm checks a KVM node: $(cat "$tmp/out")"; fi
    }
    expect_rc 0 nokvm "$ZTEE" run -- sh -c 'echo ran; uname -r' && {
      [ "$(head -n1 "$tmp/out")" = ran ] || fail "run without /dev/kvm: $(cat "$tmp/out")"
    }
    expect_rc 125 nokvm "$ZTEE" run --accel kvm -- true && {
      grep -q 'accel kvm cannot run this image: no /dev/kvm' "$tmp/err" || fail "--accel kvm without /dev/kvm: $(cat "$tmp/err")"
    }
    [ "$host_kvm" = 0 ] || [ -c /dev/kvm ] || fail "the host's /dev/kvm is gone after the masked runs"
  else
    echo "SKIP host without /dev/kvm: needs root and unshare(1)"
  fi
  expect_rc 0 "$ZTEE" gc --state-dir "$tmp/gc-state" && {
    grep -q 'nothing to remove' "$tmp/out" || fail "gc on an empty state dir: $(cat "$tmp/out")"
  }

  # Workspaces: a mounted directory, the diff, a patch and an export of one path.
  ws="$tmp/ws"
  mkdir -p "$ws/src" && echo a >"$ws/src/a.txt" && echo b >"$ws/b.txt"
  expect_rc 0 "$ZTEE" run --mount "$ws:/w" --diff --patch "$tmp/review.patch" --export src/a.txt --yes \
    --diff-log "$tmp/diff.jsonl" -- 'echo more >> /w/src/a.txt; echo new > /w/c.txt; rm /w/b.txt' && {
    for line in "D /w/b.txt" "A /w/c.txt" "M /w/src/a.txt" "ztee: exported M /w/src/a.txt"; do
      grep -qx "$line" "$tmp/err" || fail "run --diff/--export: no '$line' in: $(cat "$tmp/err")"
    done
    grep -q '^+more$' "$tmp/review.patch" || fail "--patch: $(cat "$tmp/review.patch")"
    [ "$(cat "$ws/src/a.txt")" = "$(printf 'a\nmore')" ] || fail "--export: src/a.txt is $(cat "$ws/src/a.txt")"
    [ -f "$ws/b.txt" ] && [ ! -e "$ws/c.txt" ] || fail "--export applied more than src/a.txt: $(ls "$ws")"
    grep -q '"changes":\[' "$tmp/diff.jsonl" || fail "--diff-log: $(cat "$tmp/diff.jsonl")"
  }
  # A change the host cannot take safely: nothing applied, exit 125.
  expect_rc 125 "$ZTEE" run --mount "$ws:/w" --export all --yes -- \
    'echo x > /w/suid && chmod 4755 /w/suid && echo y >> /w/b.txt' && {
    grep -q 'setuid' "$tmp/err" || fail "--export of a setuid file: $(cat "$tmp/err")"
    [ ! -e "$ws/suid" ] && [ "$(cat "$ws/b.txt")" = b ] || fail "--export applied part of a refused set"
  }
fi

if [ "$WHAT" = gate ]; then
  # policy: the default one loads and explains; a broken one names line and reason.
  expect_rc 0 "$ZTEE" policy default && cp "$tmp/out" "$tmp/default.json"
  expect_rc 0 "$ZTEE" policy check "$tmp/default.json" && {
    grep -q '^OK: .*: 4 tiers, 7 rules$' "$tmp/out" || fail "policy check: $(cat "$tmp/out")"
    grep -q 'anything else -> denied' "$tmp/out" || fail "policy check: no fail-closed line"
  }
  expect_rc 0 "$ZTEE" policy check "$tmp/default.json" --tool python -- python3 -c 1 && {
    grep -q '"code-execution" (line [0-9]*) -> L4 approve: the call waits for approval' "$tmp/out" || fail "policy check --tool python: $(cat "$tmp/out")"
  }
  expect_rc 0 "$ZTEE" policy check "$tmp/default.json" --tool read_file --label pii && {
    grep -q '"pii"' "$tmp/out" || fail "policy check --label pii: $(cat "$tmp/out")"
  }
  expect_rc 0 "$ZTEE" policy check "$tmp/default.json" --tool nobody_knows && {
    grep -q 'no rule matches: the call is denied' "$tmp/out" || fail "policy check unknown tool: $(cat "$tmp/out")"
  }
  printf '{"version": 1,\n "tiers": {"L0": {"action": "run"}},\n "rules": [{"tool": "x", "tier": "L9"}]}\n' >"$tmp/bad.json"
  expect_rc 1 "$ZTEE" policy check "$tmp/bad.json" && {
    grep -q 'bad.json: line 3: unknown tier "L9"' "$tmp/err" || fail "policy check bad: $(cat "$tmp/err")"
  }
  for args in "policy" "policy frob" "policy check" "audit" "audit verify" "audit verify --bogus x" \
              "call -- true" "call --tool x" "call --tool x --env NOEQ -- true" "call --tool x --durability maybe -- true"; do
    # shellcheck disable=SC2086
    expect_rc 125 "$ZTEE" $args && { grep -q '^ztee: ' "$tmp/err" || fail "'$args': no 'ztee: ' message"; }
  done

  # call: run tier, a secret reference scrubbed, an approval by command, denials (126).
  log=$tmp/audit.jsonl
  printf 'k3y\n' >"$tmp/key"
  mkdir -p "$tmp/secrets" && printf 'sk-live-4242-ZZZZ' >"$tmp/secrets/TOKEN"
  expect_rc 0 "$ZTEE" call --tool read_file --audit "$log" --audit-key-file "$tmp/key" --trace t1 -- cat /etc/hostname
  expect_rc 0 "$ZTEE" call --tool python --audit "$log" --audit-key-file "$tmp/key" --secrets-dir "$tmp/secrets" \
      --env TOKEN=secret://TOKEN --approver-cmd "cat >$tmp/asked.json; echo alice" -- 'echo "$TOKEN"; echo "$TOKEN" >&2' && {
    [ "$(cat "$tmp/out")" = "[secret:TOKEN]" ] || fail "call: stdout not scrubbed: $(cat "$tmp/out")"
    [ "$(cat "$tmp/err")" = "[secret:TOKEN]" ] || fail "call: stderr not scrubbed: $(cat "$tmp/err")"
    grep -q '"tool":"python"' "$tmp/asked.json" || fail "approver-cmd got: $(cat "$tmp/asked.json")"
    grep -q '"approval_granted".*"by":"alice"' "$log" || fail "no approval record by alice"
  }
  expect_rc 126 "$ZTEE" call --tool python --audit "$log" --audit-key-file "$tmp/key" \
      --approver-cmd 'echo not now; exit 1' -- true </dev/null && {
    grep -q 'denied by approver-cmd: not now' "$tmp/err" || fail "denied call: $(cat "$tmp/err")"
  }
  expect_rc 126 "$ZTEE" call --tool python --audit "$log" --audit-key-file "$tmp/key" -- true </dev/null && {
    grep -q 'no approver is configured' "$tmp/err" || fail "no approver: $(cat "$tmp/err")"
  }
  expect_rc 126 "$ZTEE" call --tool format_everything --audit "$log" --audit-key-file "$tmp/key" -- true
  expect_rc 125 "$ZTEE" call --tool read_file --audit "$log" --audit-key-file "$tmp/key" --secrets-dir "$tmp/secrets" \
      --env X=secret://MISSING -- true && {
    grep -q 'secret reference "secret://MISSING"' "$tmp/err" || fail "missing secret: $(cat "$tmp/err")"
  }
  if grep -q 'sk-live-4242' "$log"; then fail "the secret's value is in the audit log"; fi

  # audit verify: OK with the count; each edit is found (exit 1).
  expect_rc 0 "$ZTEE" audit verify "$log" --key-file "$tmp/key" && {
    grep -Eq '^OK: [0-9]+ records, chain intact, every HMAC matches$' "$tmp/out" || fail "audit verify: $(cat "$tmp/out")"
  }
  sed '3d' "$log" >"$tmp/removed.jsonl"
  expect_rc 1 "$ZTEE" audit verify "$tmp/removed.jsonl" && {
    grep -q '^TAMPERED: record 4 .*records 3..3 are missing: removed' "$tmp/out" || fail "removed: $(cat "$tmp/out")"
  }
  sed '2s/"event":"decision"/"event":"decisi0n"/' "$log" >"$tmp/edited.jsonl"
  expect_rc 1 "$ZTEE" audit verify "$tmp/edited.jsonl" && {
    grep -q '^TAMPERED: record 3 .*record 2 was edited' "$tmp/out" || fail "edited: $(cat "$tmp/out")"
  }
  expect_rc 1 "$ZTEE" audit verify "$tmp/edited.jsonl" --key k3y && {
    grep -q '^TAMPERED: record 2 .*HMAC does not match' "$tmp/out" || fail "edited with key: $(cat "$tmp/out")"
  }
fi

if [ "$fails" -ne 0 ]; then
  echo "cli_test $WHAT: $fails failure(s)" >&2
  exit 1
fi
echo "cli_test $WHAT: all passed"
