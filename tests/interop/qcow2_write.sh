# The qcow2 write path against qemu: the same operations applied by blk-writeimg to one
# image and by qemu-io to a twin; our image must pass `qemu-img check` (no errors, no
# leaks), `qemu-img compare` must call the twins identical, and our reads must agree with
# qemu-img's.
source "$SRCDIR/tests/lib.sh"
: "${READIMG:?READIMG must point at blk-readimg}"
: "${WRITEIMG:?WRITEIMG must point at blk-writeimg}"

head -c 4M /dev/urandom >r1.bin
head -c 4M /dev/urandom >r2.bin
base64 -w 100 r1.bin | head -c 4M >text.bin

# ours_op / qemu_op OP: one operation in blk-writeimg's and in qemu-io's words.
#   w DATA OFF LEN | z OFF LEN | zu OFF LEN | d OFF LEN | c DATA OFF LEN | f | t SIZE [PREALLOC]
#   C DATA OFF LEN: we compress over allocated clusters, which qemu refuses: it writes plainly.
# DATA is a byte (0x5a) or @FILE.
qdata() { case $1 in @*) echo "-s ${1#@}" ;; *) echo "-P $1" ;; esac; }
ours_op() {
    set -- $1
    case $1 in
        w) echo "write $2 $3 $4" ;;
        z) echo "zero $2 $3" ;;
        zu) echo "zero $2 $3 unmap" ;;
        d) echo "discard $2 $3" ;;
        c | C) echo "compress $2 $3 $4" ;;
        f) echo "flush" ;;
        t) echo "truncate $2 ${3:-}" ;;
        *) fail "bad op $1" ;;
    esac
}
qemu_op() {
    set -- $1
    case $1 in
        w) echo "write $(qdata $2) $3 $4" ;;
        z) echo "write -z $2 $3" ;;
        zu) echo "write -z -u $2 $3" ;;
        d) echo "discard $2 $3" ;;
        c) echo "write -c $(qdata $2) $3 $4" ;;
        C) echo "write $(qdata $2) $3 $4" ;;  # qemu compresses into unallocated clusters only
        f) echo "flush" ;;
        t) echo "truncate ${3:+-m $3} $2" ;;
    esac
}

# check_clean IMG: qemu-img check finds neither errors nor leaks.
check_clean() {
    local rc=0
    qemu-img check "$1" >"$T/check.out" 2>&1 || rc=$?
    [ "$rc" = 0 ] || fail "qemu-img check $1 exited $rc: $(cat "$T/check.out")"
    grep -q "No errors were found on the image" "$T/check.out" || fail "qemu-img check $1: $(cat "$T/check.out")"
}

# same_reads IMG: blk-readimg and qemu-img read the same bytes.
same_reads() {
    qemu-img convert -U -O raw "$1" "$T/qemu.raw"
    "$READIMG" "$1" >"$T/ours.raw" || fail "blk-readimg failed on $1"
    cmp -s "$T/qemu.raw" "$T/ours.raw" || fail "blk-readimg and qemu-img read $1 differently"
}

# both NAME MAKE [WRITEIMG-FLAGS] -- OP...: MAKE IMG creates an image; it is called for
# NAME.ours.qcow2 and NAME.qemu.qcow2, then the ops run on each and the results are compared.
both() {
    local name=$1 make=$2; shift 2
    local flags=()
    while [ "$1" != -- ]; do flags+=("$1"); shift; done
    shift
    local ours=$name.ours.qcow2 qemu=$name.qemu.qcow2
    $make "$ours"
    $make "$qemu"
    local oops=() qargs=()
    for op in "$@"; do
        oops+=("$(ours_op "$op")")
        qargs+=(-c "$(qemu_op "$op")")
    done
    "$WRITEIMG" "${flags[@]}" "$ours" "${oops[@]}" 2>"$T/w.err" || fail "$name: blk-writeimg failed: $(cat "$T/w.err")"
    qemu-io -f qcow2 "${qargs[@]}" "$qemu" >/dev/null || fail "$name: qemu-io failed"
    check_clean "$ours"
    local rc=0
    qemu-img compare "$ours" "$qemu" >"$T/cmp.out" 2>&1 || rc=$?
    [ "$rc" = 0 ] || fail "$name: qemu-img compare: $(cat "$T/cmp.out")"
    same_reads "$ours"
    ok "$name"
}

