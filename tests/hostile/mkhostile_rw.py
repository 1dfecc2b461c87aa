#!/usr/bin/env python3
"""Makes qcow2 images whose metadata a write (or a read-write open) must refuse to trust.

usage: mkhostile_rw.py CASE BASE OUT
BASE is an image from qemu-img with data in its first clusters (one L2 table).
"""
import struct
import sys

L1_OFF, RT_OFF, CLUSTER_BITS = 40, 48, 20
OFFSET_MASK = 0x00FFFFFFFFFFFE00
COPIED = 1 << 63
COMPRESSED = 1 << 62


def get64(b, off):
    return struct.unpack_from(">Q", b, off)[0]


def put64(b, off, v):
    struct.pack_into(">Q", b, off, v)


def main():
    case, base, out = sys.argv[1:4]
    b = bytearray(open(base, "rb").read())
    cs = 1 << struct.unpack_from(">I", b, CLUSTER_BITS)[0]
    l1 = get64(b, L1_OFF)
    rt = get64(b, RT_OFF)
    l2 = get64(b, l1) & OFFSET_MASK
    block0 = get64(b, rt) & OFFSET_MASK
    if case == "l2-entry-into-l1":
        put64(b, l2, COPIED | l1)
    elif case == "l2-entry-into-refblock":
        put64(b, l2, COPIED | block0)
    elif case == "l2-entry-into-own-table":
        put64(b, l2, COPIED | l2)
    elif case == "l2-entry-into-refcount-table":
        put64(b, l2, COPIED | rt)
    elif case == "compressed-into-refblock":
        x = 62 - (struct.unpack_from(">I", b, CLUSTER_BITS)[0] - 8)
        put64(b, l2, COMPRESSED | (1 << x) | block0)
    elif case == "refcount-entry-past-eof":
        put64(b, rt + 8, 1 << 40)
    elif case == "refcount-block-on-l1":
        put64(b, rt, l1)
    elif case == "refcount-block-unaligned":
        put64(b, rt, block0 + 512)
    elif case == "l1-entry-on-refcount-table":
        put64(b, l1 + 8, COPIED | rt)
    elif case == "l1-entry-on-l2":
        put64(b, l1 + 8, COPIED | l2)
    elif case == "l2-refcount-zero":
        # The refcount of the L2 table dropped to 0: an allocation would hand it out.
        idx = l2 // cs
        struct.pack_into(">H", b, block0 + 2 * idx, 0)
    elif case == "refcount-block-missing":
        # No refcount block at all: a new one would go over the header.
        put64(b, rt, 0)
    else:
        sys.exit("unknown case " + case)
    open(out, "wb").write(b)


if __name__ == "__main__":
    main()
