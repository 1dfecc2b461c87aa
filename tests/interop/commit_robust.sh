# commit never loses data: a commit that stops half-way (SIGINT or SIGTERM during the copy,
# or an I/O error injected into each write, flush or resize of the base in turn, through the
# inject-error filter) exits 1 with one error line and leaves
# - the base an image `qemu-img check` accepts: exit 0, or 3 (leaked clusters only, which
#   qemu-img itself calls harmless: a failed write after its refcount update leaks them),
# - every 64 KiB cluster of the base holding either its old content or the content the
#   commit was writing (the chain's, read through the top before the commit),
# - the top untouched (byte for byte).
# An error while the top is emptied (after the base was written and flushed) loses nothing
# either: the base then holds everything, and the chain reads as before.
source "$SRCDIR/tests/lib.sh"

qi() { qemu-io "$@" >/dev/null || fail "qemu-io $*"; }

# per_cluster OLD NEW CUR: every 64 KiB cluster of CUR equals OLD's or NEW's (OLD is padded
# with zeroes to NEW's length: a grown base reads zeroes there). Prints "new old" counts of
# the clusters that differ between OLD and NEW.
per_cluster() {
    python3 - "$@" <<'PY'
import sys
old, new, cur = (open(p, "rb").read() for p in sys.argv[1:4])
cs = 65536
if not len(old) <= len(cur) <= len(new):
    sys.exit("base length %d, expected %d to %d" % (len(cur), len(old), len(new)))
old = old.ljust(len(new), b"\0")
n_new = n_old = 0
for off in range(0, len(cur), cs):
    c, o, n = cur[off:off + cs], old[off:off + cs], new[off:off + cs]
    if c != o and c != n:
        sys.exit("cluster at %d holds neither its old nor its new content" % off)
    if o != n:
        if c == n: n_new += 1
        else: n_old += 1
print(n_new, n_old)
PY
}

# after_failure WHAT BASE FMT TOP TOPSUM OLDRAW NEWRAW RC ERRFILE: the guarantees above.
after_failure() {
    local what=$1 base=$2 fmt=$3 top=$4 topsum=$5 old=$6 new=$7 rc=$8 err=$9
    [ "$rc" = 1 ] || fail "$what: exit $rc, expected 1; stderr: $(cat "$err")"
    [ "$(wc -l <"$err")" = 1 ] || fail "$what: expected one error line: $(cat "$err")"
    if grep -q "Sanitizer\|runtime error" "$err"; then fail "$what: sanitizer report: $(cat "$err")"; fi
    [ "$(sha256sum <"$top")" = "$topsum" ] || fail "$what: the top changed"
    if [ "$fmt" = qcow2 ]; then
        local crc=0
        qemu-img check "$base" >check.out 2>&1 || crc=$?
        [ "$crc" = 0 ] || [ "$crc" = 3 ] || fail "$what: qemu-img check of the base exited $crc: $(cat check.out)"
    fi
    qemu-img convert -f "$fmt" -O raw "$base" cur.raw
    per_cluster "$old" "$new" cur.raw >counts || fail "$what: $(cat counts)"
}

# The small chain for the error sweeps: a qcow2 base with 4 KiB clusters (so the commit
# allocates L2 tables, grows the L1 table and refcount blocks) partly allocated, smaller
# than the top; the top has data over base data and over holes, zeroes, a compressed
# cluster and data beyond the base's end.
mk_small() {
    rm -f base.qcow2 top.qcow2
    qemu-img create -q -f qcow2 -o cluster_size=4k base.qcow2 4M
    qi -c 'write -P 1 0 1M' -c 'write -P 6 3M 64k' base.qcow2
    qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 top.qcow2 6M
    qi -c 'write -P 2 512k 1536k' -c 'write -z 3M 64k' -c 'write -c -P 3 2560k 64k' -c 'write -P 4 4M 1M' top.qcow2
}
mk_small
cp base.qcow2 base.orig; cp top.qcow2 top.orig
qemu-img convert -O raw base.orig old.raw
qemu-img convert -O raw top.orig new.raw
topsum=$(sha256sum <top.orig)

