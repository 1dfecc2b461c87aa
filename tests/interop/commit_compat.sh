# commit against qemu-img 7.2 on chains qemu-img and qemu-io made: each chain is built
# twice, `blkimg commit` runs on one copy and `qemu-img commit` on the other, from another
# directory than the images (relative backing names). The bases must read the same
# (qemu-img compare), the base must pass qemu-img check, the top must be emptied (nothing
# allocated in it, qemu-img map) unless -d, and stdout and exit code must be qemu-img's.
# Then locking against a running qemu-io, and the error cases.
source "$SRCDIR/tests/lib.sh"

qi() { qemu-io "$@" >/dev/null || fail "qemu-io $*"; }

# Nothing of `top` is allocated in the top layer itself (qemu-img map: depth 0).
top_is_empty() {
    qemu-img map --output=json "$1" | python3 -c '
import json, sys
m = json.load(sys.stdin)
left = [e for e in m if e["depth"] == 0 and (e["data"] or e["zero"])]
sys.exit(1 if left else 0)' || fail "$2: top $1 still allocates data: $(qemu-img map "$1")"
}
top_has_data() {
    qemu-img map --output=json "$1" | grep -q '"depth": 0, .*"data": true' || fail "$2: top $1 was emptied"
}

# Can this file system punch holes? Without it the emptied top's space is not compared.
punch=0
can_punch_holes && punch=1

# The emptied top gives its host space back as qemu-img's does (qemu truncates the file
# or discards the clusters; blkimg discards them, pass-discard-snapshot): at most 256 KiB
# more than qemu-img's (blkimg keeps the emptied L2 tables).
top_space_freed() {
    [ "$punch" = 1 ] || return 0
    local b q
    b=$(du -k "b/$1/$2" | cut -f1)
    q=$(du -k "q/$1/$2" | cut -f1)
    [ "$b" -le $((q + 256)) ] || fail "$1: the emptied top keeps $b KiB of host space, qemu-img's $q KiB"
    echo "$1: emptied top keeps $b KiB (qemu-img $q KiB)"
}

# run_case NAME BASE TOP [ARGS...]: images are made in mk_NAME(DIR); blkimg runs in
# b/NAME, qemu-img in q/NAME, both called from the working directory.
run_case() {
    local name=$1 base=$2 top=$3; shift 3
    rm -rf "b/$name" "q/$name"; mkdir -p "b/$name" "q/$name"
    "mk_$name" "b/$name"
    cp -a "b/$name/." "q/$name/"
    qemu-img compare -q "b/$name/$top" "q/$name/$top" || fail "$name: setup"
    local before; before=$(mktemp -p .); qemu-img convert -O raw "b/$name/$top" "$before"
    local qrc=0 brc=0
    qemu-img commit "$@" "q/$name/$top" >q.out 2>q.err || qrc=$?
    "$BLKIMG" commit "$@" "b/$name/$top" >b.out 2>b.err || brc=$?
    [ "$qrc" = 0 ] || fail "$name: qemu-img commit $* failed: $(cat q.err)"
    [ "$brc" = 0 ] || fail "$name: blkimg commit $* exited $brc: $(cat b.err)"
    # -p: the steps between 0% and 100% (and how often a line repeats) follow each tool's
    # request sizes; the start, the end and everything else must agree.
    for f in q.out b.out; do tr '\r' '\n' <"$f" | grep -Ev '^    \((([1-9][0-9]?)\.[0-9]{2}|0\.[0-9][1-9]|0\.[1-9][0-9])/100%\)$' | uniq >"$f.lines"; done
    cmp -s q.out.lines b.out.lines || fail "$name: stdout '$(cat b.out.lines)', qemu-img '$(cat q.out.lines)'"
    [ ! -s b.err ] || fail "$name: stderr $(cat b.err)"
    qemu-img compare "b/$name/$base" "q/$name/$base" >/dev/null ||
        fail "$name: base differs from qemu-img's: $(qemu-img compare "b/$name/$base" "q/$name/$base")"
    local bsz qsz
    bsz=$(qemu-img info --output=json "b/$name/$base" | python3 -c 'import json,sys; print(json.load(sys.stdin)["virtual-size"])')
    qsz=$(qemu-img info --output=json "q/$name/$base" | python3 -c 'import json,sys; print(json.load(sys.stdin)["virtual-size"])')
    expect_eq "$name: base size" "$qsz" "$bsz"
    case "$base" in *.qcow2) qemu-img check -q "b/$name/$base" || fail "$name: qemu-img check of the base" ;; esac
    case " $* " in
        *" -d "* | *" -b "*) top_has_data "b/$name/$top" "$name" ;;
        *) top_is_empty "b/$name/$top" "$name"; qemu-img check -q "b/$name/$top" || fail "$name: check of the emptied top"
           top_space_freed "$name" "$top" ;;
    esac
    # The chain reads as qemu-img's does afterwards, and (emptied top or -d) as before.
    qemu-img compare -q "b/$name/$top" "q/$name/$top" || fail "$name: the top reads differently from qemu-img's"
    qemu-img compare -q -f qcow2 -F raw "b/$name/$top" "$before" || fail "$name: the top no longer reads as before"
    rm -f "$before"
    ok "$name: commit $*"
}

