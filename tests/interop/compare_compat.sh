# compare against qemu-img 7.2 on images qemu-img and qemu-io made: the same stdout (verdict,
# "Content mismatch at offset N!", warnings, strict-mode lines), the same stderr (after the
# program name) and the same exit code, on raw, qcow2, compressed, chains, extended L2, small
# clusters, unaligned sizes and sizes that differ. Then what only blkimg has: --output=json
# with every differing range, and an error (never a crash) on damaged images.
source "$SRCDIR/tests/lib.sh"

qi() { qemu-io "$@" >/dev/null || fail "qemu-io $*"; }
qemu-img create -q -f qcow2 a.qcow2 64M
qi -c 'write -P 1 0 1M' -c 'write -P 2 10M 3M' -c 'write -z 20M 1M' a.qcow2
qemu-img convert -O raw a.qcow2 a.raw
qemu-img convert -O qcow2 -c a.qcow2 c.qcow2
qemu-img convert -O qcow2 -c -o compression_type=zstd a.qcow2 cz.qcow2
qemu-img convert -O qcow2 -o extended_l2=on,cluster_size=128k a.qcow2 x.qcow2
cp a.qcow2 b.qcow2; qi -c 'write -P 9 11M 700' b.qcow2
cp a.raw b.raw; printf 'x' | dd of=b.raw bs=1 seek=$((12 * 1048576 + 5000)) conv=notrunc 2>/dev/null
qemu-img create -q -f qcow2 d.qcow2 80M; qi -c 'write -P 1 0 1M' -c 'write -P 2 10M 3M' d.qcow2
cp d.qcow2 e.qcow2; qi -c 'write -P 3 70M 4k' e.qcow2
mkdir sub
qemu-img create -q -f qcow2 -b a.qcow2 -F qcow2 t.qcow2; qi -c 'write -P 5 30M 64k' -c 'write -z 0 64k' t.qcow2
qemu-img create -q -f qcow2 -b ../t.qcow2 -F qcow2 sub/t3.qcow2; qi -c 'write -P 6 40M 1M' sub/t3.qcow2
qemu-img convert -O raw sub/t3.qcow2 t3.raw
truncate -s 64M z.raw
head -c 1000 /dev/urandom > odd1; cp odd1 odd2; printf 'y' | dd of=odd2 bs=1 seek=999 conv=notrunc 2>/dev/null
cp a.raw a2.raw; truncate -s 70M a2.raw
cp a2.raw a3.raw; printf 'z' | dd of=a3.raw bs=1 seek=$((69 * 1048576 + 7)) conv=notrunc 2>/dev/null
qemu-img create -q -f qcow2 -o cluster_size=4096 f.qcow2 64M
args=(); for i in $(seq 1 50); do args+=(-c "write -P $i $((i * 131072)) 4096"); done; qi "${args[@]}" f.qcow2
qemu-img convert -O raw f.qcow2 f.raw
cp f.raw f2.raw; printf 'q' | dd of=f2.raw bs=1 seek=$((40 * 131072 + 100)) conv=notrunc 2>/dev/null

same_as_qemu() { same_as_qemu_img compare "$@"; }

n=0
for pair in "a.qcow2 a.raw" "a.qcow2 c.qcow2" "cz.qcow2 a.raw" "x.qcow2 a.qcow2" "a.qcow2 b.qcow2" "b.qcow2 c.qcow2" \
    "b.raw a.qcow2" "c.qcow2 b.raw" "cz.qcow2 b.raw" "x.qcow2 b.raw" "a.qcow2 d.qcow2" "d.qcow2 a.qcow2" \
    "d.qcow2 e.qcow2" "e.qcow2 a.raw" "t.qcow2 a.qcow2" "z.raw a.raw" "a.raw z.raw" "z.raw t.qcow2" \
    "sub/t3.qcow2 t3.raw" "t3.raw sub/t3.qcow2" "sub/t3.qcow2 t.qcow2" "odd1 odd2" "a.raw a2.raw" \
    "a3.raw a.qcow2" "a.qcow2 a3.raw" "f.qcow2 f2.raw" "f2.raw f.qcow2" "f.qcow2 a.raw"; do
    # shellcheck disable=SC2086
    same_as_qemu $pair
    # shellcheck disable=SC2086
    same_as_qemu -s $pair
    n=$((n + 1))