MB=$((1 << 20))
SIZE=$((8 * MB))
# A mix: partial clusters, zeroes over data and holes, unmap, discard, the last cluster,
# in-place overwrites after a flush, and data from files (so misplaced bytes show).
OPS=("w @r1.bin 0 100k" "w 0x5a 150k 20k" "z 200k 64k" "w @r2.bin 300k 3k" "w @r1.bin 1M 512k"
     "zu 1200k 128k" "d 1100k 64k" "z 1400k 64k" "w 0x11 $((SIZE - 4096)) 4k" "f"
     "w @r2.bin 4k 8k" "w @text.bin 2M 1M" "z 2200k 8k" "w 0x33 6M 1536k" "d 6M 512k")

for cs in 512 4k 64k 2M; do
    mk() { qemu-img create -q -f qcow2 -o cluster_size=$cs "$1" $SIZE; }
    both "cs$cs" mk -- "${OPS[@]}"
done

mk() { qemu-img create -q -f qcow2 -o compat=0.10 "$1" $SIZE; }
both v2 mk -- "${OPS[@]}"

for rb in 1 2 4 8 16 32 64; do
    mk() { qemu-img create -q -f qcow2 -o refcount_bits=$rb "$1" $SIZE; }
    both "refbits$rb" mk -- "${OPS[@]}"
done

# Small clusters and wide refcounts: refcount blocks cover little, the table must grow
# several times (512-byte clusters, 64-bit refcounts: one table cluster covers 2 MiB).
for rb in 1 64; do
    mk() { qemu-img create -q -f qcow2 -o cluster_size=512,refcount_bits=$rb "$1" 32M; }
    both "growth$rb" mk -- "w @r1.bin 0 4M" "w @r2.bin 8M 4M" "w @text.bin 20M 4M" "d 1M 1M" "w 0x44 1M 512k"
    qemu-img info --output=json "growth$rb.ours.qcow2" >/dev/null
done

mk() { qemu-img create -q -f qcow2 -o lazy_refcounts=on "$1" $SIZE; }
both lazy mk -- "${OPS[@]}"

# cache.no-flush (qemu-img convert's default cache=unsafe): the same image, no host flushes.
qemu-img create -q -f qcow2 noflush.qcow2 $SIZE
qemu-img create -q -f qcow2 noflush.qemu.qcow2 $SIZE
nf_ops=()
nf_q=()
for op in "${OPS[@]}"; do nf_ops+=("$(ours_op "$op")"); nf_q+=(-c "$(qemu_op "$op")"); done
"$WRITEIMG" --image-opts "driver=qcow2,file.filename=noflush.qcow2,cache.no-flush=on" "${nf_ops[@]}" || fail "cache.no-flush writes failed"
qemu-io -f qcow2 "${nf_q[@]}" noflush.qemu.qcow2 >/dev/null
check_clean noflush.qcow2
qemu-img compare noflush.qcow2 noflush.qemu.qcow2 >/dev/null || fail "cache.no-flush: content differs"
ok "cache.no-flush"

# Backing chains: partial clusters copy the rest from the backing file.
qemu-img create -q -f raw base.raw $SIZE
qemu-io -f raw -c "write -s r2.bin 0 4M" -c "write -P 0x99 4M 4M" base.raw >/dev/null
qemu-img create -q -f qcow2 mid.qcow2 -b base.raw -F raw
qemu-io -f qcow2 -c "write -s r1.bin 1M 1M" -c "write -z 3M 64k" mid.qcow2 >/dev/null
mk() { qemu-img create -q -f qcow2 -b mid.qcow2 -F qcow2 "$1"; }
both chain mk -- "${OPS[@]}" "w 0x66 1030k 1k" "w 0x67 3100k 100"
mk() { qemu-img create -q -f qcow2 -o compat=0.10 -b mid.qcow2 -F qcow2 "$1"; }
both chain-v2 mk -- "${OPS[@]}"

# Extended L2: only the subclusters a write touches are allocated.
for b in none chain; do
    if [ $b = none ]; then mk() { qemu-img create -q -f qcow2 -o extended_l2=on "$1" $SIZE; }
    else mk() { qemu-img create -q -f qcow2 -o extended_l2=on -b mid.qcow2 -F qcow2 "$1"; }; fi
    both "extl2-$b" mk -- "${OPS[@]}" "w 0x21 4k 2k" "z 64k 8k" "w 0x22 130k 40k" "w 0x23 5000k 1k" "zu 5M 64k" \
        "w @r1.bin 5200k 100" "z 5200k 2k"
