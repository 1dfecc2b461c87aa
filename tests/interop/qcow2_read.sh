# Images qemu-img/qemu-io write read back byte for byte through blkimg's qcow2 driver.
source "$SRCDIR/tests/lib.sh"

# same_content IMAGE [qemu-img open args]: blkimg's bytes == qemu-img's bytes.
same_content() {
    local img=$1
    qemu-img convert -U -O raw "$img" "$T/qemu.raw"
    "$READIMG" "$img" >"$T/ours.raw" || fail "blk-readimg failed on $img"
    cmp -s "$T/qemu.raw" "$T/ours.raw" || fail "content of $img differs from qemu-img's"
    ok "$img reads back identically"
}

# A mix qemu-io writes: data, a zero range, data at an odd spot and near the end.
fill() {
    local img=$1 size=$2
    qemu-io -f qcow2 -c "write -P 0x5a 0 100k" -c "write -z 200k 64k" -c "write -P 0x7e 300k 3k" \
        -c "write -P 0x11 $((size - 4096)) 4096" "$img" >/dev/null
}

for cs in 512 4096 65536 2M; do
    qemu-img create -q -f qcow2 -o cluster_size=$cs c$cs.qcow2 8M
    fill c$cs.qcow2 $((8 << 20))
    same_content c$cs.qcow2
done

qemu-img create -q -f qcow2 -o compat=0.10 v2.qcow2 8M
fill v2.qcow2 $((8 << 20)); same_content v2.qcow2

for rb in 1 64; do
    qemu-img create -q -f qcow2 -o refcount_bits=$rb rb$rb.qcow2 8M
    fill rb$rb.qcow2 $((8 << 20)); same_content rb$rb.qcow2
done

qemu-img create -q -f qcow2 -o lazy_refcounts=on lazy.qcow2 8M
fill lazy.qcow2 $((8 << 20)); same_content lazy.qcow2

qemu-img create -q -f qcow2 -o preallocation=metadata prealloc.qcow2 8M
fill prealloc.qcow2 $((8 << 20)); same_content prealloc.qcow2

# Compressed clusters, zlib and zstd, from real (compressible) data.
head -c 4M /dev/urandom | base64 > text.raw
truncate -s 8M text.raw
for ct in zlib zstd; do
    qemu-img convert -f raw -O qcow2 -c -o compression_type=$ct text.raw comp-$ct.qcow2
    same_content comp-$ct.qcow2
    qemu-img convert -f raw -O qcow2 -c -o compression_type=$ct,cluster_size=4k text.raw comp4k-$ct.qcow2
    same_content comp4k-$ct.qcow2
done

# Extended L2: partial subcluster writes leave allocated, zero and unallocated subclusters.
qemu-img create -q -f raw ebase.raw 8M
qemu-io -f raw -c "write -P 0x99 0 8M" ebase.raw >/dev/null
qemu-img create -q -f qcow2 -o extended_l2=on -b ebase.raw -F raw ext.qcow2 8M
qemu-io -f qcow2 -c "write -P 0x21 4k 2k" -c "write -z 64k 8k" -c "write -P 0x22 130k 40k" ext.qcow2 >/dev/null
same_content ext.qcow2

# A size that is not cluster-aligned.
qemu-img create -q -f qcow2 odd.qcow2 $((5 * 1024 * 1024 + 12345))
qemu-io -f qcow2 -c "write -P 0x33 5M 8k" odd.qcow2 >/dev/null 2>&1 || qemu-io -f qcow2 -c "write -P 0x33 5M 4k" odd.qcow2 >/dev/null
same_content odd.qcow2

# A three-deep chain with relative names in subdirectories, the base smaller than the top.
mkdir -p chain/sub
qemu-img create -q -f qcow2 chain/sub/base.qcow2 4M
qemu-io -f qcow2 -c "write -P 1 0 1M" -c "write -P 2 3M 1M" chain/sub/base.qcow2 >/dev/null
qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 chain/sub/mid.qcow2 6M
qemu-io -f qcow2 -c "write -P 3 512k 1M" chain/sub/mid.qcow2 >/dev/null
qemu-img create -q -f qcow2 -b sub/mid.qcow2 -F qcow2 chain/top.qcow2 8M
qemu-io -f qcow2 -c "write -P 4 3584k 1M" -c "write -z 0 64k" chain/top.qcow2 >/dev/null
same_content chain/top.qcow2

# A raw backing file.
qemu-img create -q -f qcow2 -b ebase.raw -F raw rawback.qcow2 8M
qemu-io -f qcow2 -c "write -P 5 1M 64k" rawback.qcow2 >/dev/null
same_content rawback.qcow2

# External data files, with and without data_file_raw.
for raw in off on; do
    qemu-img create -q -f qcow2 -o data_file=data-$raw.bin,data_file_raw=$raw ext-$raw.qcow2 8M
    fill ext-$raw.qcow2 $((8 << 20))
    same_content ext-$raw.qcow2
done

# -f raw is honoured even on a qcow2 file: the bytes are the file's.
"$READIMG" -f raw c65536.qcow2 | cmp -s - c65536.qcow2 || fail "-f raw did not read the file's own bytes"
ok "-f raw honoured"
