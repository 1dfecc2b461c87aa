# Shared helpers for the shell tests (cli/ and interop/). Source it; set BLKIMG first.
# Each test script runs under `set -eu`, makes its images in $T (removed on exit),
# and fails (exit 1) at the first broken expectation with a message saying what broke.
set -eu
: "${BLKIMG:?BLKIMG must point at the built blkimg binary}"
T=$(mktemp -d "${TMPDIR:-/tmp}/blkimg-test.XXXXXX")
trap 'rm -rf "$T"' EXIT
cd "$T"

fail() { echo "FAIL: $*" >&2; exit 1; }

# expect_eq WHAT EXPECTED ACTUAL
expect_eq() {
    if [ "$2" != "$3" ]; then
        echo "FAIL: $1" >&2
        echo "--- expected" >&2; printf '%s\n' "$2" >&2
        echo "--- actual" >&2; printf '%s\n' "$3" >&2
        exit 1
    fi
}

# expect_fail CODE REGEX CMD...: CMD must exit with CODE and print one stderr line matching REGEX
# (besides qemu-img's "Try 'PROG --help'" hint and the second line of its size message).
expect_fail() {
    local code=$1 re=$2; shift 2
    local rc=0
    "$@" >"$T/.out" 2>"$T/.err" || rc=$?
    [ "$rc" = "$code" ] || fail "'$*' exited $rc, expected $code; stderr: $(cat "$T/.err")"
    grep -Eq -- "$re" "$T/.err" || fail "'$*' stderr does not match /$re/: $(cat "$T/.err")"
    if grep -q "Sanitizer\|runtime error" "$T/.err"; then fail "'$*' sanitizer report: $(cat "$T/.err")"; fi
    # qemu-img's second lines do not count: the usage hint and the rest of cvtnum's message.
    [ "$(grep -Evc "^Try '[^ ]+ --help' for more information\$|^[^ ]+: kilobytes, megabytes, gigabytes, terabytes" "$T/.err")" -le 1 ] ||
        fail "'$*' printed more than one error line: $(cat "$T/.err")"
}

# json_eq WHAT A B: two JSON texts are equal as values (key order ignored).
json_eq() {
    python3 - "$1" "$2" "$3" <<'PY'
import json, sys
what, a, b = sys.argv[1:4]
ja, jb = json.loads(a), json.loads(b)
if ja != jb:
    print("FAIL: " + what, file=sys.stderr)
    print("--- expected\n" + json.dumps(ja, indent=2, sort_keys=True), file=sys.stderr)
    print("--- actual\n" + json.dumps(jb, indent=2, sort_keys=True), file=sys.stderr)
    sys.exit(1)
PY
}

ok() { echo "ok: $*"; }
