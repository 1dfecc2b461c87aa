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

# same_as_qemu_img CMD ARGS...: runs `qemu-img CMD ARGS` and `blkimg CMD ARGS` in the current
# directory; fails unless exit code, stdout and stderr agree. The program-name prefix is
# dropped from both stderrs, and qemu-img's doubled "Could not open 'X': Could not open 'X': "
# counts as said once (blkimg says it once, in every command). Extra sed -E scripts for one
# side's stderr: QEMU_ERR_SED (e.g. deleting a warning qemu-img prints and blkimg does not)
# and BLK_ERR_SED.
same_as_qemu_img() {
    local cmd=$1 qrc=0 brc=0
    shift
    qemu-img "$cmd" "$@" >q.out 2>q.err || qrc=$?
    "$BLKIMG" "$cmd" "$@" >b.out 2>b.err || brc=$?
    sed -i -E "s/^qemu-img: //; s/Could not open '([^']*)': Could not open '\\1': /Could not open '\\1': /; ${QEMU_ERR_SED:-}" q.err
    sed -i -E "s/^blkimg: //; ${BLK_ERR_SED:-}" b.err
    [ "$qrc" = "$brc" ] || fail "$cmd $*: exit $brc, qemu-img exits $qrc ($(cat q.out q.err))"
    cmp -s q.out b.out || fail "$cmd $*: stdout '$(cat b.out)', qemu-img '$(cat q.out)'"
    cmp -s q.err b.err || fail "$cmd $*: stderr '$(cat b.err)', qemu-img '$(cat q.err)'"
}

# nobody_blkimg WHAT: sets NOBODY_BLKIMG to a blkimg that uid 65534 can run, for the cases that
# drop to that user (as_nobody). The build tree may sit under a directory only its owner can
# enter (/root), so the binary and the libraries it loads from outside the system's directories
# are copied to a directory under /tmp. Returns 1 after a SKIP line naming WHAT and the reason
# when the case cannot run here: not root, no setpriv, or $T out of that user's reach.
NOBODY_DIR=""
nobody_blkimg() {
    if [ "$(id -u)" != 0 ] || ! command -v setpriv >/dev/null; then
        echo "SKIP: $1 (needs root and setpriv to run as uid 65534)"
        return 1
    fi
    if [ -z "$NOBODY_DIR" ]; then
        NOBODY_DIR=$(mktemp -d /tmp/blkimg-nobody.XXXXXX)
        trap 'rm -rf "$T" "$NOBODY_DIR"' EXIT
        mkdir "$NOBODY_DIR/lib"
        cp "$BLKIMG" "$NOBODY_DIR/blkimg"
        local lib
        for lib in $(ldd "$BLKIMG" | awk '$2 == "=>" && $3 ~ /^\// {print $3}'); do
            case "$lib" in
                /lib/*|/lib64/*|/usr/*) ;;
                *) cp "$lib" "$NOBODY_DIR/lib/$(basename "$lib")" ;;
            esac
        done
        chmod -R a+rX "$NOBODY_DIR"
        NOBODY_BLKIMG=$NOBODY_DIR/blkimg
    fi
    local why
    if ! why=$(as_nobody "$NOBODY_BLKIMG" --version 2>&1 >/dev/null); then
        echo "SKIP: $1 (uid 65534 cannot run a copy of blkimg in $NOBODY_DIR: $why)"
        return 1
    fi
    if ! as_nobody test -x "$T"; then
        echo "SKIP: $1 (uid 65534 cannot enter the test directory $T; set TMPDIR to a directory it can reach)"
        return 1
    fi
}
# as_nobody CMD...: runs CMD as uid and gid 65534 with no other groups, finding the libraries
# nobody_blkimg copied.
as_nobody() {
    LD_LIBRARY_PATH="$NOBODY_DIR/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" \
        setpriv --reuid=65534 --regid=65534 --clear-groups "$@"
}

# wait_lock_on FILE BYTE: waits (up to 30 s) until some process holds a lock covering BYTE of
# FILE, as a qemu process does once it has opened the image. Matched by FILE's inode, so
# another test's locks (tests run in parallel) cannot end the wait early.
wait_lock_on() {
    local ino
    ino=$(stat -c %i "$1") || fail "wait_lock_on: no file $1"
    for _ in $(seq 300); do
        awk -v ino="$ino" -v b="$2" '{ n = split($6, d, ":"); if (d[n] == ino && $7 <= b && ($8 == "EOF" || $8 >= b)) f = 1 } END { exit !f }' /proc/locks && return 0
        sleep 0.1
    done
    fail "no process took a lock on byte $2 of $1"
}

# can_punch_holes: true when the file system under $T gives back the space of a punched
# hole (fallocate -p), so a test may compare the host space images keep.
can_punch_holes() {
    local f="$T/.punch" ok=0
    truncate -s 1M "$f" && dd if=/dev/zero of="$f" bs=64k count=16 conv=notrunc status=none || return 1
    fallocate -p -o 0 -l 1M "$f" 2>/dev/null && [ "$(du -k "$f" | cut -f1)" -le 64 ] && ok=1
    rm -f "$f"
    [ "$ok" = 1 ]
}