done

mk() { qemu-img create -q -f qcow2 -o extended_l2=on,cluster_size=2M -b mid.qcow2 -F qcow2 "$1"; }
both extl2-2M mk -- "${OPS[@]}" "w 0x21 4k 2k" "w 0x22 2100k 64k" "z 2304k 128k" "w 0x23 2400k 1k"

# External data files; with data_file_raw the data file stays a valid raw image.
for raw in off on; do
    mk() { qemu-img create -q -f qcow2 -o data_file="$1.data",data_file_raw=$raw "$1" $SIZE; }
    both "datafile-$raw" mk -- "${OPS[@]}"
    if [ $raw = on ]; then
        "$READIMG" datafile-on.ours.qcow2 >"$T/g.raw"
        cmp -n $SIZE "$T/g.raw" datafile-on.ours.qcow2.data || fail "the raw data file differs from the guest content"
        ok "data_file_raw: the data file is the guest content"
    fi
done
mk() { qemu-img create -q -f qcow2 -o data_file="$1.data",extended_l2=on -b mid.qcow2 -F qcow2 "$1"; }
both datafile-extl2-chain mk -- "${OPS[@]}"

# Compressed writes: packing, clusters that do not shrink (stored plain), overwriting
# compressed clusters partly (decompress and copy), zeroing and discarding them.
for ct in zlib zstd; do
    for cs in 4k 64k; do
        mk() { qemu-img create -q -f qcow2 -o compression_type=$ct,cluster_size=$cs "$1" $SIZE; }
        both "compress-$ct-$cs" mk -- "c @text.bin 0 1M" "c @r1.bin 1M 256k" "c 0x00 2M 128k" "c 0x41 3M 64k" \
            "w 0x5a 100k 1k" "w @r2.bin 1030k 10k" "z 200k 64k" "d 300k 128k" "f" "C @text.bin 0 64k" "w 0x77 3M 512" \
            "C @r2.bin 2M 64k" "C 0x42 384k 64k"
    done
done
COPS=("c @text.bin 0 1M" "c @r1.bin 1M 256k" "w 0x5a 100k 1k" "z 200k 64k" "d 512k 128k" "f" "C @text.bin 0 64k" "w 0x77 1M 512")
mk() { qemu-img create -q -f qcow2 -o compat=0.10 "$1" $SIZE; }
both compress-v2 mk -- "${COPS[@]}"
mk() { qemu-img create -q -f qcow2 -o refcount_bits=1 "$1" $SIZE; }
both compress-refbits1 mk -- "${COPS[@]}"
mk() { qemu-img create -q -f qcow2 -o cluster_size=2M "$1" $SIZE; }
both compress-2M mk -- "c @text.bin 0 4M" "w 0x5a 100k 1k" "c 0x31 6M 2M" "z 6M 64k"
mk() { qemu-img create -q -f qcow2 -o extended_l2=on -b mid.qcow2 -F qcow2 "$1"; }
both compress-extl2 mk -- "${COPS[@]}" "w 0x21 1M 2k" "z 1040k 2k"
# The last cluster of an image whose size is not a multiple of the cluster size.
mk() { qemu-img create -q -f qcow2 "$1" $((5 * MB + 12288)); }
both compress-tail mk -- "c @text.bin 5M 12k" "w 0x12 4M 4k"

# Preallocated images are written in place.
for p in metadata falloc full; do
    mk() { qemu-img create -q -f qcow2 -o preallocation=$p "$1" $SIZE; }
    both "prealloc-$p" mk -- "${OPS[@]}"
done

# Growing the image: a bigger L1 table when the old one is full.
mk() { qemu-img create -q -f qcow2 -o cluster_size=4k "$1" 1M; }
both resize mk -- "w @r1.bin 0 1M" "t 16M" "w @r2.bin 15M 1M" "t 20M" "w 0x33 19M 4k"

# map_shape: a JSON map without host offsets, neighbours with the same flags merged.
map_shape() {
    python3 -c '
import json, sys
out = []
for e in json.load(sys.stdin):
    e.pop("offset", None)
    if out and all(out[-1][k] == e[k] for k in ("depth", "present", "zero", "data")):
        out[-1]["length"] += e["length"]
    else:
        out.append(e)
for e in out:
    print(e)'
}

