# Images blkimg creates against the ones qemu-img creates with the same options: qemu-img
# check passes, qemu-img info and map agree, qemu-io writes and reads ours, and blkimg info
# says what qemu-img info says about ours.
#
# Where the layouts legitimately differ, only allocation is not compared:
# - preallocation=falloc/full: qemu moves its refcount table behind the L1 table and puts the
#   L2 tables into the gaps and behind the data; blkimg writes header, refcount table,
#   refcount blocks, L1, L2 tables, then the data in one run (the same number of clusters,
#   except that qemu keeps one spare cluster for a 0-byte image);
# - images whose refcounts need more than one refcount block: qemu allocates the extra blocks
#   as it goes and scatters them; blkimg puts them all behind the first one.
# Everywhere else the files are byte for byte the same (checked below), except for the data
# file's name in the header, which differs here only because each tool has its own directory.
source "$SRCDIR/tests/lib.sh"

mkdir q b
for d in q b; do
    qemu-img create -q -f qcow2 "$d/base.qcow2" 5M
    qemu-io -f qcow2 -c 'write -P 0x42 0 1M' "$d/base.qcow2" >/dev/null
    qemu-img create -q -f raw "$d/base.raw" 3000000
done

# Plain shell tools below, no python per image (python takes half a second to start here).

# cmp -s, but past 64 MiB only where either file has data (a 1 TiB image is mostly holes).
same_bytes() {
    if [ "$(stat -c %s "$1")" -gt 67108864 ]; then python3 "$SRCDIR/tests/sparse_cmp.py" "$1" "$2"; else cmp -s "$1" "$2"; fi
}

# An info JSON without its actual-size line.
no_actual_size() { grep -v '"actual-size"'; }

# qemu-img map --output=json without host offsets and without "zero" (which says whether the
# host file has a hole there: another layout puts its holes elsewhere), ranges merged.
map_no_offsets() {
    sed -E 's/^\[//; s/\]$//; s/, "offset": [0-9]+//; s/, "zero": (true|false)//; s/\},?$//' |
        awk -F', ' '{
            start = $1; sub(/.*: /, "", start); len = $2; sub(/.*: /, "", len)
            rest = ""; for (i = 3; i <= NF; i++) rest = rest ", " $i
            if (rest == prev && start == end) { end += len; next }
            if (NR > 1) print pstart, end, prev
            pstart = start; end = start + len; prev = rest
        } END { print pstart, end, prev }'
}

# The number of refcount blocks of a qcow2 image.
refblocks() {
    local bits off n
    bits=$(od -An -t u4 --endian=big -j20 -N4 "$1")
    off=$(od -An -t u8 --endian=big -j48 -N8 "$1")
    n=$(od -An -t u4 --endian=big -j56 -N4 "$1")
    od -An -v -t x8 -j"$off" -N$((n << bits)) "$1" | tr -s ' ' '\n' | grep -c '[1-9a-f]'
}

virtual_size() { qemu-img info --output=json "$1" | grep '"virtual-size"' | tr -dc 0-9; }

n=0
# check_pair OPTS SIZE [exact]: create x.qcow2 with both tools and compare.
check_pair() {
    local opts=$1 size=$2 exact=${3:-}
    n=$((n + 1))
    local what="create -o $opts $size"
    (cd q && qemu-img create -q -f qcow2 ${opts:+-o "$opts"} x.qcow2 $size) || fail "qemu-img $what failed"
    (cd b && "$BLKIMG" create -q -f qcow2 ${opts:+-o "$opts"} x.qcow2 $size) || fail "blkimg $what failed"
    (cd b && qemu-img check -q x.qcow2) || fail "$what: qemu-img check finds errors in ours"
    # qemu's layout is only ours while one refcount block covers the image.
    [ "$exact" = exact ] && [ "$(refblocks q/x.qcow2)" -gt 1 ] && exact=""
    if [ "$exact" = exact ]; then
        expect_eq "$what: qemu-img info" "$(cd q && qemu-img info --output=json x.qcow2)" "$(cd b && qemu-img info --output=json x.qcow2)"
        expect_eq "$what: qemu-img map" "$(cd q && qemu-img map --output=json x.qcow2)" "$(cd b && qemu-img map --output=json x.qcow2)"
        case "$opts" in
            *data_file=*) ;;
            *) same_bytes q/x.qcow2 b/x.qcow2 || fail "$what: not byte for byte qemu's image" ;;
        esac
    else
        expect_eq "$what: qemu-img info" "$(cd q && qemu-img info --output=json x.qcow2 | no_actual_size)" \
            "$(cd b && qemu-img info --output=json x.qcow2 | no_actual_size)"
        expect_eq "$what: qemu-img map" "$(cd q && qemu-img map --output=json x.qcow2 | map_no_offsets)" \
            "$(cd b && qemu-img map --output=json x.qcow2 | map_no_offsets)"
    fi
    # The data files have the same length and bytes. (Their allocation may differ by the first
    # block, which qemu allocates in a new file unless it happens to write the tail first.)
    if [ -e q/d.raw ]; then
        same_bytes q/d.raw b/d.raw || fail "$what: the data files differ"
    fi
    # blkimg's info on our image is qemu-img's (the human text has no qemu 8 children).
    expect_eq "$what: blkimg info" "$(cd b && qemu-img info x.qcow2)" "$(cd b && "$BLKIMG" info x.qcow2)"
    # qemu-io writes our image and reads it back; qemu-img check stays happy.
    local bytes
    bytes=$(virtual_size b/x.qcow2)
    if [ "$bytes" -ge 131072 ]; then
        (cd b && qemu-io -f qcow2 -c 'write -P 0xab 0 64k' -c "write -P 0xcd $((bytes - 4096)) 4k" x.qcow2 >/dev/null) ||
            fail "$what: qemu-io cannot write ours"
        (cd b && qemu-io -f qcow2 -c 'read -P 0xab 0 64k' -c "read -P 0xcd $((bytes - 4096)) 4k" x.qcow2 | grep -q "^read 4096") ||
            fail "$what: qemu-io does not read back what it wrote"
        (cd b && qemu-img check -q x.qcow2) || fail "$what: qemu-img check after writing"
    fi
    rm -f q/x.qcow2 b/x.qcow2 q/d.raw b/d.raw
}

