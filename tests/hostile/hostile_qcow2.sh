# Hostile qcow2 images: each corrupt field gets one clean error line naming the file, a
# non-zero exit, and no crash, hang or sanitizer report (run under ASan in CI).
source "$SRCDIR/tests/lib.sh"
MK="python3 $SRCDIR/tests/hostile/mkhostile.py"
: "${READIMG:?READIMG must point at blk-readimg}"

qemu-img create -q -f qcow2 base.qcow2 64M
qemu-io -f qcow2 -c 'write -P 0x11 0 128k' -c 'write -P 0x22 32M 64k' base.qcow2 >/dev/null
qemu-img create -q -f qcow2 cbase.qcow2 64M
qemu-io -f qcow2 -c 'write -c -P 0x33 0 64k' cbase.qcow2 >/dev/null

# Bounded in time, and in memory where no sanitizer reserves shadow memory.
run() {
    if [ -z "${BLK_ASAN:-}" ]; then
        timeout 30 prlimit --as=$((1 << 30)) -- "$@"
    else
        timeout 60 "$@"
    fi
}

# Broken at open: every command refuses the image.
open_cases="truncated-header bad-version cluster-bits-small cluster-bits-large cluster-bits-huge
 l1-past-eof l1-unaligned l1-huge l1-too-small size-huge refcount-table-past-eof refcount-table-huge
 snapshots-past-eof snapshots-huge backing-name-too-long backing-name-past-eof header-length-short
 header-length-huge extension-too-long unknown-incompat refcount-order-bad"
for c in $open_cases; do
    $MK "$c" base.qcow2 "h-$c.qcow2"
    expect_fail 1 "h-$c\.qcow2" run "$BLKIMG" info "h-$c.qcow2"
    expect_fail 1 "h-$c\.qcow2" run "$BLKIMG" info --output=json "h-$c.qcow2"
    expect_fail 1 "h-$c\.qcow2" run "$BLKIMG" map --output=json "h-$c.qcow2"
    expect_fail 1 "h-$c\.qcow2" run "$READIMG" "h-$c.qcow2"
    ok "$c refused at open"
done

# Encrypted (AES, no key): info shows the metadata as qemu-img does; map and reads refuse.
$MK encrypted base.qcow2 h-encrypted.qcow2
run "$BLKIMG" info h-encrypted.qcow2 | grep -qx 'encrypted: yes' || fail "info of h-encrypted.qcow2"
expect_fail 1 "h-encrypted\.qcow2.*encrypt.key-secret" run "$BLKIMG" map --output=json h-encrypted.qcow2
expect_fail 1 "h-encrypted\.qcow2" run "$READIMG" h-encrypted.qcow2
ok "encrypted refused on read"

# Broken snapshot table entries.
qemu-img create -q -f qcow2 sbase.qcow2 64M
qemu-img snapshot -c s1 sbase.qcow2
for c in snapshot-extra-huge snapshot-extra-too-large; do
    $MK "$c" sbase.qcow2 "h-$c.qcow2"
    expect_fail 1 "h-$c\.qcow2.*snapshot" run "$BLKIMG" info --output=json "h-$c.qcow2"
    ok "$c refused"
done

# Broken tables below the header: reading the data refuses cleanly; info and map may
# succeed (qemu-img does) but must never crash.
read_cases="l1-entry-past-eof l1-entry-unaligned l2-entry-past-eof l2-entry-unaligned
 l2-entry-into-refcount-table l2-entry-into-l1"
for c in $read_cases; do
    $MK "$c" base.qcow2 "h-$c.qcow2"
    expect_fail 1 "h-$c\.qcow2" run "$READIMG" "h-$c.qcow2"
    for cmd in "info" "map --output=json" "map"; do
        rc=0
        run "$BLKIMG" $cmd "h-$c.qcow2" >out 2>err || rc=$?
        [ "$rc" -le 1 ] || fail "$cmd on $c exited $rc: $(cat err)"
        ! grep -q "Sanitizer\|runtime error" err || fail "$cmd on $c: sanitizer report: $(cat err)"
        [ "$rc" = 0 ] || grep -q "h-$c\.qcow2" err || fail "$cmd on $c: error does not name the file: $(cat err)"
    done
    ok "$c refused on read"