# qcow2 base, top with data over base data, zero clusters over base data, compressed
# clusters, partial clusters, and a base smaller than the top.
mk_q2() {
    qemu-img create -q -f qcow2 "$1/base.qcow2" 4M
    qi -c 'write -P 1 0 4M' "$1/base.qcow2"
    qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 "$1/top.qcow2" 6M
    qi -c 'write -P 2 64k 128k' -c 'write -z 1M 256k' -c 'write -c -P 3 2M 64k' -c 'write -P 4 3000 1000' \
        -c 'write -P 5 5M 64k' -c 'write -z 5200k 64k' "$1/top.qcow2"
}
run_case q2 base.qcow2 top.qcow2
run_case q2 base.qcow2 top.qcow2 -d
run_case q2 base.qcow2 top.qcow2 -p
run_case q2 base.qcow2 top.qcow2 -q -t none -r 100M

# raw base (grows too), zeroes punched into it.
mk_r2() {
    qemu-img create -q -f raw "$1/base.raw" 2M
    qi -f raw -c 'write -P 7 0 2M' "$1/base.raw"
    qemu-img create -q -f qcow2 -b base.raw -F raw "$1/top.qcow2" 3M
    qi -c 'write -z 0 128k' -c 'write -P 8 1M 1536k' -c 'write -c -P 9 192k 64k' "$1/top.qcow2"
}
run_case r2 base.raw top.qcow2
run_case r2 base.raw top.qcow2 -f qcow2

