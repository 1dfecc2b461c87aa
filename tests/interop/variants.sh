# Builds the image variants the interop tests compare on, with qemu-img and qemu-io.
# Source after lib.sh; sets VARIANTS to the list of image filenames (relative to $T).
make_variants() {
    VARIANTS=""
    add() { VARIANTS="$VARIANTS $1"; }
    fill() {  # data, a zero range, data at an odd spot and near the end
        qemu-io -f qcow2 -c "write -P 0x5a 0 100k" -c "write -z 200k 64k" -c "write -P 0x7e 300k 3k" \
            -c "write -P 0x11 $(($2 - 4096)) 4096" "$1" >/dev/null
    }
    qemu-img create -q -f qcow2 v3.qcow2 8M; fill v3.qcow2 $((8 << 20)); add v3.qcow2
    qemu-img create -q -f qcow2 -o compat=0.10 v2.qcow2 8M; fill v2.qcow2 $((8 << 20)); add v2.qcow2
    for cs in 512 4k 2M; do
        qemu-img create -q -f qcow2 -o cluster_size=$cs c$cs.qcow2 8M; fill c$cs.qcow2 $((8 << 20)); add c$cs.qcow2
    done
    head -c 2M /dev/urandom | base64 > text.raw; truncate -s 4M text.raw
    for ct in zlib zstd; do
        qemu-img convert -f raw -O qcow2 -c -o compression_type=$ct text.raw comp-$ct.qcow2; add comp-$ct.qcow2
    done
    qemu-img create -q -f raw ebase.raw 8M
    qemu-io -f raw -c "write -P 0x99 0 8M" ebase.raw >/dev/null
    qemu-img create -q -f qcow2 -o extended_l2=on -b ebase.raw -F raw extl2.qcow2 8M
    qemu-io -f qcow2 -c "write -P 0x21 4k 2k" -c "write -z 64k 8k" -c "write -P 0x22 130k 40k" extl2.qcow2 >/dev/null
    add extl2.qcow2
    qemu-img create -q -f qcow2 -o extended_l2=on extl2nb.qcow2 8M
    qemu-io -f qcow2 -c "write -P 0x21 4k 2k" -c "write -z 64k 8k" extl2nb.qcow2 >/dev/null
    add extl2nb.qcow2
    for rb in 1 64; do
        qemu-img create -q -f qcow2 -o refcount_bits=$rb rb$rb.qcow2 8M; fill rb$rb.qcow2 $((8 << 20)); add rb$rb.qcow2
    done
    qemu-img create -q -f qcow2 -o lazy_refcounts=on lazy.qcow2 8M; fill lazy.qcow2 $((8 << 20)); add lazy.qcow2
    qemu-img create -q -f qcow2 -o preallocation=metadata prealloc.qcow2 8M; fill prealloc.qcow2 $((8 << 20)); add prealloc.qcow2
    mkdir -p chain/sub
    qemu-img create -q -f qcow2 chain/sub/base.qcow2 4M
    qemu-io -f qcow2 -c "write -P 1 0 1M" -c "write -P 2 3M 1M" chain/sub/base.qcow2 >/dev/null
    qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 chain/sub/mid.qcow2 6M
    qemu-io -f qcow2 -c "write -P 3 512k 1M" chain/sub/mid.qcow2 >/dev/null
    qemu-img create -q -f qcow2 -b sub/mid.qcow2 -F qcow2 chain/top.qcow2 8M
    qemu-io -f qcow2 -c "write -P 4 3584k 1M" -c "write -z 0 64k" chain/top.qcow2 >/dev/null
    add chain/top.qcow2
    qemu-img create -q -f qcow2 -b ebase.raw -F raw rawback.qcow2 8M
    qemu-io -f qcow2 -c "write -P 5 1M 64k" rawback.qcow2 >/dev/null; add rawback.qcow2
    for raw in off on; do
        qemu-img create -q -f qcow2 -o data_file=data-$raw.bin,data_file_raw=$raw extdata-$raw.qcow2 8M
        fill extdata-$raw.qcow2 $((8 << 20)); add extdata-$raw.qcow2
    done
    qemu-img create -q -f qcow2 odd.qcow2 $((5 * 1024 * 1024 + 12345))
    qemu-io -f qcow2 -c "write -P 0x33 5M 4k" odd.qcow2 >/dev/null; add odd.qcow2
    qemu-img create -q -f qcow2 empty1t.qcow2 1T; add empty1t.qcow2
    # A sparse raw file with data at odd places and a size that is not a multiple of 4096.
    truncate -s $((3 * 1024 * 1024 + 1000)) sparse.raw
    printf 'hello' | dd of=sparse.raw bs=1 seek=70000 conv=notrunc status=none
    printf 'tail' | dd of=sparse.raw bs=1 seek=$((3 * 1024 * 1024 + 990)) conv=notrunc status=none
    add sparse.raw
}