# Cluster sizes with every refcount width.
widths=(1 2 4 8 16 32 64)
i=0
for cs in 512 1k 2k 4k 8k 16k 32k 64k 128k 256k 512k 1M 2M; do
    check_pair "cluster_size=$cs,refcount_bits=${widths[$((i % 7))]}" 3M exact
    check_pair "cluster_size=$cs,refcount_bits=${widths[$(((i + 3) % 7))]},preallocation=metadata" 3145984 exact
    i=$((i + 1))
done
for rb in 1 8 64; do check_pair "refcount_bits=$rb" 100M exact; done
ok "cluster sizes and refcount widths"

# compat, lazy refcounts, extended L2, zstd.
check_pair "compat=0.10" 1M exact
check_pair "compat=0.10,cluster_size=4k,preallocation=metadata" 1000 exact
check_pair "compat=1.1,lazy_refcounts=on" 1M exact
check_pair "extended_l2=on" 1M exact
check_pair "extended_l2=on,cluster_size=16k,preallocation=metadata" 3145984 exact
check_pair "extended_l2=on,cluster_size=2M,preallocation=metadata" 5M exact
check_pair "compression_type=zstd" 1M exact
check_pair "compression_type=zstd,lazy_refcounts=on,extended_l2=on,refcount_bits=64" 1M exact
ok "compat, lazy refcounts, extended L2, zstd"

# Preallocation, odd sizes.
for size in 0 1000 3145984 100M; do
    check_pair "preallocation=off" $size exact
    check_pair "preallocation=metadata" $size exact
    check_pair "preallocation=falloc" $size
    check_pair "preallocation=full" $size
    check_pair "preallocation=full,extended_l2=on,cluster_size=32k" $size
done
ok "preallocation modes and odd sizes"

# External data files, with data_file_raw on and off.
for size in 1000 3145984; do
    check_pair "data_file=d.raw" $size exact
    check_pair "data_file=d.raw,data_file_raw=on" $size exact
    check_pair "data_file=d.raw,data_file_raw=on,extended_l2=on" $size exact
    check_pair "data_file=d.raw,preallocation=metadata,cluster_size=4k" $size exact
    check_pair "data_file=d.raw,data_file_raw=on,preallocation=full" $size exact
done
ok "external data files"

# Backing files (-F), the size taken from the backing file.
for d in q b; do mkdir -p "$d/sub"; done
for opts in "backing_file=base.qcow2,backing_fmt=qcow2" "backing_file=base.raw,backing_fmt=raw" \
    "backing_file=base.qcow2,backing_fmt=qcow2,compat=0.10" "backing_file=base.qcow2,backing_fmt=qcow2,cluster_size=512" \
    "backing_file=base.qcow2,backing_fmt=qcow2,extended_l2=on,preallocation=metadata"; do
    check_pair "$opts" "" exact
    check_pair "$opts" 8M exact
done
(cd q && qemu-img create -q -f qcow2 -b ../base.qcow2 -F qcow2 sub/x.qcow2)
(cd b && "$BLKIMG" create -q -f qcow2 -b ../base.qcow2 -F qcow2 sub/x.qcow2)
cmp -s q/sub/x.qcow2 b/sub/x.qcow2 || fail "a backing file relative to the image's directory"
(cd b && qemu-io -f qcow2 -c 'read -P 0x42 0 1M' sub/x.qcow2 | grep -q "^read 1048576") || fail "the overlay does not show its backing file"
ok "backing files"

# A 1 TiB image, plain and with preallocated metadata; metadata needing many refcount blocks.
check_pair "" 1T exact
check_pair "preallocation=metadata,cluster_size=2M,refcount_bits=1" 1T exact
check_pair "preallocation=metadata,cluster_size=4k,refcount_bits=64" 100M
ok "1 TiB images ($n pairs)"