# qcow2 bases with internal snapshots: what the snapshots hold must survive the commit.
# Their clusters (and L2 tables) are shared with the active image, so each is copied before
# it is written. snap_case NAME SNAPSHOTS...: after run_case, every snapshot of b/NAME's base
# reads as it did before the commit (qemu-img convert -l, and snapshot -a on a copy), and
# the base passes qemu-img check.
snap_case() {
    local name=$1; shift
    rm -rf "r/$name"; mkdir -p "r/$name"; "mk_$name" "r/$name"
    local sn size
    size=$(qemu-img info --output=json "r/$name/base.qcow2" | python3 -c 'import json,sys; print(json.load(sys.stdin)["virtual-size"])')
    for sn in "$@"; do
        qemu-img convert -l "$sn" -O raw "r/$name/base.qcow2" want.raw
        qemu-img convert -l "$sn" -O raw "b/$name/base.qcow2" got.raw
        cmp -s -n "$size" want.raw got.raw || fail "$name: snapshot $sn reads differently after the commit (convert -l)"
        cp "b/$name/base.qcow2" applied.qcow2; cp "r/$name/base.qcow2" applied-ref.qcow2
        qemu-img snapshot -a "$sn" applied.qcow2; qemu-img snapshot -a "$sn" applied-ref.qcow2
        qemu-img compare -q applied-ref.qcow2 applied.qcow2 || fail "$name: snapshot $sn reads differently after the commit (snapshot -a)"
        qemu-img check -q applied.qcow2 || fail "$name: check after snapshot -a $sn"
    done
    rm -f want.raw got.raw applied.qcow2 applied-ref.qcow2
    qemu-img snapshot -l "b/$name/base.qcow2" | grep -c "^[0-9]" | grep -qx "$#" || fail "$name: the snapshot list changed"
    ok "$name: snapshots $* unchanged"
}
# One snapshot taken right after the data was written: every L2 table and data cluster of
# the base is shared with it.
mk_s1() {
    qemu-img create -q -f qcow2 "$1/base.qcow2" 4M
    qi -c 'write -P 1 0 3M' "$1/base.qcow2"
    qemu-img snapshot -c s1 "$1/base.qcow2"
    qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 "$1/top.qcow2" 6M
    qi -c 'write -P 2 64k 128k' -c 'write -z 1M 256k' -c 'write -c -P 3 2M 64k' -c 'write -P 4 3000 1000' \
        -c 'write -P 5 5M 64k' -c 'write -z 5200k 64k' "$1/top.qcow2"
}
run_case s1 base.qcow2 top.qcow2
snap_case s1 s1
# Two snapshots, writes between them and after, 4 KiB clusters (several L2 tables, some
# shared with one snapshot, some with both, some with none), a compressed cluster in the base.
mk_s2() {
    qemu-img create -q -f qcow2 -o cluster_size=4k "$1/base.qcow2" 3M
    qi -c 'write -P 1 0 1M' -c 'write -c -P 6 1536k 4k' "$1/base.qcow2"
    qemu-img snapshot -c s1 "$1/base.qcow2"
    qi -c 'write -P 7 512k 64k' -c 'write -P 8 2M 256k' "$1/base.qcow2"
    qemu-img snapshot -c s2 "$1/base.qcow2"
    qi -c 'write -P 9 2304k 8k' "$1/base.qcow2"
    qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 "$1/top.qcow2" 4M
    qi -c 'write -P 2 0 2k' -c 'write -P 3 500k 40k' -c 'write -z 1536k 4k' -c 'write -P 4 2100k 900k' -c 'write -c -P 5 3M 64k' "$1/top.qcow2"
}
run_case s2 base.qcow2 top.qcow2
snap_case s2 s1 s2
run_case s2 base.qcow2 top.qcow2 -d
snap_case s2 s1 s2
# Persistent dirty bitmaps: in the base, every range the commit writes is marked in each
# enabled bitmap (the disabled one stays as it was), the bitmaps follow the base's growth,
# and they are stored back with the in-use flag clear: bit for bit as qemu-img leaves them.
# In the top, emptying marks nothing (as in qemu).
mk_bm() {
    qemu-img create -q -f qcow2 "$1/base.qcow2" 4M
    qemu-img bitmap --add "$1/base.qcow2" b0
    qemu-img bitmap --add -g 128k "$1/base.qcow2" b2
    qemu-img bitmap --add --disable "$1/base.qcow2" b1
    qi -c 'write -P 1 0 1M' "$1/base.qcow2"
    qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 "$1/top.qcow2" 6M
    qemu-img bitmap --add "$1/top.qcow2" t0
    qi -c 'write -P 2 1536k 100k' -c 'write -z 3M 64k' -c 'write -c -P 3 2M 64k' -c 'write -P 4 5M 4k' -c 'discard 0 64k' "$1/top.qcow2"
}
for args in "" "-d"; do
    # shellcheck disable=SC2086
    run_case bm base.qcow2 top.qcow2 $args
    python3 "$SRCDIR/tests/qcow2_bitmaps.py" q/bm/base.qcow2 b/bm/base.qcow2 >bm.out || fail "bm $args: $(cat bm.out)"
    python3 "$SRCDIR/tests/qcow2_bitmaps.py" q/bm/top.qcow2 b/bm/top.qcow2 >bm.out || fail "bm $args: $(cat bm.out)"
    # 16 granules dirty before (qemu-io's 1M), 21 after (the commit's writes, zeroes included).
    python3 "$SRCDIR/tests/qcow2_bitmaps.py" b/bm/base.qcow2 | grep -q "'b0': 'flags=2 gran_bits=16 table=1 dirty=21 " ||
        fail "bm $args: the base's bitmap b0 was not marked: $(python3 "$SRCDIR/tests/qcow2_bitmaps.py" b/bm/base.qcow2)"
    ok "bm $args: the bitmaps of base and top as qemu-img leaves them"
