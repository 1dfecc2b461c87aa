# blkimg convert against qemu-img: every qemu-made variant converted to raw and to qcow2 in
# every layout reads back identically through qemu-img (compare), and every qcow2 blkimg
# writes passes qemu-img check.
source "$SRCDIR/tests/lib.sh"
source "$SRCDIR/tests/interop/variants.sh"
make_variants

# qcow2 targets need qcow2 creation and writing; until this build has them only raw runs.
QCOW2=0
head -c 64k /dev/urandom > probe.raw
if "$BLKIMG" convert -q -O qcow2 probe.raw probe.qcow2 2>/dev/null; then QCOW2=1; fi
rm -f probe.raw probe.qcow2

# Images whose full size is written by some layouts (preallocation, -S 0) are skipped there.
big() { [ "$1" = empty1t.qcow2 ]; }

identical() {  # identical LABEL SRC OUT OUTFMT: qemu-img compare says so
    qemu-img compare -q -F "$4" "$2" "$3" ||
        fail "$1: qemu-img compare: $(qemu-img compare -F "$4" "$2" "$3" 2>&1 | head -3)"
}
check_clean() {  # check_clean LABEL IMG: qemu-img check finds no errors and no leaks
    local out rc=0
    out=$(qemu-img check "$2" 2>&1) || rc=$?
    [ "$rc" = 0 ] || fail "$1: qemu-img check exited $rc: $out"
    echo "$out" | grep -q "No errors were found on the image." || fail "$1: qemu-img check: $out"
}

# To raw: byte for byte what qemu-img writes.
for img in $VARIANTS; do
    rm -f out.raw ref.raw
    "$BLKIMG" convert -O raw "$img" out.raw || fail "convert $img to raw"
    qemu-img convert -O raw "$img" ref.raw
    identical "$img -> raw" "$img" out.raw raw
    big "$img" || cmp -s ref.raw out.raw || fail "$img -> raw differs from qemu-img's raw"
    expect_eq "$img -> raw size" "$(stat -c %s ref.raw)" "$(stat -c %s out.raw)"
done
ok "every variant converts to raw"

# -S 0 allocates everything; the default leaves zero runs as holes.
"$BLKIMG" convert -S 0 v3.qcow2 full.raw || fail "-S 0"
identical "-S 0" v3.qcow2 full.raw raw
[ "$(qemu-img map --output=json full.raw | grep -c '"data": false')" = 0 ] || fail "-S 0 left holes: $(qemu-img map --output=json full.raw)"
"$BLKIMG" convert v3.qcow2 sparse-out.raw
[ "$(du -k sparse-out.raw | cut -f1)" -lt "$(du -k full.raw | cut -f1)" ] || fail "the default -S wrote zeroes as data"
ok "-S 0 and holes"

# Several sources concatenate into one target.
"$BLKIMG" convert v3.qcow2 sparse.raw odd.qcow2 cat.raw || fail "several sources"
qemu-img convert v3.qcow2 sparse.raw odd.qcow2 cat-ref.raw
cmp -s cat-ref.raw cat.raw || fail "concatenation differs from qemu-img's"
ok "several sources to raw"

# -n into an existing raw image, with and without --target-is-zero.
qemu-img create -q -f raw t.raw 8M
qemu-io -f raw -c "write -P 0xee 0 8M" t.raw >/dev/null
"$BLKIMG" convert -n v3.qcow2 t.raw || fail "-n to raw"
identical "-n to raw" v3.qcow2 t.raw raw
qemu-img create -q -f raw z.raw 8M
"$BLKIMG" convert -n --target-is-zero v3.qcow2 z.raw || fail "--target-is-zero"
identical "--target-is-zero" v3.qcow2 z.raw raw
ok "-n and --target-is-zero onto raw"

if [ "$QCOW2" != 1 ]; then
    echo "SKIP: qcow2 targets (this build cannot create qcow2 images yet)"
    exit 0
fi