# sweep EVENT FMT: fails the Nth EVENT request to the base's file for N = 0, 1, ... until a
# commit gets through; returns the number of failed runs in $swept.
sweep() {
    local event=$1 n rc
    swept=0
    for n in $(seq 0 400); do
        cp base.orig base.qcow2; cp top.orig top.qcow2
        rc=0
        "$BLKIMG" commit --image-opts "driver=qcow2,file.filename=top.qcow2,backing.driver=qcow2,backing.file.driver=inject-error,backing.file.event=$event,backing.file.skip=$n,backing.file.count=1,backing.file.file.filename=base.qcow2" \
            >out 2>err || rc=$?
        if [ "$rc" = 0 ]; then
            qemu-img compare -q -f raw -F qcow2 new.raw base.qcow2 || fail "$event #$n passed: the base is not the top's content"
            return
        fi
        grep -Eq "^blkimg: Could not (commit into 'base.qcow2'|resize the base image): .*Input/output error$" err ||
            fail "$event #$n: the error does not say what failed: $(cat err)"
        after_failure "$event #$n" base.qcow2 qcow2 top.qcow2 "$topsum" old.raw new.raw "$rc" err
        swept=$((swept + 1))
    done
    fail "$event: the commit never got through"
}
# sweep_any LABEL FMT BASE_ORIG BASE TOP_ORIG TOP TOPSUM OLD NEW [HOOK]: fails request N (of
# any kind) to the base's file for N = 0, 1, ... until a commit gets through; every failure is
# checked by after_failure, and HOOK, if given, runs after every attempt with N. The number of
# failed runs is left in $swept.
sweep_any() {
    local label=$1 fmt=$2 base_orig=$3 base=$4 top_orig=$5 top=$6 sum=$7 old=$8 new=$9 hook=${10:-} n rc
    swept=0
    for n in $(seq 0 399); do
        cp "$base_orig" "$base"; cp "$top_orig" "$top"
        rc=0
        "$BLKIMG" commit --image-opts "driver=qcow2,file.filename=$top,backing.driver=$fmt,backing.file.driver=inject-error,backing.file.event=any,backing.file.skip=$n,backing.file.count=1,backing.file.file.filename=$base" \
            >out 2>err || rc=$?
        [ -z "$hook" ] || "$hook" "$n"
        [ "$rc" = 0 ] && return
        after_failure "$label, request #$n" "$base" "$fmt" "$top" "$sum" "$old" "$new" "$rc" err
        swept=$((swept + 1))
    done
    fail "$label: the commit never got through"
}
sweep write
[ "$swept" -ge 10 ] || fail "write sweep: only $swept writes failed (expected data, L2, L1, refcount and header writes)"
ok "an error in each of the base's $swept writes: clean or leaking base, old or new clusters, top untouched"
sweep flush
[ "$swept" -ge 1 ] || fail "flush sweep: no flush failed"
ok "an error in each of the base's $swept flushes"
sweep truncate
[ "$swept" -ge 1 ] || fail "truncate sweep: no resize failed"
ok "an error in each of the base's $swept resizes"

# A base with two internal snapshots (every L2 table and cluster shared with one or both):
# an error at each write also leaves the snapshots reading as before.
qemu-img create -q -f qcow2 -o cluster_size=4k sbase.orig 4M
qi -c 'write -P 1 0 1M' -c 'write -P 6 3M 64k' sbase.orig
qemu-img snapshot -c s1 sbase.orig
qi -c 'write -P 7 256k 64k' sbase.orig
qemu-img snapshot -c s2 sbase.orig
cp sbase.orig sbase.qcow2
qemu-img create -q -f qcow2 -b sbase.qcow2 -F qcow2 stop.orig 4M
qi -c 'write -P 2 512k 1536k' -c 'write -z 3M 64k' -c 'write -c -P 3 2560k 64k' stop.orig
qemu-img convert -O raw sbase.orig sold.raw
qemu-img convert -O raw stop.orig snew.raw
for sn in s1 s2; do qemu-img convert -l "$sn" -O raw sbase.orig "snap-$sn.raw"; done
stopsum=$(sha256sum <stop.orig)
snapshots_unchanged() {
    local sn
    for sn in s1 s2; do
        qemu-img convert -l "$sn" -O raw sbase.qcow2 got.raw
        cmp -s "snap-$sn.raw" got.raw || fail "snapshot base, request #$1: snapshot $sn changed"
    done
}
sweep_any "snapshot base" qcow2 sbase.orig sbase.qcow2 stop.orig stop.qcow2 "$stopsum" sold.raw snew.raw snapshots_unchanged
qemu-img compare -q -f raw -F qcow2 snew.raw sbase.qcow2 || fail "snapshot base: the committed base is not the top's content"
[ "$swept" -ge 10 ] || fail "snapshot base: only $swept requests failed"
ok "a base with snapshots: an error in each of its $swept requests leaves the snapshots as they were"

# A base with persistent bitmaps: the same guarantees at each request (its bitmaps may be
# left flagged in use, which qemu-img check accepts and qemu then treats as inconsistent,
# as after a crash of qemu itself); a commit that gets through leaves them not in use.
qemu-img create -q -f qcow2 bbase.orig 4M
qemu-img bitmap --add bbase.orig b0
qi -c 'write -P 1 0 1M' bbase.orig
cp bbase.orig bbase.qcow2
qemu-img create -q -f qcow2 -b bbase.qcow2 -F qcow2 btop.orig 6M
qi -c 'write -P 2 512k 1M' -c 'write -P 3 5M 64k' btop.orig
qemu-img convert -O raw bbase.orig bold.raw
qemu-img convert -O raw btop.orig bnew.raw
btopsum=$(sha256sum <btop.orig)
sweep_any "bitmap base" qcow2 bbase.orig bbase.qcow2 btop.orig btop.qcow2 "$btopsum" bold.raw bnew.raw
qemu-img compare -q -f raw -F qcow2 bnew.raw bbase.qcow2 || fail "bitmap base: the committed base is not the top's content"
python3 "$SRCDIR/tests/qcow2_bitmaps.py" bbase.qcow2 | grep -q "'b0': 'flags=2 " || fail "bitmap base: b0 left in use"
[ "$swept" -ge 5 ] || fail "bitmap base: only $swept requests failed"
ok "a base with a bitmap: an error in each of its $swept requests"