done
# A bitmap left in use (a writer that died) is refused read-write, with nothing written.
rm -rf e2; mkdir e2; mk_bm e2
qemu-io -c 'write -P 5 0 64k' -c 'sigraise 9' e2/base.qcow2 >/dev/null 2>&1 || true
python3 "$SRCDIR/tests/qcow2_bitmaps.py" e2/base.qcow2 | grep -q "flags=3" || fail "setup: qemu-io left no in-use bitmap"
cp e2/base.qcow2 e2/base.before
expect_fail 1 "bitmap 'b0' is inconsistent \(in use\)" "$BLKIMG" commit e2/top.qcow2
cmp -s e2/base.qcow2 e2/base.before || fail "a refused commit changed the base with an in-use bitmap"
ok "a base whose bitmap is in use is refused"

# A top with an internal snapshot: emptied (as qemu-img empties it) without touching what
# its snapshot holds.
mk_ts() {
    qemu-img create -q -f qcow2 "$1/base.qcow2" 2M
    qi -c 'write -P 1 0 2M' "$1/base.qcow2"
    qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 "$1/top.qcow2" 2M
    qi -c 'write -P 2 0 512k' -c 'write -z 1M 64k' "$1/top.qcow2"
    qemu-img snapshot -c t1 "$1/top.qcow2"
    qi -c 'write -P 3 256k 512k' "$1/top.qcow2"
}
run_case ts base.qcow2 top.qcow2
rm -rf r/ts; mkdir -p r/ts; mk_ts r/ts
# What the snapshot itself holds (read without the backing file, which the commit changed),
# and what it reads through the chain, as after qemu-img's commit.
own() { qemu-img convert -l t1 -O raw "json:{\"driver\":\"qcow2\",\"file\":{\"driver\":\"file\",\"filename\":\"$1\"},\"backing\":null}" "$2"; }
own r/ts/top.qcow2 want.raw
own b/ts/top.qcow2 got.raw
cmp -s want.raw got.raw || fail "ts: the top's snapshot holds other data after the commit"
qemu-img convert -l t1 -O raw q/ts/top.qcow2 want.raw
qemu-img convert -l t1 -O raw b/ts/top.qcow2 got.raw
cmp -s want.raw got.raw || fail "ts: the top's snapshot reads differently from qemu-img's after the commit"
rm -f want.raw got.raw
ok "ts: the emptied top's snapshot unchanged"
# convert -n into an image with a snapshot: the same copy-before-write.
rm -rf cn; mkdir cn; mk_s2 cn
qemu-img create -q -f qcow2 cn/src.qcow2 3M
qi -c 'write -P 11 256k 1M' -c 'write -z 2M 128k' cn/src.qcow2
cp cn/base.qcow2 cn/ref.qcow2
"$BLKIMG" convert -n -O qcow2 cn/src.qcow2 cn/base.qcow2 || fail "convert -n into an image with snapshots"
qemu-img compare -q cn/src.qcow2 cn/base.qcow2 || fail "convert -n into an image with snapshots: content"
qemu-img check -q cn/base.qcow2 || fail "convert -n into an image with snapshots: check"
for sn in s1 s2; do
    qemu-img convert -l "$sn" -O raw cn/ref.qcow2 cn/want.raw
    qemu-img convert -l "$sn" -O raw cn/base.qcow2 cn/got.raw
    cmp -s cn/want.raw cn/got.raw || fail "convert -n into an image with snapshots: snapshot $sn changed"
