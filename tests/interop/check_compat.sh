# check against qemu-img 7.2: on clean images qemu-img/qemu-io made (snapshots, compressed
# clusters, extended L2, an overlay) and on images damaged here by editing bytes (leaks,
# refcounts too high and too low, an L2 entry into the L1 table, a cluster referenced twice,
# a wrong COPIED flag, a compressed descriptor past the end), blkimg check prints the same
# stdout (human and JSON), the same report lines on stderr and exits with the same code.
source "$SRCDIR/tests/lib.sh"

qi() { qemu-io "$@" >/dev/null || fail "qemu-io $*"; }
source "$SRCDIR/tests/interop/qcow2_poke.sh"

same_as_qemu() {  # same_as_qemu ARGS...: stdout, stderr (program name dropped) and exit code
    local qrc=0 brc=0
    qemu-img check "$@" >q.out 2>q.err || qrc=$?
    "$BLKIMG" check "$@" >b.out 2>b.err || brc=$?
    sed -i "s/^qemu-img: //; s/^Try 'qemu-img /Try 'PROG /" q.err
    sed -i "s/^blkimg: //; s/^Try 'blkimg /Try 'PROG /" b.err
    [ "$qrc" = "$brc" ] || fail "check $*: exit $brc, qemu-img exits $qrc ($(cat q.out q.err))"
    cmp -s q.out b.out || fail "check $*: stdout '$(cat b.out)', qemu-img '$(cat q.out)'"
    cmp -s q.err b.err || fail "check $*: stderr '$(cat b.err)', qemu-img '$(cat q.err)'"
    echo "$qrc"
}
both() {  # both FILE EXPECTED_EXIT: human and JSON output equal qemu-img's
    local rc
    rc=$(same_as_qemu "$1") || exit 1
    [ "$rc" = "$2" ] || fail "check $1: qemu-img exits $rc, the test expects $2"
    same_as_qemu --output=json "$1" >/dev/null || exit 1
    same_as_qemu -q "$1" >/dev/null || exit 1
}

qemu-img create -q -f qcow2 a.qcow2 64M
qi -c 'write -P 1 0 1M' -c 'write -P 2 10M 3M' -c 'write -z 20M 1M' -c 'write -P 3 30M 64k' a.qcow2
both a.qcow2 0
cp a.qcow2 s.qcow2
qemu-img snapshot -c one s.qcow2; qi -c 'write -P 4 0 128k' s.qcow2
qemu-img snapshot -c two s.qcow2; qi -c 'write -P 5 10M 64k' -c 'discard 30M 64k' s.qcow2
both s.qcow2 0
qemu-img convert -O qcow2 -c a.qcow2 c.qcow2
both c.qcow2 0
qemu-img convert -O qcow2 -c -o compression_type=zstd a.qcow2 cz.qcow2
both cz.qcow2 0
qemu-img convert -O qcow2 -o extended_l2=on,cluster_size=128k a.qcow2 x.qcow2
qi -c 'write -P 7 40M 4k' x.qcow2
both x.qcow2 0
qemu-img create -q -f qcow2 -b a.qcow2 -F qcow2 t.qcow2; qi -c 'write -P 8 5M 64k' t.qcow2
both t.qcow2 0
qemu-img create -q -f qcow2 -o cluster_size=4096 f.qcow2 16M
args=(); for i in $(seq 1 40); do args+=(-c "write -P $i $((i * 131072)) 4096"); done; qi "${args[@]}" f.qcow2
both f.qcow2 0
cp a.qcow2 bm.qcow2; qemu-img bitmap --add bm.qcow2 b0; qemu-img bitmap --add -g 512k bm.qcow2 b1
qi -c 'write -P 9 0 1M' -c 'write -P 9 50M 64k' bm.qcow2
both bm.qcow2 0
qemu-img create -q -f qcow2 e.qcow2 1G
both e.qcow2 0
# Every refcount width: the check's own refcount table is 16 bits wide up to 16-bit
# refcounts and 64 bits wide above; snapshots make refcounts of 2 where the width allows.
for w in 1 8 32 64; do
    qemu-img create -q -f qcow2 -o refcount_bits=$w r$w.qcow2 64M
    qi -c 'write -P 1 0 1M' -c 'write -P 2 10M 3M' r$w.qcow2
    [ "$w" = 1 ] || { qemu-img snapshot -c one r$w.qcow2; qi -c 'write -P 4 0 128k' r$w.qcow2; }
    both r$w.qcow2 0
done

cp a.qcow2 leak.qcow2; poke leak.qcow2 leak; both leak.qcow2 3
cp a.qcow2 high.qcow2; poke high.qcow2 refcount-high; both high.qcow2 2
cp a.qcow2 low.qcow2; poke low.qcow2 refcount-low; both low.qcow2 2
cp a.qcow2 l2l1.qcow2; poke l2l1.qcow2 l2-into-l1; both l2l1.qcow2 2
cp a.qcow2 twice.qcow2; poke twice.qcow2 twice; both twice.qcow2 2
cp a.qcow2 copied.qcow2; poke copied.qcow2 copied; both copied.qcow2 2
cp a.qcow2 l1r.qcow2; poke l1r.qcow2 l1-reserved; both l1r.qcow2 2
cp a.qcow2 ua.qcow2; poke ua.qcow2 unaligned; both ua.qcow2 2
cp x.qcow2 xb.qcow2; poke xb.qcow2 ext-bitmap; both xb.qcow2 2
cp a.qcow2 rbo.qcow2; poke rbo.qcow2 refblock-outside; both rbo.qcow2 2
cp a.qcow2 rbu.qcow2; poke rbu.qcow2 refblock-unaligned; both rbu.qcow2 2
cp c.qcow2 ceof.qcow2; poke ceof.qcow2 compressed-eof; both ceof.qcow2 2

# -r: a bad value and -U (a repair writes) are refused in qemu-img's words.
same_as_qemu -r foo a.qcow2 >/dev/null
same_as_qemu -U -r leaks a.qcow2 >/dev/null

# A format without checks: qemu-img's message and exit code 63.
qemu-img create -q -f raw r.img 1M
rc=0; "$BLKIMG" check r.img >out 2>err || rc=$?
[ "$rc" = 63 ] || fail "check of raw exits $rc, not 63"
grep -qx "blkimg: This image format does not support checks" err || fail "check of raw says '$(cat err)'"

# Hostile images: one error line, exit 1, never a crash.
for what in huge-l1 reftable-eof; do
    cp a.qcow2 h.qcow2; poke h.qcow2 "$what"
    rc=0; "$BLKIMG" check h.qcow2 >out 2>err || rc=$?
    [ "$rc" = 1 ] || fail "check of $what image exits $rc ($(cat err))"
    [ "$(wc -l <err)" = 1 ] || fail "check of $what image: '$(cat err)'"
done
echo ok
