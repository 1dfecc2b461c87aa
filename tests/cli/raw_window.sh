# A raw window (offset/size) under a qcow2 target: a plain node over its file, never a
# filter without a child. Growing the image past a fixed window fails as qemu-img does
# ("No space left on device"), an open-ended window grows, and nothing crashes.
source "$SRCDIR/tests/lib.sh"

head -c 4M /dev/urandom > src.raw

# Fixed size: qcow2 needs room the window does not have.
qemu-img create -q -f qcow2 t.qcow2 4M
truncate -s 1M t.qcow2
cp t.qcow2 q.qcow2
qrc=0
qemu-img convert -n src.raw --target-image-opts driver=qcow2,file.driver=raw,file.size=1048576,file.file.filename=q.qcow2 2>q.err || qrc=$?
expect_eq "qemu-img refuses to grow a fixed raw window" 1 "$qrc"
expect_fail 1 "error while writing at byte 0: No space left on device" \
    "$BLKIMG" convert -n src.raw --target-image-opts driver=qcow2,file.driver=raw,file.size=1048576,file.file.filename=t.qcow2
expect_eq "the fixed window's file did not grow" 1048576 "$(stat -c %s t.qcow2)"
ok "a qcow2 over a fixed raw window reports ENOSPC and exits 1 (no crash)"

# Only an offset: the window grows with the image, as in qemu.
qemu-img create -q -f qcow2 g.qcow2 4M
truncate -s 1M g.qcow2
"$BLKIMG" convert -n src.raw --target-image-opts driver=qcow2,file.driver=raw,file.offset=0,file.file.filename=g.qcow2 ||
    fail "convert into a qcow2 over an open-ended raw window"
qemu-img compare -q src.raw g.qcow2 || fail "the open-ended window's image differs"
qemu-img check -q g.qcow2 || fail "the open-ended window's image does not check clean"
ok "a qcow2 over an offset-only raw window grows and holds the data"

# Reading through a window: the bytes at the offset.
head -c 3M /dev/urandom > w.raw
expect_eq "window reads the file's bytes at its offset" \
    "$(dd if=w.raw bs=1M skip=1 count=1 status=none | md5sum)" \
    "$("$BLKIMG" convert -O raw --image-opts driver=raw,offset=1048576,size=1048576,file.filename=w.raw out.raw && md5sum < out.raw)"
ok "a raw window converts the bytes it maps"
