#!/usr/bin/env python3
"""Removes the "children" members (qemu 8+) from qemu-style pretty JSON on stdin, keeping
every other line byte for byte, so the rest can be compared with qemu-img 7.2's text."""
import re
import sys

lines = sys.stdin.read().split("\n")
out = []
i = 0
while i < len(lines):
    m = re.match(r'^(\s*)"children": \[$', lines[i])
    if not m:
        out.append(lines[i])
        i += 1
        continue
    indent = m.group(1)
    j = i + 1
    while not (lines[j] == indent + "]," or lines[j] == indent + "]"):
        j += 1
    if lines[j] == indent + "]" and out and out[-1].endswith(","):
        out[-1] = out[-1][:-1]  # children was the last member
    i = j + 1
sys.stdout.write("\n".join(out))