done
same_as_qemu -q a.qcow2 b.qcow2
same_as_qemu -q a.qcow2 a.raw
same_as_qemu -s odd1 odd1
same_as_qemu -s a2.raw a2.raw
same_as_qemu -s t.qcow2 t.qcow2
same_as_qemu -f raw a.qcow2 a.raw
same_as_qemu -f qcow2 -F raw a.qcow2 a.raw
same_as_qemu -F qcow2 a.qcow2 a.raw
same_as_qemu -U a.qcow2 a.raw
same_as_qemu -T none a.qcow2 a.raw
same_as_qemu -T bogus a.qcow2 a.raw
same_as_qemu missing a.raw
same_as_qemu a.raw missing
same_as_qemu --image-opts driver=qcow2,file.filename=a.qcow2 driver=raw,file.filename=b.raw
same_as_qemu 'json:{"driver":"qcow2","file":{"driver":"file","filename":"b.qcow2"}}' a.raw
ok "compare equals qemu-img on $n image pairs, plain and strict, and on flags and open errors"

# The progress lines end with the verdict, then the newline, as qemu-img prints them.
qemu-img compare -p a.qcow2 a.raw >q.out
"$BLKIMG" compare -p a.qcow2 a.raw >b.out
expect_eq "-p ends like qemu-img's" "$(tail -c 40 q.out | od -c)" "$(tail -c 40 b.out | od -c)"
ok "compare -p"

# --output=json: every differing range, in 512-byte sectors counted as qemu-img counts them.
j=$("$BLKIMG" compare --output=json a.qcow2 b.raw) && fail "json: differing images exit 0"
python3 - "$j" <<'PY' || fail "json for a.qcow2 b.raw: $j"
import json, sys
d = json.loads(sys.argv[1])
assert d["identical"] is False and d["verdict"] == "content-mismatch", d
assert d["offset"] == 12587520 and d["differences"] == [{"offset": 12587520, "length": 512}], d
assert d["size1"] == d["size2"] == 67108864 and d["differences-truncated"] is False, d
PY
j=$("$BLKIMG" compare --output=json --max-diffs 10 f.raw z.raw) && fail "json: f.raw z.raw exit 0"
python3 - "$j" <<'PY' || fail "json --max-diffs 10: $j"
import json, sys
d = json.loads(sys.argv[1])
assert d["differences"] == [{"offset": i * 131072, "length": 4096} for i in range(1, 11)], d
assert d["differences-truncated"] is True, d
PY
j=$("$BLKIMG" compare --output=json f.raw z.raw) || true
python3 -c 'import json,sys; d=json.loads(sys.argv[1]); assert len(d["differences"]) == 50 and not d["differences-truncated"], d' "$j" ||
    fail "json: all 50 ranges"
j=$("$BLKIMG" compare --output=json f.qcow2 f.raw) || fail "json: identical images exit non-zero"
python3 -c 'import json,sys; d=json.loads(sys.argv[1]); assert d["identical"] and d["differences"] == [], d' "$j" ||
    fail "json identical: $j"
expect_fail 1 "--max-diffs must be at least 1" "$BLKIMG" compare --output=json --max-diffs 0 a.raw a.raw
ok "compare --output=json"

# Damaged images: one error line naming the file, qemu-img's exit code for the kind of error.
head -c 300000 a.qcow2 >cut.qcow2  # its L2 table is cut short
expect_fail 3 "^blkimg: Sector allocation test failed for cut.qcow2 \(cut.qcow2: L2 table .* past the end of the file\)$" \
    "$BLKIMG" compare cut.qcow2 a.raw
head -c 330000 c.qcow2 >cutc.qcow2  # a compressed cluster cut short: qemu-img fails the same way
qrc=0; qemu-img compare cutc.qcow2 a.raw >/dev/null 2>&1 || qrc=$?
expect_fail "$qrc" "^blkimg: Error while reading offset [0-9]+ of cutc.qcow2: Input/output error" "$BLKIMG" compare cutc.qcow2 a.raw
ok "compare on damaged images"