done
ok "convert -n into an image with snapshots keeps them"
# A v2 base with a snapshot cannot grow (qemu refuses it too): nothing is written.
rm -rf v2s; mkdir v2s
qemu-img create -q -f qcow2 -o compat=0.10 v2s/base.qcow2 1M
qemu-img snapshot -c s1 v2s/base.qcow2
qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 v2s/top.qcow2 2M
qi -c 'write -P 3 0 64k' v2s/top.qcow2
cp v2s/base.qcow2 v2s/base.before; cp v2s/top.qcow2 v2s/top.before
qemu-img commit -q v2s/top.qcow2 2>/dev/null && fail "qemu-img commit grew a v2 base with a snapshot (test setup)"
expect_fail 1 "^blkimg: Could not resize the base image: Can't resize a v2 image which has snapshots$" "$BLKIMG" commit v2s/top.qcow2
cmp -s v2s/base.qcow2 v2s/base.before || fail "a refused commit changed the v2 base"
cmp -s v2s/top.qcow2 v2s/top.before || fail "a refused commit changed the top"
ok "a v2 base with a snapshot that would have to grow is refused, as qemu-img refuses it"

# Three layers, the middle one in a subdirectory named relatively: the default base is the
# middle image; -b names the bottom one (as stored in the middle image, or by a path that
# resolves to it), committing the middle one too.
mk_q3() {
    mkdir -p "$1/sub"
    qemu-img create -q -f qcow2 "$1/base.qcow2" 2M
    qi -c 'write -P 1 0 2M' "$1/base.qcow2"
    qemu-img create -q -f qcow2 -b ../base.qcow2 -F qcow2 "$1/sub/mid.qcow2" 2M
    qi -c 'write -P 2 0 512k' -c 'write -z 1M 64k' "$1/sub/mid.qcow2"
    qemu-img create -q -f qcow2 -b sub/mid.qcow2 -F qcow2 "$1/top.qcow2" 3M
    qi -c 'write -P 3 256k 512k' -c 'write -c -P 4 1536k 64k' -c 'write -P 5 2M 1M' "$1/top.qcow2"
}
run_case q3 sub/mid.qcow2 top.qcow2
run_case q3 base.qcow2 top.qcow2 -b ../base.qcow2
# The qemu-img run gets its own absolute path: it must name its copy.
rm -rf b/q3 q/q3; mkdir -p b/q3 q/q3; mk_q3 b/q3; cp -a b/q3/. q/q3/
qemu-img commit -q -b "$PWD/q/q3/base.qcow2" q/q3/top.qcow2
"$BLKIMG" commit -q -b "$PWD/b/q3/base.qcow2" b/q3/top.qcow2 || fail "commit -b ABSOLUTE"
qemu-img compare -q b/q3/base.qcow2 q/q3/base.qcow2 || fail "commit -b ABSOLUTE: bases differ"
qemu-img check -q b/q3/base.qcow2 || fail "commit -b ABSOLUTE: check"
# With --image-opts.
rm -rf b/q3 q/q3; mkdir -p b/q3 q/q3; mk_q3 b/q3; cp -a b/q3/. q/q3/
qemu-img commit -q --image-opts driver=qcow2,file.filename=q/q3/top.qcow2
"$BLKIMG" commit -q --image-opts driver=qcow2,file.filename=b/q3/top.qcow2 || fail "commit --image-opts"
qemu-img compare -q b/q3/sub/mid.qcow2 q/q3/sub/mid.qcow2 || fail "commit --image-opts: bases differ"
top_is_empty b/q3/top.qcow2 "--image-opts"
# qemu-img commit opens with discard=unmap as its default (BDRV_O_UNMAP), so detect-zeroes=unmap
# is accepted (convert and info refuse it without discard=unmap).
rm -rf b/q3 q/q3; mkdir -p b/q3 q/q3; mk_q3 b/q3; cp -a b/q3/. q/q3/
qemu-img commit -q --image-opts driver=qcow2,detect-zeroes=unmap,file.filename=q/q3/top.qcow2
"$BLKIMG" commit -q --image-opts driver=qcow2,detect-zeroes=unmap,file.filename=b/q3/top.qcow2 ||
    fail "commit --image-opts with detect-zeroes=unmap"