# Growing with preallocation (what create builds on): the new clusters are allocated as
# qemu allocates them, and map agrees on what is data and what reads zero.
for p in metadata falloc full; do
    for ext in off on; do
        mk() { qemu-img create -q -f qcow2 -o cluster_size=4k,extended_l2=$ext "$1" 1M; }
        [ $ext = on ] && mk() { qemu-img create -q -f qcow2 -o cluster_size=16k,extended_l2=on "$1" 1M; }
        both "resize-$p-extl2$ext" mk -- "w @r1.bin 4k 100k" "t 8M $p" "w 0x12 7M 8k" "t 9M $p"
        qemu-img map --output=json "resize-$p-extl2$ext.ours.qcow2" | map_shape >"$T/m1"
        qemu-img map --output=json "resize-$p-extl2$ext.qemu.qcow2" | map_shape >"$T/m2"
        cmp -s "$T/m1" "$T/m2" || fail "resize with $p: map differs from qemu's: $(diff "$T/m1" "$T/m2")"
    done
done
mk() { qemu-img create -q -f qcow2 -o data_file="$1.data",data_file_raw=on "$1" 1M; }
both resize-datafile-raw mk -- "w @r1.bin 4k 100k" "t 8M" "w 0x12 7M 8k"
cmp -n $((8 * MB)) "resize-datafile-raw.ours.qcow2.data" <("$READIMG" resize-datafile-raw.ours.qcow2) || fail "raw data file differs after a resize"

# Concurrent writers: four threads writing interleaved pieces that share clusters.
for cs in 4k 64k; do
    for chunk in 48k 100k; do
        mk() { qemu-img create -q -f qcow2 -o cluster_size=$cs "$1" $SIZE; }
        mk "par-$cs-$chunk.ours.qcow2"
        mk "par-$cs-$chunk.qemu.qcow2"
        "$WRITEIMG" "par-$cs-$chunk.ours.qcow2" "parallel 4 $chunk @r1.bin 3k 4M" || fail "parallel writes failed"
        qemu-io -f qcow2 -c "write -s r1.bin 3k 4M" "par-$cs-$chunk.qemu.qcow2" >/dev/null
        check_clean "par-$cs-$chunk.ours.qcow2"
        qemu-img compare "par-$cs-$chunk.ours.qcow2" "par-$cs-$chunk.qemu.qcow2" >/dev/null || fail "parallel $cs $chunk differs"
        ok "parallel writers, clusters $cs, pieces $chunk"
    done
done
mk() { qemu-img create -q -f qcow2 -b mid.qcow2 -F qcow2 "$1"; }
mk parchain.ours.qcow2
mk parchain.qemu.qcow2
"$WRITEIMG" parchain.ours.qcow2 "parallel 3 7k @r1.bin 1000 3M" || fail "parallel writes over a backing file failed"
qemu-io -f qcow2 -c "write -s r1.bin 1000 3M" parchain.qemu.qcow2 >/dev/null
check_clean parchain.ours.qcow2
qemu-img compare parchain.ours.qcow2 parchain.qemu.qcow2 >/dev/null || fail "parallel writes over a backing file differ"
ok "parallel writers over a backing file"

# incompat_bits IMG: the header's incompatible feature bits, in hex.
incompat_bits() { od -An -tx8 --endian=big -j 72 -N 8 "$1" | tr -d ' '; }

