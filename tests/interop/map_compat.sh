# blkimg map prints exactly what qemu-img map prints, JSON and human, on qemu-made images.
source "$SRCDIR/tests/lib.sh"
source "$SRCDIR/tests/interop/variants.sh"
make_variants

same_map() {  # same_map LABEL ARGS...: stdout, stderr text and exit code all equal qemu-img's
    local rc_q=0 rc_b=0
    qemu-img map "$@" >q.out 2>q.err || rc_q=$?
    "$BLKIMG" map "$@" >b.out 2>b.err || rc_b=$?
    # On an error qemu-img has already printed part of the map (the human header, or "[");
    # blkimg prints nothing, so a script ignoring the exit code never reads a partial map.
    if [ "$rc_q" != 0 ]; then : >q.out; fi
    expect_eq "map $* (stdout)" "$(cat q.out)" "$(cat b.out)"
    expect_eq "map $* (stderr)" "$(sed 's/^qemu-img: /blkimg: /' q.err)" "$(cat b.err)"
    expect_eq "map $* (exit code)" "$rc_q" "$rc_b"
}

for img in $VARIANTS; do
    same_map --output=json "$img"
    same_map "$img"
    same_map --output=json --start-offset=64k --max-length=300k "$img"
    same_map --output=json -s 1M "$img"
    ok "map of $img matches qemu-img"
done

# Raw windows (raw offset/size) through --image-opts, and null-co.
same_map --output=json --image-opts driver=raw,offset=65536,size=1M,file.filename=sparse.raw
same_map --image-opts driver=raw,offset=4096,size=64k,file.filename=sparse.raw
same_map --output=json 'json:{"driver":"null-co","size":"1M"}'
same_map --output=json 'json:{"driver":"null-co","size":"1M","read-zeroes":true}'
same_map --output=json -f raw v3.qcow2
ok "raw windows, null-co and -f raw match"

# Raw files as the host file system lays them out (blkimg reads ext4's and XFS's extent
# lists with FIEMAP, hundreds per call; every answer must stay SEEK_DATA's): 4 KiB of data
# every 16 KiB over 64 MiB (4096 extents: the extent cache is refilled many times), first
# still in the page cache (delayed allocation), then written back; preallocated
# (unwritten) ranges with data written into part of them (data only the page cache
# knows about), holes, and a size that is not a multiple of the sector.
python3 - <<'PY'
import os
f = os.open("frag.raw", os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
os.ftruncate(f, 64 << 20)
for off in range(0, 64 << 20, 16384):
    os.pwrite(f, b"\x5a" * 4096, off)
os.close(f)
PY
for args in "" "--start-offset=12345 --max-length=5M"; do
    # shellcheck disable=SC2086
    same_map --output=json $args -f raw frag.raw
done
sync frag.raw
same_map --output=json -f raw frag.raw
same_map -f raw frag.raw
truncate -s $((8 * 1048576 + 100)) pre.raw
fallocate -o 1M -l 3M pre.raw
fallocate -o 6M -l 1M pre.raw
qemu-io -f raw -c 'write -P 7 1536k 64k' -c 'write -P 8 5M 4k' -c 'write -P 9 8M 100' pre.raw >/dev/null
same_map --output=json -f raw pre.raw
sync pre.raw
same_map --output=json -f raw pre.raw
same_map --output=json --start-offset=1600k -f raw pre.raw
ok "raw files: fragmented, preallocated, written back or not, odd size"

# ~15k extents: every other cluster written.
qemu-img create -q -f qcow2 -o cluster_size=4k many.qcow2 128M
for i in $(seq 0 2 30000); do echo "write -P 1 $((i * 4096)) 4k"; done > many.io
qemu-io -f qcow2 many.qcow2 <many.io >/dev/null
same_map --output=json many.qcow2
same_map many.qcow2
ok "map of 15k extents matches"

# Its JSON map (1.6 MiB) is held back in a temporary file until it is complete, or in
# memory where there is no temporary directory: the same map either way, and nothing at
# all on stdout when an L2 table near the end lies past the end of the file.
TMPDIR=/nonexistent same_map --output=json many.qcow2
cp many.qcow2 late.qcow2
python3 - late.qcow2 <<'PY'
import os, struct, sys
with open(sys.argv[1], "r+b") as f:
    h = f.read(48)
    l1_size, l1_off = struct.unpack(">IQ", h[36:48])
    last = max(i for i in range(l1_size)
               if (f.seek(l1_off + 8 * i), struct.unpack(">Q", f.read(8))[0])[1])
    f.seek(l1_off + 8 * last)
    end = os.fstat(f.fileno()).st_size
    f.write(struct.pack(">Q", (1 << 63) | ((end + (1 << 20)) & ~4095)))
PY
for t in "" /nonexistent; do
    for o in json human; do
        set +e
        TMPDIR=$t "$BLKIMG" map --output=$o late.qcow2 >b.out 2>b.err
        rc=$?
        set -e
        expect_eq "exit code of map --output=$o (TMPDIR=$t) with a late bad L2 table" 1 "$rc"
        [ ! -s b.out ] || fail "map --output=$o (TMPDIR=$t) printed $(wc -c <b.out) bytes before its error: $(cat b.err)"
        grep -q "late.qcow2" b.err || fail "map error does not name the image: $(cat b.err)"
    done
done
ok "a map that fails late prints nothing on stdout"

# A start beyond the end, and a zero max length.
same_map --output=json --start-offset=1G v3.qcow2
same_map --output=json --max-length=0 v3.qcow2
ok "edge ranges match"
