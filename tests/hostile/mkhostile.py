#!/usr/bin/env python3
"""Makes hostile qcow2 images by patching a valid image made by qemu-img/qemu-io.

usage: mkhostile.py CASE BASE OUT
Each CASE corrupts one on-disk field the way a broken or malicious image would.
"""
import struct
import sys

# qcow2 header field offsets (docs/interop/qcow2.rst)
MAGIC, VERSION, BACKING_OFF, BACKING_SIZE, CLUSTER_BITS, SIZE = 0, 4, 8, 16, 20, 24
CRYPT, L1_SIZE, L1_OFF, RT_OFF, RT_CLUSTERS = 32, 36, 40, 48, 56
NB_SNAP, SNAP_OFF, INCOMPAT, COMPAT, AUTOCLEAR, REFORDER, HDRLEN = 60, 64, 72, 80, 88, 96, 100

L2_OFFSET_MASK = 0x00FFFFFFFFFFFE00
COMPRESSED = 1 << 62
COPIED = 1 << 63


def u32(b, off, v):
    struct.pack_into(">I", b, off, v)


def u64(b, off, v):
    struct.pack_into(">Q", b, off, v)


def get64(b, off):
    return struct.unpack_from(">Q", b, off)[0]


def l2_of(b, index=0):
    l1 = get64(b, L1_OFF)
    return get64(b, l1 + 8 * index) & L2_OFFSET_MASK


def main():
    case, base, out = sys.argv[1:4]
    b = bytearray(open(base, "rb").read())
    flen = len(b)
    if case == "truncated-header":
        b = b[:40]
    elif case == "bad-version":
        u32(b, VERSION, 7)
    elif case == "cluster-bits-small":
        u32(b, CLUSTER_BITS, 8)
    elif case == "cluster-bits-large":
        u32(b, CLUSTER_BITS, 22)
    elif case == "cluster-bits-huge":
        u32(b, CLUSTER_BITS, 63)
    elif case == "l1-past-eof":
        u64(b, L1_OFF, 1 << 40)
    elif case == "l1-unaligned":
        u64(b, L1_OFF, get64(b, L1_OFF) + 8)
    elif case == "l1-huge":
        u32(b, L1_SIZE, 0x7FFFFFFF)
    elif case == "l1-too-small":
        u32(b, L1_SIZE, 0)
    elif case == "size-huge":
        u64(b, SIZE, 1 << 62)
    elif case == "refcount-table-past-eof":
        u64(b, RT_OFF, 1 << 40)
    elif case == "refcount-table-huge":
        u32(b, RT_CLUSTERS, 0xFFFFFFFF)
    elif case == "snapshots-past-eof":
        u32(b, NB_SNAP, 1)
        u64(b, SNAP_OFF, 1 << 40)
    elif case == "snapshots-huge":
        u32(b, NB_SNAP, 0xFFFFFFFF)
        u64(b, SNAP_OFF, 0x10000)
    elif case == "snapshot-extra-huge":
        # Expects a base with one snapshot: its extra data size runs past the file.
        so = get64(b, SNAP_OFF)
        u32(b, so + 36, 1000)
        struct.pack_into(">H", b, so + 14, 0xFFFF)
    elif case == "snapshot-extra-too-large":
        so = get64(b, SNAP_OFF)
        u32(b, so + 36, 0x7FFFFFFF)
    elif case == "backing-name-too-long":
        u64(b, BACKING_OFF, 0x200)
        u32(b, BACKING_SIZE, 4000)
    elif case == "backing-name-past-eof":
        u64(b, BACKING_OFF, flen + 4096)
        u32(b, BACKING_SIZE, 16)
    elif case == "header-length-short":
        u32(b, HDRLEN, 50)
    elif case == "header-length-huge":
        u32(b, HDRLEN, 0x7FFFFFFF)
    elif case == "extension-too-long":
        # First extension right after the header: make its length run past the cluster.
        hl = struct.unpack_from(">I", b, HDRLEN)[0]
        u32(b, hl + 4, 0x7FFFFFF0)
    elif case == "unknown-incompat":
        u64(b, INCOMPAT, struct.unpack_from(">Q", b, INCOMPAT)[0] | (1 << 40))
    elif case == "refcount-order-bad":
        u32(b, REFORDER, 9)
    elif case == "encrypted":
        u32(b, CRYPT, 1)
    elif case == "l1-entry-past-eof":
        l1 = get64(b, L1_OFF)
        u64(b, l1, COPIED | (1 << 40))
    elif case == "l1-entry-unaligned":
        l1 = get64(b, L1_OFF)
        u64(b, l1, COPIED | (get64(b, l1) & L2_OFFSET_MASK) + 512)
    elif case == "l2-entry-past-eof":
        u64(b, l2_of(b), COPIED | (1 << 40))
    elif case == "l2-entry-into-refcount-table":
        u64(b, l2_of(b), COPIED | get64(b, RT_OFF))
    elif case == "l2-entry-into-l1":
        u64(b, l2_of(b), COPIED | (get64(b, L1_OFF) & ~0xFFFF))
    elif case == "l2-entry-unaligned":
        u64(b, l2_of(b), COPIED | ((get64(b, l2_of(b)) & L2_OFFSET_MASK) + 512))
    elif case == "compressed-past-eof":
        # Expects a base whose first cluster is compressed: move its data past EOF.
        l2 = l2_of(b)
        e = get64(b, l2)
        if not e & COMPRESSED:
            sys.exit("base image's first cluster is not compressed")
        cb = struct.unpack_from(">I", b, CLUSTER_BITS)[0]
        x = 62 - (cb - 8)
        sectors = (e >> x) & ((1 << (cb - 8)) - 1)
        u64(b, l2, COMPRESSED | (sectors << x) | ((1 << 40) & ((1 << x) - 1)))
    elif case == "compressed-garbage":
        l2 = l2_of(b)
        e = get64(b, l2)
        cb = struct.unpack_from(">I", b, CLUSTER_BITS)[0]
        x = 62 - (cb - 8)
        off = e & ((1 << x) - 1)
        for i in range(off, min(off + 512, len(b))):
            b[i] = 0xFF
    else:
        sys.exit("unknown case " + case)
    open(out, "wb").write(b)


if __name__ == "__main__":
    main()