# Lazy refcounts: the dirty bit is on while metadata may be ahead of the refcounts and off
# after a clean flush. A kill after L2 tables reached the disk (resize writes them back; the
# refcounts wait) leaves a dirty image that still reads and is repaired when it is next
# opened read-write, as qemu repairs it.
expect_eq "lazy: dirty bit off after a flush" 0000000000000000 "$(incompat_bits lazy.ours.qcow2)"
qemu-img create -q -f qcow2 -o lazy_refcounts=on killed.qcow2 8M
rc=0
{ "$WRITEIMG" killed.qcow2 "write @r1.bin 0 100k" "truncate 16M" "write 0x5b 1M 64k" "die"; } 2>/dev/null || rc=$?
[ "$rc" = 137 ] || fail "blk-writeimg did not die as asked (exit $rc)"
expect_eq "lazy: dirty bit on after a kill" 0000000000000001 "$(incompat_bits killed.qcow2)"
same_reads killed.qcow2
cmp -s -n 102400 "$T/qemu.raw" r1.bin || fail "the killed image lost its data"
rc=0
qemu-img check killed.qcow2 >/dev/null 2>&1 || rc=$?
[ "$rc" = 2 ] || fail "qemu-img check of the killed image exited $rc, expected 2 (refcounts behind)"
# Opened read-write, it is repaired first (as qemu repairs it on open), then written; qemu-io
# does the same to a copy: both end clean and read the same.
cp killed.qcow2 killed.q.qcow2
"$WRITEIMG" killed.qcow2 "write 0x77 2M 64k" || fail "the dirty image (repaired on open) cannot be written"
qemu-io -c 'write -P 0x77 2M 64k' killed.q.qcow2 >/dev/null 2>&1 || fail "qemu-io could not write the killed image"
check_clean killed.qcow2
qemu-img compare -q killed.q.qcow2 killed.qcow2 || fail "the image repaired on open reads other data than qemu's"
ok "lazy refcounts: a kill leaves a dirty image that reads and repairs"

# Without lazy refcounts, a kill at the same point leaves at most leaked clusters.
qemu-img create -q -f qcow2 killed2.qcow2 8M
rc=0
{ "$WRITEIMG" killed2.qcow2 "write @r1.bin 0 100k" "truncate 16M" "write 0x5b 1M 64k" "die"; } 2>/dev/null || rc=$?
[ "$rc" = 137 ] || fail "blk-writeimg did not die as asked (exit $rc)"
expect_eq "no dirty bit without lazy refcounts" 0000000000000000 "$(incompat_bits killed2.qcow2)"
rc=0
qemu-img check killed2.qcow2 >"$T/check.out" 2>&1 || rc=$?
[ "$rc" = 0 ] || [ "$rc" = 3 ] || fail "killed image without lazy refcounts is corrupt: $(cat "$T/check.out")"
same_reads killed2.qcow2
ok "a kill without lazy refcounts leaks clusters at worst"

# The incomplete mark (convert -n): the corrupt bit keeps qemu off the image, the file's
# extended attribute lets us reopen it to finish, and clearing both leaves a clean image.
xattr() { python3 -c 'import os,sys; print(int("user.blkimg.incomplete" in os.listxattr(sys.argv[1])))' "$1"; }
qemu-img create -q -f qcow2 inc.qcow2 8M
rc=0
{ "$WRITEIMG" inc.qcow2 "incomplete on" "write @r1.bin 0 1M" "die"; } 2>/dev/null || rc=$?
[ "$rc" = 137 ] || fail "blk-writeimg did not die as asked (exit $rc)"
expect_eq "incomplete: corrupt bit set" 0000000000000002 "$(incompat_bits inc.qcow2)"
expect_eq "incomplete: xattr set" 1 "$(xattr inc.qcow2)"
qemu-img info --output=json inc.qcow2 | grep -q '"corrupt": true' || fail "qemu-img info does not see the mark"
! qemu-io -f qcow2 -c "write 0 512" inc.qcow2 >/dev/null 2>&1 || fail "qemu-io wrote to an image marked incomplete"
"$READIMG" inc.qcow2 >/dev/null || fail "an image marked incomplete cannot be read"
"$WRITEIMG" inc.qcow2 "write @r1.bin 0 1M" "incomplete off" || fail "our own mark kept us from finishing the copy"
expect_eq "incomplete off: corrupt bit clear" 0000000000000000 "$(incompat_bits inc.qcow2)"
expect_eq "incomplete off: xattr gone" 0 "$(xattr inc.qcow2)"
check_clean inc.qcow2
ok "incomplete mark set, honoured and cleared"

# A corrupt bit that is not our mark: read-write opens are refused as qemu refuses them.
qemu-img create -q -f qcow2 corrupt.qcow2 8M
qemu-io -f qcow2 -c "write -P 0x42 0 64k" corrupt.qcow2 >/dev/null
printf '\x02' | dd of=corrupt.qcow2 bs=1 seek=79 conv=notrunc status=none
expect_fail 1 "corrupt\.qcow2: Image is corrupt; cannot be opened read/write" "$WRITEIMG" corrupt.qcow2 "write 0 0 1"
same_reads corrupt.qcow2
ok "a corrupt image is refused read-write and still reads"

