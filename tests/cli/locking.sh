# Image locking interoperates with QEMU's: an image a qemu process writes is refused
# unless -U is given, and a read-only holder does not block us.
source "$SRCDIR/tests/lib.sh"

qemu-img create -q -f raw img.raw 1M
# A writer holds the image (qemu-io opens read-write and keeps it open while sleeping).
qemu-io -f raw -c 'sleep 20000' img.raw &
holder=$!
wait_lock_on img.raw 101
expect_fail 1 "img\.raw.*Failed to get shared \"write\" lock" "$BLKIMG" info img.raw
"$BLKIMG" info -U img.raw >/dev/null || fail "-U did not skip the lock check"
"$BLKIMG" info --image-opts driver=raw,file.filename=img.raw,file.locking=off >/dev/null ||
    fail "file.locking=off did not skip the lock check"
# force-share=on on the format node reaches the file below it, as in qemu-img.
for spec in 'driver=raw,force-share=on,file.filename=img.raw' 'driver=raw,file.force-share=on,file.filename=img.raw'; do
    qemu-img info --image-opts "$spec" >/dev/null || fail "qemu-img refuses $spec (test setup)"
    "$BLKIMG" info --image-opts "$spec" >/dev/null || fail "$spec did not skip the lock check"
done
spec='json:{"driver": "raw", "force-share": true, "file": {"driver": "file", "filename": "img.raw"}}'
"$BLKIMG" info "$spec" >/dev/null || fail "force-share in json: did not skip the lock check"
# The "-U skips the check" hint where -U helps (a read-only open without it), and nowhere else:
# not when -U was given, not on targets, which -U does not reach.
expect_fail 1 "^blkimg: Could not open 'img\.raw': Failed to get shared \"write\" lock: is another process using the image \[img\.raw\]\? \(-U skips the check\)$" \
    "$BLKIMG" info img.raw
expect_fail 1 "\(-U skips the check\)$" "$BLKIMG" map img.raw
expect_fail 1 "\(-U skips the check\)$" "$BLKIMG" convert img.raw o.raw
qemu-img create -q -f raw src.raw 1M
for args in "convert -n src.raw img.raw" "convert -U -n src.raw img.raw" "convert -O qcow2 src.raw img.raw" \
    "create -f qcow2 img.raw 1M" "create -f raw img.raw 1M"; do
    expect_fail 1 "Failed to get .*lock: is another process using the image \[img\.raw\]\?$" "$BLKIMG" $args
done
kill "$holder"; wait "$holder" 2>/dev/null || true
ok "writer blocks us, -U and locking=off do not"

# A read-only holder shares reading with us.
qemu-io -r -f raw -c 'sleep 20000' img.raw &
holder=$!
wait_lock_on img.raw 100
"$BLKIMG" info img.raw >/dev/null || fail "a read-only holder blocked a read-only open"
kill "$holder"; wait "$holder" 2>/dev/null || true
ok "read-only holders share"