LAYOUTS=(
    ""
    "-c"
    "-c -o compression_type=zstd"
    "-o compat=0.10"
    "-o lazy_refcounts=on"
    "-o refcount_bits=1"
    "-o refcount_bits=64"
    "-o extended_l2=on"
    "-o extended_l2=on,cluster_size=64k"
    "-o preallocation=metadata"
    "-o preallocation=falloc"
    "-o preallocation=full"
    "-W"
    "-S 0"
)
for cs in 512 1k 2k 4k 8k 16k 32k 64k 128k 256k 512k 1M 2M; do LAYOUTS+=("-o cluster_size=$cs"); done
LAYOUTS+=("-c -o cluster_size=4k" "-c -o compression_type=zstd,cluster_size=2M")

# Every variant in every layout; under the sanitizers (ten times slower) every variant in a
# rotating fifth of the layouts, so each layout still meets several variants.
stride=1
[ -n "${BLK_ASAN:-}" ] && stride=5
vi=0
for img in $VARIANTS; do
    vi=$((vi + 1))
    li=0 done_layouts=0
    for layout in "${LAYOUTS[@]}"; do
        li=$((li + 1))
        [ $(((li + vi) % stride)) = 0 ] || continue
        done_layouts=$((done_layouts + 1))
        if big "$img"; then case "$layout" in *preallocation=f* | "-S 0") continue ;; esac; fi
        rm -f out.qcow2
        if big "$img"; then
            case "$layout" in *cluster_size=512 | *cluster_size=1k)
                # qemu-img refuses these too: the L1 table would pass its 32 MiB limit.
                # shellcheck disable=SC2086
                expect_fail 1 "^blkimg: out.qcow2: error while converting qcow2: The image size is too large for file format 'qcow2' \(try using a larger cluster size\)$" \
                    "$BLKIMG" convert -O qcow2 $layout "$img" out.qcow2
                [ ! -e out.qcow2 ] || fail "a refused create left out.qcow2"
                continue ;;
            esac
        fi
        # shellcheck disable=SC2086
        "$BLKIMG" convert -O qcow2 $layout "$img" out.qcow2 || fail "convert $img to qcow2 $layout"
        identical "$img -> qcow2 $layout" "$img" out.qcow2 qcow2
        check_clean "$img -> qcow2 $layout" out.qcow2
        # The same virtual size qemu-img gives the same conversion.
        if [ -z "$layout" ]; then
            qemu-img convert -O qcow2 "$img" ref.qcow2
            expect_eq "$img -> qcow2 virtual size" "$(qemu-img info --output=json ref.qcow2 | grep '"virtual-size"')" \
                "$(qemu-img info --output=json out.qcow2 | grep '"virtual-size"')"
        fi
    done
    ok "$img converts to qcow2 in $done_layouts layouts"
done

# Compressed output really is compressed (most clusters of the text image).
"$BLKIMG" convert -O qcow2 -c text.raw text-c.qcow2
qemu-img map --output=json text-c.qcow2 >/dev/null
[ "$(stat -c %s text-c.qcow2)" -lt $((3 << 20)) ] || fail "-c output is not compressed: $(stat -c %s text-c.qcow2)"
qemu-img info text-c.qcow2 | grep -q "compression type: zlib" || fail "-c default codec"
"$BLKIMG" convert -O qcow2 -c -o compression_type=zstd text.raw text-z.qcow2
qemu-img info text-z.qcow2 | grep -q "compression type: zstd" || fail "-c zstd codec"
ok "-c compresses with zlib and zstd"

