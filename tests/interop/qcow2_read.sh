# Images qemu-img/qemu-io write read back byte for byte through blkimg's qcow2 driver.
source "$SRCDIR/tests/lib.sh"
source "$SRCDIR/tests/interop/variants.sh"
make_variants

# same_content IMAGE: blkimg's bytes == qemu-img's bytes.
same_content() {
    local img=$1
    qemu-img convert -U -O raw "$img" "$T/qemu.raw"
    "$READIMG" "$img" >"$T/ours.raw" || fail "blk-readimg failed on $img"
    cmp -s "$T/qemu.raw" "$T/ours.raw" || fail "content of $img differs from qemu-img's"
    ok "$img reads back identically"
}

for img in $VARIANTS; do
    [ "$img" = empty1t.qcow2 ] && continue  # 1 TiB of zeroes: map covers it
    same_content "$img"
done

# Compressed clusters with small clusters: descriptors use more offset bits.
for ct in zlib zstd; do
    qemu-img convert -f raw -O qcow2 -c -o compression_type=$ct,cluster_size=4k text.raw comp4k-$ct.qcow2
    same_content comp4k-$ct.qcow2
    qemu-img convert -f raw -O qcow2 -c -o compression_type=$ct,cluster_size=2M text.raw comp2m-$ct.qcow2
    same_content comp2m-$ct.qcow2
done

# -f raw is honoured even on a qcow2 file: the bytes are the file's (padded to a sector).
"$READIMG" -f raw v3.qcow2 | cmp -s - v3.qcow2 || fail "-f raw did not read the file's own bytes"
ok "-f raw honoured"