# ENOSPC, every write from the 5th on: the message says so.
cp base.orig base.qcow2; cp top.orig top.qcow2
rc=0
"$BLKIMG" commit --image-opts "driver=qcow2,file.filename=top.qcow2,backing.driver=qcow2,backing.file.driver=inject-error,backing.file.skip=4,backing.file.errno=ENOSPC,backing.file.file.filename=base.qcow2" 2>err || rc=$?
grep -q "No space left on device" err || fail "ENOSPC: $(cat err)"
after_failure "ENOSPC" base.qcow2 qcow2 top.qcow2 "$topsum" old.raw new.raw "$rc" err
ok "ENOSPC from the 5th write on"

# A raw base: each write (and the resize) failing in turn.
qemu-img create -q -f raw rbase.orig 4M
qi -f raw -c 'write -P 1 0 1M' rbase.orig
cp rbase.orig rbase.raw
qemu-img create -q -f qcow2 -b rbase.raw -F raw rtop.orig 6M
qi -c 'write -P 2 512k 1536k' -c 'write -z 3M 64k' -c 'write -c -P 3 2560k 64k' -c 'write -P 4 4M 1M' rtop.orig
qemu-img convert -O raw rtop.orig rnew.raw
rtopsum=$(sha256sum <rtop.orig)
sweep_any "raw base" raw rbase.orig rbase.raw rtop.orig rtop.qcow2 "$rtopsum" rbase.orig rnew.raw
[ "$swept" -ge 3 ] || fail "raw base: only $swept requests failed"
ok "raw base: an error in each of its $swept requests"

# An error while the top is emptied: the base already holds everything (flushed), so the
# chain still reads as before whatever part of the top was emptied.
n=0
while :; do
    cp base.orig base.qcow2; cp top.orig top.qcow2
    rc=0
    "$BLKIMG" commit --image-opts "driver=qcow2,file.driver=inject-error,file.event=any,file.skip=$n,file.count=1,file.file.filename=top.qcow2" \
        >out 2>err || rc=$?
    qemu-img compare -q -f raw -F qcow2 new.raw base.qcow2 || fail "top request #$n: the base is incomplete"
    qemu-img compare -q -f raw -F qcow2 new.raw top.qcow2 || fail "top request #$n: the chain reads differently"
    crc=0; qemu-img check top.qcow2 >check.out 2>&1 || crc=$?
    [ "$crc" = 0 ] || [ "$crc" = 3 ] || fail "top request #$n: qemu-img check of the top exited $crc: $(cat check.out)"
    [ "$rc" = 0 ] && break
    [ "$(wc -l <err)" = 1 ] || fail "top request #$n: expected one error line: $(cat err)"
    grep -q "^blkimg: Committed into 'base.qcow2', but could not empty the image: " err || fail "top request #$n: $(cat err)"
    n=$((n + 1))
    [ "$n" -lt 400 ] || fail "top: the commit never got through"
done
[ "$n" -ge 1 ] || fail "no request to the top failed"
ok "an error in each of the top's $n requests while it is emptied loses nothing"

# Signals: a 256 MiB top over a base that holds data in its first half, committed at
# 32 MiB/s (8 s); the signal lands once the progress shows 2% done, mid-copy.
rm -f *.qcow2 *.orig *.raw
qemu-img create -q -f qcow2 base.qcow2 256M
qi -c 'write -P 1 0 128M' base.qcow2
qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 top.qcow2
qi -c 'write -P 2 0 256M' top.qcow2
qemu-img convert -O raw base.qcow2 old.raw
qemu-img convert -O raw top.qcow2 new.raw
cp base.qcow2 base.orig
topsum=$(sha256sum <top.qcow2)
for sig in INT TERM; do
    cp base.orig base.qcow2
    "$BLKIMG" commit -p -r 32M top.qcow2 >out 2>err &
    pid=$!
    for _ in $(seq 300); do
        tr '\r' '\n' <out | grep -Eq '^ +\(([2-9]|[1-9][0-9])\.[0-9]{2}/100%\)' && break
        sleep 0.1
    done
    kill -s "$sig" "$pid"
    rc=0; wait "$pid" || rc=$?
    grep -q "^blkimg: interrupted by SIG$sig" err || fail "SIG$sig: $(cat err)"
    after_failure "SIG$sig" base.qcow2 qcow2 top.qcow2 "$topsum" old.raw new.raw "$rc" err
    read -r n_new n_old <counts
    [ "$n_new" -gt 0 ] && [ "$n_old" -gt 0 ] || fail "SIG$sig did not land mid-copy ($n_new clusters new, $n_old old)"
    ok "SIG$sig mid-copy ($n_new clusters written, $n_old not yet): exit 1, base checks clean, top untouched"
done
