#!/usr/bin/env bash
# Images whose clusters blkimg's codecs compressed (raw deflate through ISA-L or zlib, zstd)
# read back identically through qemu-img, for cluster sizes 512 B to 2 MiB, pass
# `qemu-img check`, and really hold compressed clusters; a corrupted stream is noticed.
# Needs MKCOMPRESSED (tests/interop/blk-mkcompressed) and READIMG besides BLKIMG.
. "$(dirname "$0")/../lib.sh"
: "${MKCOMPRESSED:?}" "${READIMG:?}"

# Input: per 512-byte sector, text, random, zeroes, a short pattern or half random, chosen in
# runs so that clusters of every size mix them; then whole clusters of each kind.
python3 - <<'PY'
import random
r = random.Random(20240601)
words = [bytes(r.choice(b"etaoinshrdlucmfw") for _ in range(r.randint(2, 9))) for _ in range(300)]
def text(n):
    out = bytearray()
    while len(out) < n:
        out += b" ".join(r.choice(words) for _ in range(r.randint(4, 14))) + b".\n"
    return bytes(out[:n])
def chunk(kind, n):
    if kind == 0: return text(n)
    if kind == 1: return r.randbytes(n)
    if kind == 2: return bytes(n)
    if kind == 3:
        p = r.randbytes(r.randint(3, 40))
        return (p * (n // len(p) + 1))[:n]
    return r.randbytes(n // 2) + bytes(n - n // 2)
with open("in.raw", "wb") as f:
    total = 0
    while total < (6 << 20):
        kind, n = r.randrange(5), 512 * r.randint(1, 64)
        f.write(chunk(kind, n)); total += n
    for kind in range(5):
        f.write(chunk(kind, 2 << 20))
    f.write(text(1536))  # a last, short cluster (image sizes are whole sectors)
PY

checked=0
for type in zlib zstd; do
    for bits in 9 12 16 21; do
        what="$type, $((1 << bits))-byte clusters"
        made=$("$MKCOMPRESSED" "$type" "$bits" in.raw c.qcow2) || fail "$what: blk-mkcompressed failed"
        read -r _ ncomp _ nraw _ off <<<"$made"
        # (With 2 MiB clusters no cluster is random throughout.)
        [ "$ncomp" -gt 3 ] && { [ "$nraw" -gt 0 ] || [ "$bits" = 21 ]; } ||
            fail "$what: $ncomp compressed and $nraw raw clusters only"
        qemu-img check c.qcow2 >check.out || fail "$what: qemu-img check finds errors: $(cat check.out)"
        grep -Eq ' [1-9][0-9.]*% compressed clusters' check.out || fail "$what: qemu-img sees no compressed cluster: $(cat check.out)"
        out=$(qemu-img compare -f raw -F qcow2 in.raw c.qcow2) || fail "$what: qemu-img reads other data: $out"
        expect_eq "$what: compare" "Images are identical." "$out"
        qemu-img info c.qcow2 | grep -q "compression type: $type" || fail "$what: not a $type image"
        # Our own reader inflates our streams too.
        "$READIMG" c.qcow2 >back.raw || fail "$what: blk-readimg failed"
        cmp -s in.raw back.raw || fail "$what: blk-readimg reads other data"
        # A corrupted stream must be noticed, so this check can fail.
        printf '\xff\xff\xff\xff' | dd of=c.qcow2 bs=1 seek="$off" conv=notrunc status=none
        if qemu-img compare -f raw -F qcow2 in.raw c.qcow2 >/dev/null 2>&1; then
            fail "$what: a corrupted compressed stream still compares identical"
        fi
        checked=$((checked + 1))
    done
done
expect_eq "variants checked" 8 "$checked"
echo "codec_compat: OK"