qemu-img compare -q b/q3/sub/mid.qcow2 q/q3/sub/mid.qcow2 || fail "commit detect-zeroes=unmap: bases differ"
qemu-img check -q b/q3/sub/mid.qcow2 || fail "commit detect-zeroes=unmap: check"
ok "commit -b with an absolute path, --image-opts (detect-zeroes=unmap too)"

# Errors: exit code and message as qemu-img's.
same_error() {
    # qemu-img's probing warning (WARNING / Automatically / Specify the) is not compared;
    # usage errors name the program, so blkimg's name is read as qemu-img's.
    QEMU_ERR_SED='/^WARNING|^ +Automatically|^ +Specify the/d' BLK_ERR_SED='s/blkimg/qemu-img/' \
        same_as_qemu_img commit "$@"
}
rm -rf e; mkdir e; mk_q3 e
qemu-img create -q -f qcow2 e/lone.qcow2 1M
qemu-img create -q -f raw e/lone.raw 1M
cp e/base.qcow2 e/base.before
same_error e/lone.qcow2
same_error -f raw e/lone.raw
same_error e/lone.raw
same_error -b nope.qcow2 e/top.qcow2
same_error -b top.qcow2 e/top.qcow2
same_error -t bogus e/top.qcow2
same_error -r 12x e/top.qcow2
same_error
same_error e/top.qcow2 e/base.qcow2
same_error e/missing.qcow2
cmp -s e/base.qcow2 e/base.before || fail "a failed commit changed the base"
ok "error cases as qemu-img"

# Locking: a running qemu-io holding the base (read-write or read-only) or the top makes
# commit refuse, with nothing written.
# A read-only holder of the bottom image shares reading: only a commit into it is refused.
for holder_args in "-f qcow2 e/base.qcow2" "-r -f qcow2 e/base.qcow2" "-f qcow2 e/top.qcow2" "-f qcow2 e/sub/mid.qcow2"; do
    cp e/top.qcow2 e/top.before; cp e/sub/mid.qcow2 e/mid.before
    # shellcheck disable=SC2086
    qemu-io $holder_args -c 'sleep 20000' &
    holder=$!
    # The holder's own image (the last word), by inode: other tests' locks do not count.
    case "$holder_args" in -r*) wait_lock_on "${holder_args##* }" 201 ;; *) wait_lock_on "${holder_args##* }" 101 ;; esac
    for commit_args in "" "-b ../base.qcow2"; do
        case "$holder_args/$commit_args" in -r*/) continue ;; esac
        # shellcheck disable=SC2086
        qemu-img commit $commit_args e/top.qcow2 >/dev/null 2>&1 && fail "holder $holder_args: qemu-img commit $commit_args was not refused (test setup)"
        # shellcheck disable=SC2086
        expect_fail 1 "Failed to get .*lock.*is another process using the image \[.*\]\?" "$BLKIMG" commit $commit_args e/top.qcow2
    done
    kill "$holder"; wait "$holder" 2>/dev/null || true
    cmp -s e/base.qcow2 e/base.before || fail "holder $holder_args: the base changed"
    cmp -s e/sub/mid.qcow2 e/mid.before || fail "holder $holder_args: the middle image changed"
    cmp -s e/top.qcow2 e/top.before || fail "holder $holder_args: the top changed"
done
# Released: it works again, and the base is writable by qemu-io afterwards (locks dropped).
"$BLKIMG" commit -q e/top.qcow2 || fail "commit after the holders left"
qi -c 'write -P 9 0 4k' e/sub/mid.qcow2
ok "a running qemu-io holding the chain is refused"
