# poke FILE WHAT: damages a qcow2 file in place for the check and repair tests (offsets from
# its header; 16-bit refcounts, the first refcount block covering the whole file).
# Sourced by check_compat.sh and repair_compat.sh after tests/lib.sh.
poke() {
    python3 - "$@" <<'PY' || fail "poke $*"
import struct, sys
f, what = sys.argv[1], sys.argv[2]
d = bytearray(open(f, 'rb').read())
be64 = lambda o: struct.unpack_from('>Q', d, o)[0]
put64 = lambda o, v: struct.pack_into('>Q', d, o, v)
cs = 1 << struct.unpack_from('>I', d, 20)[0]
l1 = be64(40); rt = be64(48)
l2 = be64(l1) & 0x00fffffffffffe00
rb = be64(rt)
def setref(cluster, v): struct.pack_into('>H', d, rb + 2 * cluster, v)
def getref(cluster): return struct.unpack_from('>H', d, rb + 2 * cluster)[0]
data0 = be64(l2) & 0x00fffffffffffe00
if what == 'leak':            # one more cluster at the end, counted but never referenced
    setref(len(d) // cs, 1); d += bytes(cs)
elif what == 'refcount-high':
    setref(data0 // cs, getref(data0 // cs) + 1)
elif what == 'refcount-low':
    setref(data0 // cs, getref(data0 // cs) - 1)
elif what == 'l2-into-l1':
    put64(l2 + 8, l1 | (1 << 63))
elif what == 'twice':
    put64(l2 + 8, be64(l2))
elif what == 'copied':
    put64(l2, be64(l2) & ~(1 << 63))
elif what == 'compressed-eof':  # keep the size field, move the offset far past the end
    e = be64(l2); shift = 62 - (cs.bit_length() - 1 - 8)
    put64(l2, (e & ~((1 << shift) - 1)) | (len(d) + 100 * cs))
elif what == 'l1-reserved':
    put64(l1, be64(l1) | 2)
elif what == 'unaligned':       # data cluster offset off the cluster boundary
    put64(l2, be64(l2) + 512)
elif what == 'ext-bitmap':      # extended L2: subcluster 0 both allocated and zero
    struct.pack_into('>Q', d, l2 + 8, struct.unpack_from('>Q', d, l2 + 8)[0] | (1 << 32) | 1)
elif what == 'refblock-outside':
    put64(rt + 8, len(d) * 4 // cs * cs)
elif what == 'refblock-unaligned':
    put64(rt + 8, rb + 512)
elif what == 'huge-l1':
    struct.pack_into('>I', d, 36, 0x7fffffff)
elif what == 'reftable-eof':
    put64(48, len(d) * 16)
elif what == 'shared-low':      # a cluster two snapshots share, counted once
    c = next(c for c in range(len(d) // cs) if getref(c) == 2)
    setref(c, 1)
elif what == 'copied-shared':   # COPIED set on an active entry whose cluster is shared
    i = next(i for i in range(cs // 8) if be64(l2 + 8 * i) and not be64(l2 + 8 * i) >> 63)
    put64(l2 + 8 * i, be64(l2 + 8 * i) | (1 << 63))
elif what == 'l1-copied':       # the L1 entry's COPIED flag cleared
    put64(l1, be64(l1) & ~(1 << 63))
elif what == 'refblock-far':    # a refcount block a petabyte past the end
    put64(rt + 8, 1 << 50)
elif what == 'dirty':           # the dirty bit (lazy refcounts) and a refcount left at 0
    struct.pack_into('>Q', d, 72, struct.unpack_from('>Q', d, 72)[0] | 1)
    setref(data0 // cs, 0)
elif what == 'prealloc-unaligned':  # a zero cluster at an unaligned offset (qemu zeroes the entry)
    put64(l2, (be64(l2) + 512) | 1)
elif what == 'refblock0-unaligned':  # refcount table entry 0 unaligned (qemu marks the image corrupt)
    put64(rt, rb + 0x600)
elif what == 'corrupt-bit':
    struct.pack_into('>Q', d, 72, struct.unpack_from('>Q', d, 72)[0] | 2)
open(f, 'wb').write(d)
PY
}
