#!/usr/bin/env bash
# Times blkimg against qemu-img side by side in one run, alternating, for info, map and check, and
# prints a markdown table per image size: the median wall time and median CPU time
# (user+sys) of each, the ratios blkimg/qemu-img (of the medians, and "paired": the median of
# the per-pair ratios) and peak RSS.
# usage: tests/bench/bench_info_map.sh [BLKIMG] [RUNS]   (not a test; needs qemu-utils, python3)
#   RUNS    alternating pairs per case (default 30)
# environment:
#   SIZES="256M 1G 4G"  virtual sizes of the images, one table each
#
# The images of each size S (built in a temporary directory, removed at the end):
#   frag.qcow2   4 KiB clusters, 4 KiB of data every 16 KiB: S / 16 KiB extents (16k at 256M)
#   frag.raw     the same pattern in a raw file (data and holes: SEEK_DATA/SEEK_HOLE)
#   c0..c2.qcow2 a three-deep chain of size S, each layer 16 MiB of data at staggered offsets
#   full.qcow2   64 KiB clusters, every cluster allocated (preallocation=metadata): check walks
#                S / 64 KiB data clusters and their L2 tables
set -euo pipefail
BLKIMG=$(realpath "${1:-build/tools/blkimg}")
RUNS=${2:-30}
SIZES=${SIZES:-256M 1G 4G}
TOP=$(mktemp -d)
trap 'rm -rf "$TOP"' EXIT

for SIZE in $SIZES; do
W=$TOP/$SIZE
mkdir -p "$W"
cd "$W"
echo "building the $SIZE images in $W ..." >&2
bytes=$(numfmt --from=iec "$SIZE")
python3 - "$bytes" <<'PY'
import sys
size = int(sys.argv[1])
with open("frag.raw", "wb") as f:
    f.truncate(size)
    for i, off in enumerate(range(0, size, 16384)):
        f.seek(off)
        f.write(bytes([i % 251 + 1]) * 4096)
PY
qemu-img convert -f raw -O qcow2 -o cluster_size=4k frag.raw frag.qcow2
qemu-img create -q -f qcow2 c0.qcow2 "$SIZE"
qemu-io -f qcow2 -c 'write -P 1 0 16M' c0.qcow2 >/dev/null
qemu-img create -q -f qcow2 -b c0.qcow2 -F qcow2 c1.qcow2
qemu-io -f qcow2 -c 'write -P 2 8M 16M' c1.qcow2 >/dev/null
qemu-img create -q -f qcow2 -b c1.qcow2 -F qcow2 c2.qcow2
qemu-io -f qcow2 -c 'write -P 3 20M 16M' c2.qcow2 >/dev/null
qemu-img create -q -f qcow2 -o preallocation=metadata full.qcow2 "$SIZE"

# Wall time from a monotonic clock, CPU time from the child's own rusage (wait4). Peak RSS
# comes from /usr/bin/time (package time): a child forked from python would report python's
# own RSS.
python3 - "$BLKIMG" "$RUNS" "$SIZE" <<'PY'
import os, statistics, subprocess, sys, time
blkimg, runs, size = sys.argv[1], int(sys.argv[2]), sys.argv[3]
cases = [
    ("info qcow2 (4 KiB clusters, fragmented)", ["info", "frag.qcow2"]),
    ("info --output=json --backing-chain (3 deep)", ["info", "--output=json", "--backing-chain", "c2.qcow2"]),
    ("map --output=json qcow2, fragmented", ["map", "--output=json", "frag.qcow2"]),
    ("map --output=json raw, fragmented", ["map", "--output=json", "-f", "raw", "frag.raw"]),
    ("map --output=json 3-deep chain", ["map", "--output=json", "c2.qcow2"]),
    ("check qcow2, every cluster allocated", ["check", "full.qcow2"]),
    ("check --output=json qcow2 (4 KiB clusters, fragmented)", ["check", "--output=json", "frag.qcow2"]),
]
def run(argv):
    with open(os.devnull, "wb") as null:
        t0 = time.perf_counter()
        p = subprocess.Popen(argv, stdout=null, stderr=null)
        _, status, ru = os.wait4(p.pid, 0)
        t1 = time.perf_counter()
    p.returncode = 0  # reaped here
    if status != 0:
        sys.exit("failed: %s" % " ".join(argv))
    return t1 - t0, ru.ru_utime + ru.ru_stime

def peak_rss(argv):
    out = subprocess.run(["/usr/bin/time", "-f", "%M"] + argv, stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE, text=True, check=True).stderr
    return int(out.strip().splitlines()[-1])

def paired(a, b):
    return statistics.median([x / y for x, y in zip(a, b) if y > 0] or [float("nan")])

# Both tools must say the same about the images (map: the same extents; check: the same report).
for label, args in cases:
    if args[0] not in ("map", "check"):
        continue
    q = subprocess.run(["qemu-img"] + args, stdout=subprocess.PIPE, check=True).stdout
    b = subprocess.run([blkimg] + args, stdout=subprocess.PIPE, check=True).stdout
    if q != b:
        sys.exit("bench_info_map: blkimg and qemu-img disagree on '%s'" % label)

print()
print("### SIZE=%s" % size)
print()
print("%d pairs per case; load average at the end %s" % (runs, " ".join(open("/proc/loadavg").read().split()[:3])))
print()
print("| case | qemu-img wall (ms) | blkimg wall (ms) | ratio | paired | qemu-img CPU (ms) | blkimg CPU (ms) "
      "| CPU ratio, paired | qemu-img peak RSS (KiB) | blkimg peak RSS (KiB) |")
print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
for label, args in cases:
    qw, qc, bw, bc = [], [], [], []
    for i in range(runs):
        # Alternate which tool goes first, so drift hits both alike.
        order = [("q", ["qemu-img"] + args), ("b", [blkimg] + args)]
        if i % 2:
            order.reverse()
        for who, argv in order:
            w, c = run(argv)
            (qw if who == "q" else bw).append(w)
            (qc if who == "q" else bc).append(c)
    qm = max(peak_rss(["qemu-img"] + args) for _ in range(3))
    bm = max(peak_rss([blkimg] + args) for _ in range(3))
    med = statistics.median
    print("| %s | %.1f | %.1f | %.2f | %.2f | %.1f | %.1f | %.2f | %d | %d |" % (
        label, med(qw) * 1000, med(bw) * 1000, med(bw) / med(qw), paired(bw, qw),
        med(qc) * 1000, med(bc) * 1000, paired(bc, qc), qm, bm))
PY
cd "$TOP"
rm -rf "$W"
done
