# Malformed image specs get exactly one clear error line and exit 1; good ones open.
source "$SRCDIR/tests/lib.sh"
qemu-img create -q -f raw 'a,b.img' 1M
qemu-img create -q -f raw r.img 1M

"$BLKIMG" info --image-opts 'driver=raw,file.filename=a,,b.img' | grep -q "^image: a,b.img$" ||
    fail ",, does not escape a comma in a filename"
ok ",, escapes"

expect_fail 1 "Block protocol 'file' doesn't support the option 'filname'" \
    "$BLKIMG" info --image-opts 'driver=raw,file.filname=r.img,file.filename=r.img'
expect_fail 1 "Block format 'raw' does not support the option 'ofset'" \
    "$BLKIMG" info --image-opts 'driver=raw,ofset=4k,file.filename=r.img'
expect_fail 1 "Unknown driver 'qcow3'" "$BLKIMG" info -f qcow3 r.img
expect_fail 1 "Unknown driver 'qcow3'" "$BLKIMG" info --image-opts 'driver=qcow3,file.filename=r.img'
expect_fail 1 "Could not parse the JSON options" "$BLKIMG" info 'json:{"driver":'
expect_fail 1 "Parameter 'offset'.*(size|suffix)" "$BLKIMG" info --image-opts 'driver=raw,offset=12Q,file.filename=r.img'
expect_fail 1 "Parameter 'read-only' expects 'on' or 'off'" "$BLKIMG" info --image-opts 'driver=raw,read-only=perhaps,file.filename=r.img'
expect_fail 1 "mutually exclusive" "$BLKIMG" info -f raw --image-opts 'driver=raw,file.filename=r.img'
expect_fail 1 "Invalid parameter" "$BLKIMG" info --image-opts 'driver=raw,file..filename=r.img'
expect_fail 1 "used inconsistently" "$BLKIMG" info --image-opts 'driver=raw,file=r.img,file.filename=r.img'
expect_fail 1 "node references are not supported" "$BLKIMG" info --image-opts 'driver=raw,file=r.img'
expect_fail 1 "A block device must be specified for \"file\"" "$BLKIMG" info --image-opts 'driver=raw'
# A file node without a filename: qemu-img's words, before any unknown key of that node.
for spec in 'driver=file' 'driver=file,filename=' 'driver=raw,file.driver=file,file.filname=x' \
    'driver=raw,file.driver=file,file.filename=,file.x=1'; do
    mine=$("$BLKIMG" info --image-opts "$spec" 2>&1; echo "rc=$?")
    theirs=$(qemu-img info --image-opts "$spec" 2>&1; echo "rc=$?")
    expect_eq "$spec: the message qemu-img prints" "${theirs//qemu-img:/blkimg:}" "$mine"
done
# Node names: qemu-img's words for an invalid, too long or duplicate node-name, in json:
# and --image-opts (the file is named before its format node).
for spec in 'json:{"driver":"raw","node-name":"#x","file":{"driver":"file","filename":"r.img"}}' \
    'json:{"driver":"raw","node-name":"a","file":{"driver":"file","node-name":"a","filename":"r.img"}}' \
    'json:{"driver":"raw","node-name":"#x","file":{"driver":"file","node-name":"1y","filename":"r.img"}}' \
    'json:{"driver":"raw","node-name":"abcdefghijabcdefghijabcdefghij12","file":{"driver":"file","filename":"r.img"}}' \
    'json:{"driver":"raw","node-name":"a b","file":{"driver":"file","filename":"r.img"}}' \
    'json:{"driver":"raw","node-name":"","file":{"driver":"file","filename":"r.img"}}'; do
    mine=$("$BLKIMG" info "$spec" 2>&1; echo "rc=$?")
    theirs=$(qemu-img info "$spec" 2>&1; echo "rc=$?")
    expect_eq "$spec: the message qemu-img prints" "${theirs//qemu-img:/blkimg:}" "$mine"
done
for spec in 'driver=raw,node-name=top,file.filename=r.img,file.node-name=top' 'driver=raw,node-name=-top,file.filename=r.img'; do
    mine=$("$BLKIMG" info --image-opts "$spec" 2>&1; echo "rc=$?")
    theirs=$(qemu-img info --image-opts "$spec" 2>&1; echo "rc=$?")
    expect_eq "$spec: the message qemu-img prints" "${theirs//qemu-img:/blkimg:}" "$mine"
done
ok "node names: invalid, too long and duplicate ones refused as qemu-img refuses them"
expect_fail 1 "The sum of offset \(4096\) and size \(1048576\)" \
    "$BLKIMG" info --image-opts 'driver=raw,offset=4k,size=1M,file.filename=r.img'
