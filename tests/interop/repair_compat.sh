# check -r against qemu-img 7.2: each damaged image (leaks, refcounts too high, too low and
# zero, a cluster referenced twice, COPIED flags wrong either way, refcount blocks unaligned
# or past the end, dirty and corrupt bits) is repaired by qemu-img and by blkimg on separate
# copies, with -r leaks and -r all, human, JSON and -q output: same stdout, same stderr lines,
# same exit code, and the repaired files are byte for byte the same (same placement of a
# rebuilt refcount structure, same discards). After -r all qemu-img check calls blkimg's copy
# clean wherever it calls its own clean, and qemu-img compare finds the guest data unchanged.
# Then: an image a running qemu-io holds is refused with qemu-img's message and left alone,
# and hostile images neither crash the repair nor make it write far past the file.
source "$SRCDIR/tests/lib.sh"
source "$SRCDIR/tests/interop/qcow2_poke.sh"

qi() { qemu-io "$@" >/dev/null || fail "qemu-io $*"; }

# repair_both IMAGE ARGS...: qemu-img and blkimg repair copies of IMAGE the same way.
repair_both() {
    local img=$1 qrc=0 brc=0
    shift
    cp "$img" q.qcow2; cp "$img" b.qcow2
    qemu-img check "$@" q.qcow2 >q.out 2>q.err || qrc=$?
    "$BLKIMG" check "$@" b.qcow2 >b.out 2>b.err || brc=$?
    sed -i "s/^qemu-img: //; s/q\.qcow2/IMG/g" q.out q.err
    sed -i "s/^blkimg: //; s/b\.qcow2/IMG/g" b.out b.err
    grep -q "Sanitizer\|runtime error" b.err && fail "check $* $img: sanitizer report: $(cat b.err)"
    [ "$qrc" = "$brc" ] || fail "check $* $img: exit $brc, qemu-img exits $qrc ($(cat q.out q.err))"
    cmp -s q.out b.out || fail "check $* $img: stdout '$(cat b.out)', qemu-img '$(cat q.out)'"
    cmp -s q.err b.err || fail "check $* $img: stderr '$(cat b.err)', qemu-img '$(cat q.err)'"
    # One deliberate difference: when a repair fails on a dirty image, qemu-img still clears
    # the dirty bit as it closes the image (hiding that its refcounts are wrong); blkimg
    # keeps it, so that the next writer repairs the image first.
    if [ "$qrc" = 1 ] && [ "$(cmp -l q.qcow2 b.qcow2)" = "$(printf '%6s %3s %3s' 80 0 1)" ]; then
        :
    else
        cmp -s q.qcow2 b.qcow2 || fail "check $* $img: the repaired file differs from qemu-img's ($(cmp q.qcow2 b.qcow2 | head -1))"
    fi
    echo "$qrc"
}

# repair IMAGE: every mode and output; after -r all the image is clean (if qemu-img's is)
# and reads as before.
repair() {
    local img=$1 m o rc
    for m in leaks all; do
        for o in human json; do repair_both "$img" -r "$m" --output="$o" >/dev/null || exit 1; done
        repair_both "$img" -q -r "$m" >/dev/null || exit 1
    done
    rc=$(repair_both "$img" -r all) || exit 1
    if qemu-img check -q q.qcow2 >/dev/null 2>&1; then
        qemu-img check b.qcow2 >b.chk 2>&1 || fail "$img after -r all: qemu-img check says $(cat b.chk)"
    fi
    # (An image whose damage makes reads fail cannot be compared; qemu-img's copy tells.)
    if qemu-img compare -q "$img" q.qcow2 2>/dev/null; then
        qemu-img compare -q "$img" b.qcow2 || fail "$img after -r all: the guest data changed"
    fi
    echo "$rc"
}
# expect_repair IMAGE EXIT: repair, and -r all ends with EXIT (as qemu-img)
expect_repair() {
    local rc
    rc=$(repair "$1") || exit 1
    [ "$rc" = "$2" ] || fail "check -r all $1: exits $rc, the test expects $2"
}

qemu-img create -q -f qcow2 a.qcow2 64M
qi -c 'write -P 1 0 1M' -c 'write -P 2 10M 3M' -c 'write -z 20M 1M' -c 'write -P 3 30M 64k' a.qcow2
# Snapshots: clusters with refcount 2.
cp a.qcow2 s.qcow2
qemu-img snapshot -c one s.qcow2; qi -c 'write -P 4 0 128k' s.qcow2
# Lazy refcounts, for the dirty bit.
qemu-img create -q -f qcow2 -o lazy_refcounts=on z.qcow2 64M
qi -c 'write -P 6 0 256k' -c 'write -P 7 5M 64k' z.qcow2
qemu-img convert -O qcow2 -c a.qcow2 c.qcow2