# -B: the target holds the top layer only and reads the rest from its new backing file.
"$BLKIMG" convert -O qcow2 -B chain/sub/mid.qcow2 -F qcow2 chain/top.qcow2 overlay.qcow2 || fail "-B"
identical "-B overlay" chain/top.qcow2 overlay.qcow2 qcow2
check_clean "-B overlay" overlay.qcow2
qemu-img info overlay.qcow2 | grep -q "^backing file: chain/sub/mid.qcow2" || fail "-B backing name: $(qemu-img info overlay.qcow2)"
top_layer() {  # the guest ranges an image's own layer holds (depth 0), merged
    qemu-img map --output=json "$1" | python3 -c '
import json, sys
out = []
for e in json.load(sys.stdin):
    if e["depth"] == 0 and e["present"]:
        if out and out[-1][1] == e["start"]:
            out[-1][1] += e["length"]
        else:
            out.append([e["start"], e["start"] + e["length"]])
print(out)'
}
expect_eq "-B copies the top layer only" "$(top_layer chain/top.qcow2)" "$(top_layer overlay.qcow2)"
"$BLKIMG" convert -O qcow2 -b ebase.raw -F raw rawback.qcow2 overlay2.qcow2 || fail "-b (qemu 10 spelling)"
identical "-b overlay" rawback.qcow2 overlay2.qcow2 qcow2
check_clean "-b overlay" overlay2.qcow2
ok "-B/-b with a backing file"

# Several sources into one qcow2.
"$BLKIMG" convert -O qcow2 v3.qcow2 sparse.raw odd.qcow2 cat.qcow2 || fail "several sources to qcow2"
identical "several sources to qcow2" cat-ref.raw cat.qcow2 qcow2
check_clean "several sources to qcow2" cat.qcow2
ok "several sources to qcow2"

# -n onto an existing qcow2 (full of other data), and --target-is-zero onto a fresh one.
qemu-img create -q -f qcow2 t.qcow2 8M
qemu-io -f qcow2 -c "write -P 0xee 0 8M" t.qcow2 >/dev/null
"$BLKIMG" convert -n -O qcow2 v3.qcow2 t.qcow2 || fail "-n to qcow2"
identical "-n to qcow2" v3.qcow2 t.qcow2 qcow2
check_clean "-n to qcow2" t.qcow2
qemu-img info t.qcow2 | grep -q "corrupt: false" || fail "-n left the corrupt flag: $(qemu-img info t.qcow2)"
qemu-img create -q -f qcow2 tz.qcow2 8M
"$BLKIMG" convert -n --target-is-zero -O qcow2 v3.qcow2 tz.qcow2 || fail "--target-is-zero to qcow2"
identical "--target-is-zero to qcow2" v3.qcow2 tz.qcow2 qcow2
check_clean "--target-is-zero to qcow2" tz.qcow2
ok "-n and --target-is-zero onto qcow2"

# A -n copy that fails leaves the qcow2 flagged: qemu refuses to write it, info shows it.
python3 - <<'PY'
import struct
with open("comp-zlib.qcow2", "rb") as f:
    d = bytearray(f.read())
l1 = struct.unpack(">Q", d[40:48])[0]
l2 = struct.unpack(">Q", d[l1:l1 + 8])[0] & 0x00fffffffffffe00
entry = struct.unpack(">Q", d[l2 + 8:l2 + 16])[0]
assert entry >> 62 == 1
off = entry & ((1 << 54) - 1)
d[off:off + 32] = b"\xff" * 32
open("broken.qcow2", "wb").write(d)
PY
qemu-img create -q -f qcow2 t2.qcow2 4M
expect_fail 1 "error while reading at byte (0|65536): .*the target 't2.qcow2' is incomplete \(flagged with its qcow2 'corrupt' bit\)" \
    "$BLKIMG" convert -n -O qcow2 broken.qcow2 t2.qcow2
qemu-img info t2.qcow2 | grep -q "corrupt: true" || fail "a failed -n copy did not flag the qcow2: $(qemu-img info t2.qcow2)"
# Once a later copy completes, the flag is gone.
"$BLKIMG" convert -n -O qcow2 comp-zstd.qcow2 t2.qcow2 || fail "retrying -n onto a flagged qcow2"
qemu-img info t2.qcow2 | grep -q "corrupt: false" || fail "a completed -n copy left the flag"
check_clean "-n retry" t2.qcow2
ok "-n flags a qcow2 target while it is overwritten"