expect_fail 1 "Specified size is not multiple of 512" \
    "$BLKIMG" info --image-opts 'driver=raw,size=1000,file.filename=r.img'
expect_fail 1 "Could not open 'missing.img': No such file or directory" "$BLKIMG" info missing.img
expect_fail 1 "Could not open '.': Is a directory" "$BLKIMG" info .
expect_fail 1 "Parameter 'id' is missing" "$BLKIMG" info --object secret,data=x r.img
expect_fail 1 "attempt to add duplicate property 'sec0'" "$BLKIMG" info --object secret,id=sec0,data=x --object secret,id=sec0,data=y r.img
expect_fail 1 "--output" "$BLKIMG" info --output=xml r.img
expect_fail 1 "Invalid start offset specified" "$BLKIMG" map --start-offset=abc r.img
expect_fail 1 "Invalid max length specified" "$BLKIMG" map --max-length=-5 r.img
ok "malformed specs refused with one line each"

# Good specs: json: with dotted keys inside, backing=null, --object, -f raw on a qcow2.
"$BLKIMG" info 'json:{"driver":"raw","file.filename":"r.img"}' >/dev/null || fail "json: with dotted keys"
qemu-img create -q -f qcow2 base.qcow2 1M
qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 top.qcow2
rm base.qcow2
expect_fail 1 "base.qcow2" "$BLKIMG" map top.qcow2
"$BLKIMG" map --output=json 'json:{"driver":"qcow2","backing":null,"file":{"driver":"file","filename":"top.qcow2"}}' >/dev/null ||
    fail "backing=null did not disable the backing file"
"$BLKIMG" info --object secret,id=sec0,data=x r.img >/dev/null || fail "--object secret rejected"
"$BLKIMG" info -f raw top.qcow2 | grep -q "^file format: raw$" || fail "-f raw not honoured on a qcow2 file"
ok "good specs open"

# detect-zeroes: all-zero writes become zero writes (qcow2 zero clusters), as qemu-img's
# convert -S 0 makes them, and unmap without discard=unmap is refused in qemu's words.
head -c 2M /dev/zero > dz.raw
head -c 2M /dev/urandom >> dz.raw
for mode in off on; do
    qemu-img create -q -f qcow2 "q-$mode.qcow2" 4M
    qemu-img create -q -f qcow2 "b-$mode.qcow2" 4M
    qemu-img convert -S 0 -n -f raw dz.raw --target-image-opts "driver=qcow2,detect-zeroes=$mode,file.filename=q-$mode.qcow2"
    "$BLKIMG" convert -S 0 -n -f raw dz.raw --target-image-opts "driver=qcow2,detect-zeroes=$mode,file.filename=b-$mode.qcow2" ||
        fail "convert with detect-zeroes=$mode"
    expect_eq "detect-zeroes=$mode: the map" "$(qemu-img map --output=json "q-$mode.qcow2")" "$(qemu-img map --output=json "b-$mode.qcow2")"
    qemu-img compare -q dz.raw "b-$mode.qcow2" || fail "detect-zeroes=$mode: content differs"
done
qemu-img map --output=json b-on.qcow2 | grep -q '"zero": true' || fail "detect-zeroes=on made no zero cluster"
msg="setting detect-zeroes to unmap is not allowed without setting discard operation to unmap"
# convert's target unmaps unless -S 0 (qemu-img's BDRV_O_UNMAP), so only -S 0 refuses it.
expect_fail 1 "$msg" "$BLKIMG" convert -S 0 -n dz.raw --target-image-opts driver=qcow2,detect-zeroes=unmap,file.filename=b-on.qcow2
qmsg=$(qemu-img convert -S 0 -n dz.raw --target-image-opts driver=qcow2,detect-zeroes=unmap,file.filename=b-on.qcow2 2>&1 || true)
case "$qmsg" in *"$msg"*) ;; *) fail "qemu-img says otherwise: $qmsg" ;; esac
cp q-off.qcow2 q-unmap.qcow2
cp q-off.qcow2 b-unmap.qcow2
qemu-img convert -n dz.raw --target-image-opts driver=qcow2,detect-zeroes=unmap,file.filename=q-unmap.qcow2
"$BLKIMG" convert -n dz.raw --target-image-opts driver=qcow2,detect-zeroes=unmap,file.filename=b-unmap.qcow2 ||
    fail "detect-zeroes=unmap on a convert target"
expect_eq "detect-zeroes=unmap: the map" "$(qemu-img map --output=json q-unmap.qcow2)" "$(qemu-img map --output=json b-unmap.qcow2)"
expect_fail 1 "Parameter 'detect-zeroes'" "$BLKIMG" info 'json:{"driver":"raw","detect-zeroes":true,"file":{"driver":"file","filename":"dz.raw"}}'
ok "detect-zeroes as qemu-img"