# A clean image: nothing to repair, qemu-img's plain report.
expect_repair a.qcow2 0
expect_repair s.qcow2 0
cp a.qcow2 leak.qcow2; poke leak.qcow2 leak; expect_repair leak.qcow2 0
cp a.qcow2 high.qcow2; poke high.qcow2 refcount-high; expect_repair high.qcow2 0
cp a.qcow2 low.qcow2; poke low.qcow2 refcount-low; expect_repair low.qcow2 0
cp s.qcow2 slow.qcow2; poke slow.qcow2 shared-low; expect_repair slow.qcow2 0
cp a.qcow2 twice.qcow2; poke twice.qcow2 twice; expect_repair twice.qcow2 0
cp a.qcow2 copied.qcow2; poke copied.qcow2 copied; expect_repair copied.qcow2 0
cp s.qcow2 cs.qcow2; poke cs.qcow2 copied-shared; expect_repair cs.qcow2 0
cp a.qcow2 l1c.qcow2; poke l1c.qcow2 l1-copied; expect_repair l1c.qcow2 0
cp a.qcow2 rbo.qcow2; poke rbo.qcow2 refblock-outside; expect_repair rbo.qcow2 0
cp a.qcow2 rbu.qcow2; poke rbu.qcow2 refblock-unaligned; expect_repair rbu.qcow2 0
cp z.qcow2 dirty.qcow2; poke dirty.qcow2 dirty; expect_repair dirty.qcow2 0
cp a.qcow2 cb.qcow2; poke cb.qcow2 corrupt-bit; expect_repair cb.qcow2 0
cp c.qcow2 cleak.qcow2; poke cleak.qcow2 leak; expect_repair cleak.qcow2 0
cp a.qcow2 pu.qcow2; poke pu.qcow2 prealloc-unaligned; expect_repair pu.qcow2 0
# qemu marks the image corrupt on the first read of the unaligned block and cannot check it
# again after repairing: "Check failed: No medium found", exit 1, as blkimg.
cp a.qcow2 rb0.qcow2; poke rb0.qcow2 refblock0-unaligned; expect_repair rb0.qcow2 1
# What no repair fixes: reported as qemu-img reports it, the data left alone.
cp a.qcow2 ua.qcow2; poke ua.qcow2 unaligned; expect_repair ua.qcow2 2
qemu-img compare -q a.qcow2 leak.qcow2 || fail "test setup: a leak changed the data"
cp c.qcow2 ceof.qcow2; poke ceof.qcow2 compressed-eof; expect_repair ceof.qcow2 2
ok "damaged images repaired as qemu-img repairs them"

# A refcount block a petabyte past the end: qemu-img grows the file to it; blkimg refuses
# to make such a file and rebuilds the structure instead, writing nothing far away.
cp a.qcow2 far.qcow2; poke far.qcow2 refblock-far
rc=0; "$BLKIMG" check -r all far.qcow2 >out 2>err || rc=$?
grep -q "Sanitizer\|runtime error" err && fail "refblock-far: $(cat err)"
[ "$rc" = 0 ] || fail "check -r all of refblock-far exits $rc: $(cat out err)"
[ "$(stat -c %s far.qcow2)" -lt $((64 << 20)) ] || fail "refblock-far: the file grew to $(stat -c %s far.qcow2) bytes"
qemu-img check -q far.qcow2 || fail "refblock-far: not clean after -r all"
qemu-img compare -q a.qcow2 far.qcow2 || fail "refblock-far: the guest data changed"
ok "a refcount block far past the end"

# Hostile images: one error line, exit 1, the file unchanged.
for what in huge-l1 reftable-eof; do
    cp a.qcow2 h.qcow2; poke h.qcow2 "$what"; cp h.qcow2 h.before
    for m in leaks all; do
        rc=0; "$BLKIMG" check -r "$m" h.qcow2 >out 2>err || rc=$?
        [ "$rc" = 1 ] || fail "check -r $m of $what image exits $rc ($(cat err))"
        [ "$(wc -l <err)" = 1 ] || fail "check -r $m of $what image: '$(cat err)'"
        cmp -s h.qcow2 h.before || fail "check -r $m of $what image changed it"
    done
done
ok "hostile images"