# Images with internal snapshots: every cluster and L2 table the snapshot shares is copied
# before it is written (never written in place), so the snapshot reads as before; the active
# image reads as qemu-io's copy after the same operations, and both pass qemu-img check.
for opts in "cluster_size=64k" "cluster_size=4k" "cluster_size=64k,extended_l2=on" "compat=0.10,cluster_size=4k"; do
    rm -f snap*.qcow2
    qemu-img create -q -f qcow2 -o "$opts" snap.qcow2 8M
    qemu-io -f qcow2 -c "write -P 0x21 0 3M" -c "write -P 0x22 5M 1M" snap.qcow2 >/dev/null
    case "$opts" in compat=*) ;; *) qemu-io -f qcow2 -c "write -c -P 0x23 4M 64k" snap.qcow2 >/dev/null ;; esac
    qemu-img snapshot -c s1 snap.qcow2
    qemu-io -f qcow2 -c "write -P 0x24 6M 64k" snap.qcow2 >/dev/null
    qemu-img snapshot -c s2 snap.qcow2
    cp snap.qcow2 snap.ref.qcow2; cp snap.qcow2 snap.qio.qcow2
    # v2 has no zero flag, and cannot grow with snapshots (qemu refuses it: so do we).
    zero_ops=(-c "write -z 1M 64k" -c "write -z -u 1200k 200k" -c "discard 2M 128k" -c "truncate 12M" -c "write -P 0x36 9M 64k")
    case "$opts" in compat=*) zero_ops=() ;; esac
    qemu-io -f qcow2 -c "write -P 0x31 1000 3000" -c "write -P 0x32 64k 200k" \
        -c "write -P 0x33 4M 100k" -c "write -P 0x34 5500k 1M" -c "write -P 0x35 6M 2k" "${zero_ops[@]}" snap.qio.qcow2 >/dev/null
    zero_ops=("zero 1M 64k" "zero 1200k 200k unmap" "discard 2M 128k" "truncate 12M" "write 0x36 9M 64k")
    case "$opts" in compat=*) zero_ops=() ;; esac
    "$WRITEIMG" snap.qcow2 "write 0x31 1000 3000" "write 0x32 64k 200k" \
        "parallel 4 4k 0x33 4M 100k" "write 0x34 5500k 1M" "write 0x35 6M 2k" "${zero_ops[@]}" ||
        fail "$opts: writing an image with snapshots"
    case "$opts" in compat=*)
        expect_fail 1 "Can't resize a v2 image which has snapshots" "$WRITEIMG" snap.qcow2 "truncate 12M"
        qemu-img compare -q snap.qio.qcow2 snap.qcow2 || fail "$opts: a refused resize changed the image" ;;
    esac
    qemu-img compare -q snap.qio.qcow2 snap.qcow2 || fail "$opts: the image with snapshots reads differently from qemu-io's"
    check_clean snap.qcow2
    for sn in s1 s2; do
        qemu-img convert -l "$sn" -O raw snap.ref.qcow2 snap.want.raw
        qemu-img convert -l "$sn" -O raw snap.qcow2 snap.got.raw
        cmp -s -n 8M snap.want.raw snap.got.raw || fail "$opts: snapshot $sn changed"
        cp snap.qcow2 snap.applied.qcow2; qemu-img snapshot -a "$sn" snap.applied.qcow2
        check_clean snap.applied.qcow2
    done
    ok "$opts: writes to an image with two snapshots copy the shared clusters first"
done

# Persistent dirty bitmaps: writes, zero writes, discards and compressed writes mark the
# enabled bitmaps (of every granularity), a resize resizes them all, and closing stores them
# with the in-use flag clear, bit for bit as qemu-io leaves them; both images check clean.
qemu-img create -q -f qcow2 bmw.qcow2 8M
qemu-img bitmap --add bmw.qcow2 a0
qemu-img bitmap --add -g 512k bmw.qcow2 a1
qemu-img bitmap --add -g 4k bmw.qcow2 a2
qemu-img bitmap --add --disable bmw.qcow2 d0
qemu-io -f qcow2 -c "write -P 0x41 0 256k" bmw.qcow2 >/dev/null
cp bmw.qcow2 bmw.qio.qcow2
qemu-io -f qcow2 -c "write -P 0x42 1000 3000" -c "write -z 1M 64k" -c "discard 2M 128k" -c "write -c -P 0x43 3M 64k" \
    -c "write -P 0x44 5000k 300k" -c "truncate 20M" -c "write -P 0x45 17M 4k" bmw.qio.qcow2 >/dev/null
