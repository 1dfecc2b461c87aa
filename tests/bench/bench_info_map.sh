#!/usr/bin/env bash
# Times blkimg against qemu-img side by side in one run, alternating, and prints the median
# wall time of each, the ratio blkimg/qemu-img and peak RSS, for info and map.
# usage: tests/bench/bench_info_map.sh [BLKIMG] [RUNS]   (not a test; needs qemu-utils, python3)
set -euo pipefail
BLKIMG=$(realpath "${1:-build/tools/blkimg}")
RUNS=${2:-30}
W=$(mktemp -d)
trap 'rm -rf "$W"' EXIT
cd "$W"

echo "building images in $W ..." >&2
# A qcow2 with ~15k extents: every other 4 KiB cluster written (deterministic pattern).
qemu-img create -q -f qcow2 -o cluster_size=4k many.qcow2 256M
for i in $(seq 0 2 30000); do echo "write -P $((i % 251)) $((i * 4096)) 4k"; done > many.io
qemu-io -f qcow2 many.qcow2 <many.io >/dev/null
# A raw file with ~15k extents: 4 KiB of data every 8 KiB.
python3 - <<'PY'
with open("many.raw", "wb") as f:
    f.truncate(256 << 20)
    for i in range(15000):
        f.seek(i * 8192)
        f.write(bytes([i % 251 + 1]) * 4096)
PY
# A three-deep chain.
qemu-img create -q -f qcow2 c0.qcow2 1G
qemu-io -f qcow2 -c 'write -P 1 0 16M' c0.qcow2 >/dev/null
qemu-img create -q -f qcow2 -b c0.qcow2 -F qcow2 c1.qcow2
qemu-io -f qcow2 -c 'write -P 2 8M 16M' c1.qcow2 >/dev/null
qemu-img create -q -f qcow2 -b c1.qcow2 -F qcow2 c2.qcow2
qemu-io -f qcow2 -c 'write -P 3 20M 16M' c2.qcow2 >/dev/null

# Alternate qemu-img and blkimg on each case; wall time from a monotonic clock, medians of
# RUNS pairs. Peak RSS comes from /usr/bin/time (package time): a child forked from python
# would report python's own RSS.
python3 - "$BLKIMG" "$RUNS" <<'PY'
import os, statistics, subprocess, sys, time
blkimg, runs = sys.argv[1], int(sys.argv[2])
cases = [
    ("info qcow2", ["info", "many.qcow2"]),
    ("info --output=json --backing-chain (3 deep)", ["info", "--output=json", "--backing-chain", "c2.qcow2"]),
    ("map --output=json qcow2, 15k extents", ["map", "--output=json", "many.qcow2"]),
    ("map --output=json raw, 15k extents", ["map", "--output=json", "-f", "raw", "many.raw"]),
    ("map --output=json 3-deep chain", ["map", "--output=json", "c2.qcow2"]),
]
def run(argv):
    with open(os.devnull, "wb") as null:
        t0 = time.perf_counter()
        p = subprocess.Popen(argv, stdout=null, stderr=null)
        _, status = os.waitpid(p.pid, 0)
        t1 = time.perf_counter()
    if status != 0:
        sys.exit("failed: %s" % " ".join(argv))
    return t1 - t0

def peak_rss(argv):
    out = subprocess.run(["/usr/bin/time", "-f", "%M"] + argv, stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE, text=True, check=True).stderr
    return int(out.strip().splitlines()[-1])
print("| case | qemu-img median (ms) | blkimg median (ms) | ratio | qemu-img peak RSS (KiB) | blkimg peak RSS (KiB) |")
print("|---|---:|---:|---:|---:|---:|")
for label, args in cases:
    q, b = [], []
    for _ in range(runs):
        q.append(run(["qemu-img"] + args))
        b.append(run([blkimg] + args))
    qt = statistics.median(q) * 1000
    bt = statistics.median(b) * 1000
    qm = max(peak_rss(["qemu-img"] + args) for _ in range(3))
    bm = max(peak_rss([blkimg] + args) for _ in range(3))
    print("| %s | %.1f | %.1f | %.2f | %d | %d |" % (label, qt, bt, bt / qt, qm, bm))
PY