# A dirty image (lazy refcounts, qemu-io aborted before its refcounts reached the disk) opened
# read-write by blkimg (as a commit base, as a convert -n target) is repaired first, as qemu
# repairs it on open: the same bytes as qemu-io's open leaves, clean, and the data written
# afterwards is there. Read-only opens leave it as it is.
qemu-img create -q -f qcow2 -o lazy_refcounts=on zd.qcow2 64M
{ qemu-io -c 'write -P 3 0 2M' -c 'flush' -c 'write -P 4 4M 1M' -c abort zd.qcow2; } >/dev/null 2>&1 || true
[ "$(od -An -tx8 --endian=big -j 72 -N 8 zd.qcow2 | tr -d ' ')" = 0000000000000001 ] || fail "test setup: zd.qcow2 is not dirty"
rc=0; qemu-img check zd.qcow2 >/dev/null 2>&1 || rc=$?
[ "$rc" = 2 ] || fail "test setup: qemu-img check of the dirty image exits $rc, not 2"
cp zd.qcow2 zd.before
"$BLKIMG" check zd.qcow2 >/dev/null 2>&1 || true
"$BLKIMG" info zd.qcow2 | grep -q "cleanly shut down: no" || fail "info of the dirty image does not say so"
cmp -s zd.qcow2 zd.before || fail "a read-only open changed the dirty image"
cp zd.qcow2 zq.qcow2; qi -c 'flush' zq.qcow2
cp zd.qcow2 zb.qcow2; qemu-img create -q -f qcow2 -b zb.qcow2 -F qcow2 ztop.qcow2
"$BLKIMG" commit -q ztop.qcow2 || fail "commit into the dirty base"
cmp -s zq.qcow2 zb.qcow2 || fail "the base repaired on open differs from qemu's repair on open"
qemu-img check -q zb.qcow2 || fail "the base repaired on open is not clean"
qemu-img create -q -f qcow2 src.qcow2 64M; qi -c 'write -P 9 1M 64k' src.qcow2
cp zd.qcow2 zc.qcow2
"$BLKIMG" convert -n -O qcow2 src.qcow2 zc.qcow2 || fail "convert -n into the dirty image"
qemu-img check -q zc.qcow2 || fail "the convert target repaired on open is not clean"
qemu-img compare -q src.qcow2 zc.qcow2 || fail "the convert target repaired on open reads wrong"
ok "a dirty image is repaired when opened read-write"

# Locking: qemu-io holding the image read-write or read-only makes -r refuse it with
# qemu-img's message, the image untouched; plain check still works under a read-only holder.
cp a.qcow2 lk.qcow2; poke lk.qcow2 leak; cp lk.qcow2 lk.before
for holder_args in "-f qcow2 lk.qcow2" "-r -f qcow2 lk.qcow2"; do
    # shellcheck disable=SC2086
    qemu-io $holder_args -c 'sleep 20000' &
    holder=$!
    # The holder's own image (the last word), by inode: other tests' locks do not count.
    case "$holder_args" in -r*) wait_lock_on "${holder_args##* }" 201 ;; *) wait_lock_on "${holder_args##* }" 101 ;; esac
    for m in leaks all; do
        qrc=0; brc=0
        qemu-img check -r "$m" lk.qcow2 >q.out 2>q.err || qrc=$?
        "$BLKIMG" check -r "$m" lk.qcow2 >b.out 2>b.err || brc=$?
        sed -i "s/^qemu-img: //" q.err; sed -i "s/^blkimg: //" b.err
        [ "$qrc" = 1 ] || { kill "$holder"; fail "holder $holder_args: qemu-img check -r $m exits $qrc (test setup)"; }
        [ "$brc" = 1 ] || { kill "$holder"; fail "holder $holder_args: check -r $m exits $brc"; }
        cmp -s q.err b.err || { kill "$holder"; fail "holder $holder_args: check -r $m says '$(cat b.err)', qemu-img '$(cat q.err)'"; }
        if [ -s b.out ]; then kill "$holder"; fail "holder $holder_args: check -r $m printed '$(cat b.out)'"; fi
    done
    kill "$holder"; wait "$holder" 2>/dev/null || true
    cmp -s lk.qcow2 lk.before || fail "holder $holder_args: the image changed"
done
# Released: the repair works, and qemu-io can write afterwards (locks dropped).
"$BLKIMG" check -q -r leaks lk.qcow2 || fail "check -r leaks after the holders left"
qi -c 'write -P 9 0 4k' lk.qcow2
ok "a running qemu-io holding the image is refused"
echo ok