done

for c in compressed-past-eof compressed-garbage; do
    $MK "$c" cbase.qcow2 "h-$c.qcow2"
    expect_fail 1 "h-$c\.qcow2" run "$READIMG" "h-$c.qcow2"
    ok "$c refused on read"
done

# A backing loop: a -> b -> a.
qemu-img create -q -f qcow2 loop-a.qcow2 1M
qemu-img create -q -f qcow2 -b loop-a.qcow2 -F qcow2 loop-b.qcow2
qemu-img rebase -u -b loop-b.qcow2 -F qcow2 loop-a.qcow2
expect_fail 1 "loop" run "$BLKIMG" map loop-b.qcow2
expect_fail 1 "loop" run "$BLKIMG" info --backing-chain loop-b.qcow2
expect_fail 1 "loop" run "$READIMG" loop-b.qcow2
ok "backing loop refused"

# The source image is never written: a hostile image is byte-identical afterwards.
sum_before=$(sha256sum h-l2-entry-past-eof.qcow2)
run "$BLKIMG" map h-l2-entry-past-eof.qcow2 >/dev/null 2>&1 || true
expect_eq "hostile image unchanged" "$sum_before" "$(sha256sum h-l2-entry-past-eof.qcow2)"
ok "hostile image never written"

# A chain deeper than 16 images is refused, not opened to exhaustion.
qemu-img create -q -f qcow2 d0.qcow2 1M
for i in $(seq 1 20); do qemu-img create -q -f qcow2 -b d$((i - 1)).qcow2 -F qcow2 d$i.qcow2; done
expect_fail 1 "d20\.qcow2.*deeper than 16" run "$BLKIMG" map d20.qcow2
"$BLKIMG" map d15.qcow2 >/dev/null || fail "a 16-image chain was refused"
ok "deep chain refused"

# Random damage to the metadata clusters (deterministic seeds): whatever the bytes, every
# command ends with exit 0 or 1, at most one error line, and no sanitizer report.
qemu-img create -q -f qcow2 -o cluster_size=4k mbase.qcow2 4M
qemu-io -f qcow2 -c 'write -P 1 0 64k' -c 'write -c -P 2 1M 64k' -c 'write -z 2M 64k' mbase.qcow2 >/dev/null
qemu-img snapshot -c s mbase.qcow2
qemu-img bitmap --add mbase.qcow2 bm
qemu-img create -q -f qcow2 -o extended_l2=on,cluster_size=16k mbase2.qcow2 4M
qemu-io -f qcow2 -c 'write -P 1 4k 8k' -c 'write -z 2M 64k' mbase2.qcow2 >/dev/null
mkdir -p mut
python3 "$SRCDIR/tests/hostile/mutate.py" mbase.qcow2 mut 80 1
for f in mut/*.qcow2; do mv "$f" "${f%.qcow2}-a.qcow2"; done
python3 "$SRCDIR/tests/hostile/mutate.py" mbase2.qcow2 mut 80 2
for f in mut/*.qcow2; do
    for cmd in "$BLKIMG info --output=json" "$BLKIMG map --output=json" "$READIMG"; do
        rc=0
        run $cmd "$f" >/dev/null 2>err || rc=$?
        [ "$rc" -le 1 ] || fail "$cmd $f exited $rc: $(head -3 err)"
        ! grep -q "Sanitizer\|runtime error" err || fail "$cmd $f: sanitizer report: $(head -5 err)"
        [ "$(wc -l <err)" -le 1 ] || fail "$cmd $f: more than one error line: $(head -3 err)"
    done
done
ok "160 mutated images handled cleanly"
