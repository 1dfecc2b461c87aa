#!/usr/bin/env python3
"""sparse_cmp.py A B: exit 0 if the two files have the same length and bytes.

Like cmp -s, but only reads where either file has data (SEEK_DATA/SEEK_HOLE): a hole reads
as zeroes in both, so a 1 TiB sparse image is compared in the time its data takes.
"""
import os
import sys


def data_ranges(fd, size):
    out, pos = [], 0
    while pos < size:
        try:
            start = os.lseek(fd, pos, os.SEEK_DATA)
        except OSError:
            break
        end = os.lseek(fd, start, os.SEEK_HOLE)
        out.append((start, end))
        pos = end
    return out


def main():
    a, b = (os.open(p, os.O_RDONLY) for p in sys.argv[1:3])
    size = os.fstat(a).st_size
    if os.fstat(b).st_size != size:
        return 1
    ranges = sorted(data_ranges(a, size) + data_ranges(b, size))
    merged = []
    for s, e in ranges:
        if merged and s <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], e)
        else:
            merged.append([s, e])
    for s, e in merged:
        while s < e:
            n = min(e - s, 1 << 22)
            if os.pread(a, n, s) != os.pread(b, n, s):
                return 1
            s += n
    return 0


sys.exit(main())
