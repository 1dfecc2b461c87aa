#!/usr/bin/env python3
"""qcow2_bitmaps.py A [B]: prints the persistent dirty bitmaps of qcow2 image A (name: flags,
granularity bits, table entries, number of dirty bits), read straight from the file (header
extension, bitmap directory, bitmap tables, data clusters). With B: exits 1 unless both
images hold the same bitmaps, bit for bit, with the same flags and table sizes.
"""
import struct
import sys


def bitmaps(path):
    f = open(path, "rb").read()
    cs = 1 << struct.unpack(">I", f[20:24])[0]
    size = struct.unpack(">Q", f[24:32])[0]
    version = struct.unpack(">I", f[4:8])[0]
    p = struct.unpack(">I", f[100:104])[0] if version >= 3 else 72
    out = {}
    while p + 8 <= len(f):
        t, length = struct.unpack(">II", f[p:p + 8])
        if t == 0:
            break
        if t == 0x23852875:
            nb, _, _, q = struct.unpack(">IIQQ", f[p + 8:p + 32])
            for _ in range(nb):
                toff, tsz, flags, _, gb, ns, ex = struct.unpack(">QIIBBHI", f[q:q + 24])
                name = f[q + 24 + ex:q + 24 + ex + ns].decode()
                nbits = (size + (1 << gb) - 1) >> gb
                data = bytearray()
                for k in range(tsz):
                    e = struct.unpack(">Q", f[toff + 8 * k:toff + 8 * k + 8])[0]
                    o = e & 0x00fffffffffffe00
                    data += f[o:o + cs] if o else (b"\xff" if e & 1 else b"\0") * cs
                bits = [i for i in range(nbits) if data[i // 8] >> (i % 8) & 1]
                out[name] = (flags, gb, tsz, bits)
                q += (24 + ex + ns + 7) & ~7
        p += 8 + ((length + 7) & ~7)
    return out


def show(bm):
    return {k: "flags=%d gran_bits=%d table=%d dirty=%d %s" % (v[0], v[1], v[2], len(v[3]), v[3][:12]) for k, v in bm.items()}


a = bitmaps(sys.argv[1])
if len(sys.argv) > 2:
    b = bitmaps(sys.argv[2])
    if a != b:
        print("bitmaps differ: %s: %s; %s: %s" % (sys.argv[1], show(a), sys.argv[2], show(b)))
        sys.exit(1)
print(show(a))
