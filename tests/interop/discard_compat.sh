# The discard open option and qcow2's pass-discard-* options against qemu-img 7.2: which
# specs open (a child defaults to discard=unmap, a top node to ignore), which zero writes
# free clusters, and which freed clusters become holes in the host file. Each case runs
# the same command through qemu-img and blkimg on copies of one image and compares exit
# codes, messages, the allocation map (qemu-img map) and, where the file system punches
# holes, the host space the image file keeps (du).
source "$SRCDIR/tests/lib.sh"

qi() { qemu-io "$@" >/dev/null || fail "qemu-io $*"; }

# Opening: detect-zeroes=unmap needs discard=unmap, which children have by default.
qemu-img create -q -f qcow2 o.qcow2 1M
same_as_qemu_img info --image-opts driver=qcow2,file.filename=o.qcow2,file.detect-zeroes=unmap
same_as_qemu_img info --image-opts driver=raw,file.driver=raw,file.file.filename=o.qcow2,file.detect-zeroes=unmap
same_as_qemu_img info --image-opts driver=qcow2,file.filename=o.qcow2,discard=unmap,detect-zeroes=unmap
same_as_qemu_img info --image-opts driver=qcow2,file.filename=o.qcow2,detect-zeroes=unmap
same_as_qemu_img info --image-opts driver=qcow2,file.filename=o.qcow2,file.discard=ignore,file.detect-zeroes=unmap
ok "discard defaults: children unmap, the top node ignore"

# Can this file system punch holes? Without it the space checks below cannot tell.
punch=0
can_punch_holes && punch=1
[ "$punch" = 1 ] || echo "note: this file system does not punch holes; host space is not compared"

kib() { du -k "$1" | cut -f1; }
map_of() { qemu-img map --output=json "$1"; }

# Source: 1 MiB of data, 3 MiB that read as zero. Target: 4 MiB written, so every zero
# the convert writes lands on an allocated cluster.
truncate -s 4M src.raw
qi -f raw -c "write -P 7 0 1M" src.raw

# convert_n NAME TARGET-OPTS: convert -n into a fully written qcow2 with extra options.
convert_n() {
    local name=$1 opts=$2
    for who in q b; do
        qemu-img create -q -f qcow2 "$who-$name.qcow2" 4M
        qi -f qcow2 -c "write -P 9 0 4M" "$who-$name.qcow2"
    done
    qemu-img convert -n src.raw --target-image-opts "driver=qcow2,file.filename=q-$name.qcow2$opts" ||
        fail "$name: qemu-img convert"
    "$BLKIMG" convert -n src.raw --target-image-opts "driver=qcow2,file.filename=b-$name.qcow2$opts" ||
        fail "$name: blkimg convert"
    qemu-img check -q "b-$name.qcow2" || fail "$name: qemu-img check"
    qemu-img compare -q "b-$name.qcow2" src.raw || fail "$name: content"
    expect_eq "$name: allocation map" "$(map_of "q-$name.qcow2")" "$(map_of "b-$name.qcow2")"
    expect_eq "$name: qemu-img check" "$(qemu-img check "q-$name.qcow2")" "$(qemu-img check "b-$name.qcow2")"
    if [ "$punch" = 1 ]; then
        local q b
        q=$(kib "q-$name.qcow2")
        b=$(kib "b-$name.qcow2")
        # Holes punched (or not) alike: within one 64 KiB cluster of qemu-img's.
        [ "$b" -le $((q + 64)) ] && [ "$b" -ge $((q - 64)) ] ||
            fail "$name: the image file keeps $b KiB, qemu-img's $q KiB"
        echo "$name: $b KiB (qemu-img $q KiB)"
    fi
    ok "convert -n, target options: ${opts:-(none)}"
}

# Top discard=unmap (qemu-img convert's default): zero clusters are freed and punched.
convert_n unmap ""
convert_n unmap-explicit ",discard=unmap"
# discard=ignore on the top: the zero writes still free the clusters (qemu strips unmap
# only from what a parent sends to a child) but pass-discard-request follows the node's
# mode, so the file keeps the space.
convert_n ignore ",discard=ignore"
# pass-discard-request=off: freed, not punched; on with discard=ignore: punched.
convert_n no-pass ",pass-discard-request=off"
convert_n pass ",discard=ignore,pass-discard-request=on"
# The file child on ignore: qcow2 asks, the file does not punch.
convert_n file-ignore ",file.discard=ignore"

if [ "$punch" = 1 ]; then
    b=$(kib b-unmap.qcow2)
    i=$(kib b-ignore.qcow2)
    [ "$i" -gt $((b + 2048)) ] || fail "discard=ignore punched holes: $i KiB against $b KiB with unmap"
    ok "discard=ignore keeps the host space a discard=unmap convert gives back"
fi

# qemu-io's discard through the node's mode: ignored on a top set to ignore (nothing
# changes), honoured with unmap.
for mode in ignore unmap; do
    for who in q b; do
        qemu-img create -q -f qcow2 "d-$who-$mode.qcow2" 4M
        qi -f qcow2 -c "write -P 3 0 4M" "d-$who-$mode.qcow2"
    done
    # blkimg has no discard command of its own: the engine is driven by blk-writeimg,
    # opened as blkimg opens a target, then qemu-io does the same on qemu's side.
    qi --image-opts -c "discard 0 2M" "driver=qcow2,file.filename=d-q-$mode.qcow2,discard=$mode"
    "$WRITEIMG" --image-opts "driver=qcow2,file.filename=d-b-$mode.qcow2,discard=$mode" "discard 0 2M" ||
        fail "blk-writeimg discard ($mode)"
    expect_eq "discard with discard=$mode: allocation map" "$(map_of "d-q-$mode.qcow2")" "$(map_of "d-b-$mode.qcow2")"
    qemu-img compare -q "d-q-$mode.qcow2" "d-b-$mode.qcow2" || fail "discard=$mode: content differs from qemu-io's"
done
ok "discard requests follow the node's discard mode"
