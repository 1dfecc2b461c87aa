# convert -n onto an existing qcow2 (QEMU iotest 122): qemu-img writes zero clusters where
# the source reads zero, so `map` says "present": true, "zero": true there; over a backing
# file they are what keeps the backing file's data hidden. blkimg must leave the same map.
source "$SRCDIR/tests/lib.sh"

qemu-img create -q -f raw s.raw 4M
qemu-io -f raw -c 'write -P 1 0 64k' -c 'write -P 2 1M 64k' -c 'write -P 3 3M 4k' s.raw >/dev/null
qemu-img create -q -f qcow2 base.qcow2 4M
qemu-io -c 'write -P 5 0 4M' base.qcow2 >/dev/null

check() {  # check NAME CREATE-ARGS...
    local name=$1; shift
    for t in q b; do qemu-img create -q -f qcow2 "$@" "$t.$name.qcow2" 4M; done
    qemu-img convert -n -O qcow2 s.raw "q.$name.qcow2"
    "$BLKIMG" convert -n -O qcow2 s.raw "b.$name.qcow2" || fail "$name: blkimg convert -n"
    json_eq "$name: map of the convert -n target" "$(qemu-img map --output=json "q.$name.qcow2")" \
        "$(qemu-img map --output=json "b.$name.qcow2")"
    qemu-img compare -q s.raw "b.$name.qcow2" || fail "$name: content differs from the source"
    qemu-img check -q "b.$name.qcow2" || fail "$name: qemu-img check"
    ok "$name"
}
check plain
check extl2 -o extended_l2=on
check backing -b base.qcow2 -F qcow2
check backing-extl2 -o extended_l2=on -b base.qcow2 -F qcow2
check small-clusters -o cluster_size=4k
