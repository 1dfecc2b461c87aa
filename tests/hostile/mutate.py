#!/usr/bin/env python3
"""Writes N mutants of a qcow2 image: random bytes of its metadata clusters changed.
usage: mutate.py BASE OUTDIR N SEED   (deterministic for a given seed)"""
import os
import random
import struct
import sys

base, outdir, n, seed = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
data = open(base, "rb").read()
cluster = 1 << struct.unpack_from(">I", data, 20)[0]
rng = random.Random(seed)
# Metadata lives in the first clusters of a small image: header, refcount table and block,
# L1 and L2 tables. Mutate there, where a parser can go wrong.
span = min(len(data), 6 * cluster)
for i in range(n):
    b = bytearray(data)
    for _ in range(rng.randint(1, 8)):
        pos = rng.randrange(span) if rng.random() < 0.7 else rng.randrange(min(span, 128))
        kind = rng.random()
        if kind < 0.4:
            b[pos] = rng.randrange(256)
        elif kind < 0.7:
            b[pos] ^= 1 << rng.randrange(8)
        else:
            v = rng.choice([0, 0xFFFFFFFF, 0x7FFFFFFF, 0x80000000, 1, 0xFFFF])
            pos -= pos % 4
            if pos + 4 <= len(b):
                struct.pack_into(">I", b, pos, v)
    with open(os.path.join(outdir, "m%04d.qcow2" % i), "wb") as f:
        f.write(b)
