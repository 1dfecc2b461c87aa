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

# ~15k extents: every other cluster written.
qemu-img create -q -f qcow2 -o cluster_size=4k many.qcow2 128M
for i in $(seq 0 2 30000); do echo "write -P 1 $((i * 4096)) 4k"; done > many.io
qemu-io -f qcow2 many.qcow2 <many.io >/dev/null
same_map --output=json many.qcow2
same_map many.qcow2
ok "map of 15k extents matches"

# A start beyond the end, and a zero max length.
same_map --output=json --start-offset=1G v3.qcow2
same_map --output=json --max-length=0 v3.qcow2
ok "edge ranges match"