"$WRITEIMG" bmw.qcow2 "write 0x42 1000 3000" "zero 1M 64k" "discard 2M 128k" "compress 0x43 3M 64k" \
    "parallel 3 4k 0x44 5000k 300k" "truncate 20M" "write 0x45 17M 4k" || fail "writing an image with bitmaps"
python3 "$SRCDIR/tests/qcow2_bitmaps.py" bmw.qio.qcow2 bmw.qcow2 >"$T/bm.out" || fail "$(cat "$T/bm.out")"
grep -q "'d0': 'flags=0 gran_bits=16 table=1 dirty=0 " "$T/bm.out" || fail "the disabled bitmap changed: $(cat "$T/bm.out")"
qemu-img compare -q bmw.qio.qcow2 bmw.qcow2 || fail "the image with bitmaps reads differently from qemu-io's"
check_clean bmw.qcow2
ok "persistent bitmaps marked, resized and stored as qemu does"

# Read-write opens we do not support yet say so in one line.
qemu-img create -q -f qcow2 bm.qcow2 8M
qemu-img bitmap --add bm.qcow2 b0
qemu-io -f qcow2 -c "write 0 0 1" -c 'sigraise 9' bm.qcow2 >/dev/null 2>&1 || true
expect_fail 1 "bm\.qcow2: bitmap 'b0' is inconsistent \(in use\); writing such images is not supported" "$WRITEIMG" bm.qcow2 "write 0 0 1"
expect_fail 1 "Lazy refcounts require" "$WRITEIMG" --image-opts "driver=qcow2,lazy-refcounts=on,file.filename=v2.ours.qcow2" "write 0 0 1"
ok "unsupported read-write opens refused"

# What a copy asks of a target, as qemu answers it: a fresh image reads as zeroes unless a
# backing file shows through; compression needs the image's own file.
facts() { "$WRITEIMG" "$1" facts; }
qemu-img create -q -f qcow2 f-plain.qcow2 8M
qemu-img create -q -f qcow2 -o preallocation=metadata f-prealloc.qcow2 8M
qemu-img create -q -f qcow2 -b mid.qcow2 -F qcow2 f-backing.qcow2
qemu-img create -q -f qcow2 -o data_file=f-data.bin f-data.qcow2 8M
expect_eq "fresh image" "zero_init=1 compress=1 incomplete=0" "$(facts f-plain.qcow2)"
expect_eq "preallocated image" "zero_init=1 compress=1 incomplete=0" "$(facts f-prealloc.qcow2)"
expect_eq "image over a backing file" "zero_init=0 compress=1 incomplete=0" "$(facts f-backing.qcow2)"
expect_eq "external data file" "zero_init=1 compress=0 incomplete=0" "$(facts f-data.qcow2)"
ok "has_zero_init and can_write_compressed"

# Stress: threads sharing every cluster (interleaved 1000-byte stripes) write and zero at
# random and read back; the image must match the model and stay consistent.
for cs in 512 4k 64k; do
    qemu-img create -q -f qcow2 -o cluster_size=$cs "stress-$cs.qcow2" 4M
    "$WRITEIMG" "stress-$cs.qcow2" "stress 4 10000 $cs" || fail "stress with $cs clusters"
    check_clean "stress-$cs.qcow2"
done
qemu-img create -q -f qcow2 -o extended_l2=on,cluster_size=16k -b mid.qcow2 -F qcow2 stress-extl2.qcow2 4M
"$WRITEIMG" stress-extl2.qcow2 "stress 4 10000 7" || fail "stress with extended L2 over a backing file"
check_clean stress-extl2.qcow2
qemu-img create -q -f qcow2 -o lazy_refcounts=on,refcount_bits=1,cluster_size=4k stress-lazy.qcow2 4M
"$WRITEIMG" stress-lazy.qcow2 "compress @text.bin 0 1M" "stress 3 10000 9" || fail "stress over compressed clusters"
check_clean stress-lazy.qcow2
ok "stress: concurrent writers sharing clusters"
