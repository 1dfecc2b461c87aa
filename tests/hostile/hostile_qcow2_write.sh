# Hostile qcow2 images opened read-write: corrupt metadata met at open or by a write ends
# in one clean error line naming the file, and the image's bytes are left as they were
# (no metadata written over, no data written into a table).
source "$SRCDIR/tests/lib.sh"
: "${WRITEIMG:?WRITEIMG must point at blk-writeimg}"
: "${READIMG:?READIMG must point at blk-readimg}"
MK="python3 $SRCDIR/tests/hostile/mkhostile_rw.py"

run() {
    if [ -z "${BLK_ASAN:-}" ]; then
        timeout 30 prlimit --as=$((1 << 30)) -- "$@"
    else
        timeout 60 "$@"
    fi
}

qemu-img create -q -f qcow2 base.qcow2 1G  # two L1 entries
qemu-io -f qcow2 -c 'write -P 0x11 0 128k' -c 'write -P 0x22 32M 64k' base.qcow2 >/dev/null

# refused CASE REGEX OP...: the write (or the open) fails with REGEX, the file is unchanged.
refused() {
    local c=$1 re=$2; shift 2
    $MK "$c" base.qcow2 "w-$c.qcow2"
    cp "w-$c.qcow2" "w-$c.before"
    expect_fail 1 "w-$c\.qcow2.*$re" run "$WRITEIMG" "w-$c.qcow2" "$@"
    cmp -s "w-$c.qcow2" "w-$c.before" || fail "$c: the image changed although the write was refused"
    ok "$c refused, image unchanged"
}

# At open: the tables a write relies on are checked before anything is written.
refused refcount-entry-past-eof "refcount block 1 .* past the end of the file" "write 0x33 0 4k"
refused refcount-block-on-l1 "refcount block 0 .* overlaps other qcow2 metadata" "write 0x33 0 4k"
refused refcount-block-unaligned "refcount block 0 .* not cluster-aligned" "write 0x33 0 4k"
refused l1-entry-on-refcount-table "L1 entry 1 points at .* other qcow2 metadata" "write 0x33 0 4k"
refused l1-entry-on-l2 "L1 entry 1 points at .* other qcow2 metadata" "write 0x33 0 4k"

# At the write: data never lands on a table, allocations never hand one out.
refused l2-entry-into-l1 "points into qcow2 metadata" "write 0x33 0 4k"
refused l2-entry-into-refblock "points into qcow2 metadata" "write 0x33 0 4k"
refused l2-entry-into-own-table "points into qcow2 metadata" "write 0x33 0 4k"
refused l2-entry-into-refcount-table "points into qcow2 metadata" "write 0x33 0 64k"
refused compressed-into-refblock "lies outside the image data" "write 0x33 0 4k"
refused l2-refcount-zero "would overwrite metadata" "write 0x33 40M 64k"
refused refcount-block-missing "would overwrite metadata" "write 0x33 40M 64k"
# The same through zeroes and discard, which release clusters.
refused l2-entry-into-refblock "points into qcow2 metadata" "zero 0 64k unmap"
refused compressed-into-refblock "lies outside the image data" "discard 0 64k"

# After a refused write, later operations in the same session are refused too and the
# destructor writes nothing back.
$MK l2-entry-into-l1 base.qcow2 w-session.qcow2
cp w-session.qcow2 w-session.before
expect_fail 1 "w-session\.qcow2" run "$WRITEIMG" w-session.qcow2 "write 0x44 40M 64k" "write 0x33 0 4k" "write 0x55 48M 64k"
cmp -s -n "$(stat -c %s w-session.before)" w-session.qcow2 w-session.before || fail "metadata written after a refused write"
ok "no write-back after corrupt metadata"

# Reads of these images still behave as before (they may fail, cleanly).
for f in w-*.qcow2; do
    rc=0
    run "$READIMG" "$f" >/dev/null 2>"$T/err" || rc=$?
    [ "$rc" -le 1 ] || fail "reading $f exited $rc: $(cat "$T/err")"
    ! grep -q "Sanitizer\|runtime error" "$T/err" || fail "reading $f: sanitizer report"
done
ok "hostile read-write images read cleanly"
