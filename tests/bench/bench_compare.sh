#!/usr/bin/env bash
# Times `blkimg compare` against `qemu-img compare` side by side in one run, alternating, and
# prints a markdown table per image size: median wall time, median CPU time (user+sys), the
# ratios blkimg/qemu-img (of the medians, and "paired": the median of the per-round ratios)
# and peak RSS. Both tools must give the same verdict and exit code on every case.
# usage: tests/bench/bench_compare.sh [BLKIMG] [RUNS]   (not a test; needs qemu-utils, c++, python3, time)
#   RUNS    alternating rounds per case (default 5)
# environment:
#   SIZES="256M 1G 4G"  image sizes, one table each
#   SEED=1              generator seed (the same image as bench_convert.sh)
#
# The images of each size (a temporary directory, removed at the end): image.raw from
# tests/bench/gen_image.cpp (~40% random, ~20% text-like, ~20% zeroes written out, ~20% holes),
# its qcow2 form, a second qcow2 copy, its zlib- and zstd-compressed forms, and a copy of the
# raw image with one byte changed in its last 1% (a "differ" case that reads almost all).
# Every source's data is read once before each timed command, so both tools start warm.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
BLKIMG=$(realpath "${1:-build/tools/blkimg}")
RUNS=${2:-5}
SIZES=${SIZES:-256M 1G 4G}
SEED=${SEED:-1}
TOP=$(mktemp -d "${TMPDIR:-/var/tmp}/blkimg-bench-compare.XXXXXX")
trap 'rm -rf "$TOP"' EXIT
c++ -O2 -std=c++20 -o "$TOP/blk-genimage" "$HERE/gen_image.cpp"

for SIZE in $SIZES; do
W=$TOP/$SIZE
mkdir -p "$W"
cd "$W"
echo "building the $SIZE images in $W ..." >&2
"$TOP/blk-genimage" --seed "$SEED" "$SIZE" image.raw delta.raw 2>/dev/null
rm -f delta.raw
qemu-img convert -f raw -O qcow2 image.raw image.qcow2
cp image.qcow2 copy.qcow2
qemu-img convert -f raw -O qcow2 -c image.raw zlib.qcow2
qemu-img convert -f raw -O qcow2 -c -o compression_type=zstd image.raw zstd.qcow2
cp --sparse=always image.raw changed.raw
bytes=$(stat -c %s image.raw)
# A byte in the last data extent, so the whole image is read before the mismatch.
last=$(qemu-img map --output=json -f raw image.raw | python3 -c '
import json, sys
print(max(e["start"] + e["length"] - 1 for e in json.load(sys.stdin) if e["data"]))')
printf '\xa5' | dd of=changed.raw bs=1 seek="$last" conv=notrunc 2>/dev/null

python3 - "$BLKIMG" "$RUNS" "$SIZE" <<'PY'
import os, statistics, subprocess, sys, time
blkimg, runs, size = sys.argv[1], int(sys.argv[2]), sys.argv[3]
cases = [
    ("raw ↔ qcow2", ["image.raw", "image.qcow2"]),
    ("qcow2 ↔ qcow2", ["image.qcow2", "copy.qcow2"]),
    ("zlib qcow2 ↔ raw", ["zlib.qcow2", "image.raw"]),
    ("zstd qcow2 ↔ raw", ["zstd.qcow2", "image.raw"]),
    ("raw ↔ raw, differ at the end", ["image.raw", "changed.raw"]),
]

def warm(files):
    for f in files:
        with open(f, "rb") as fh:
            while fh.read(8 << 20):
                pass

def run(argv):
    with open(os.devnull, "wb") as null:
        t0 = time.perf_counter()
        p = subprocess.Popen(argv, stdout=null, stderr=null)
        _, status, ru = os.wait4(p.pid, 0)
        t1 = time.perf_counter()
    return t1 - t0, ru.ru_utime + ru.ru_stime, os.waitstatus_to_exitcode(status)

def peak_rss(argv):
    out = subprocess.run(["/usr/bin/time", "-f", "%M"] + argv, stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE, text=True).stderr
    return int(out.strip().splitlines()[-1])

def paired(a, b):
    return statistics.median([x / y for x, y in zip(a, b) if y > 0] or [float("nan")])

for label, files in cases:
    q = subprocess.run(["qemu-img", "compare"] + files, capture_output=True, text=True)
    b = subprocess.run([blkimg, "compare"] + files, capture_output=True, text=True)
    if (q.returncode, q.stdout) != (b.returncode, b.stdout):
        sys.exit("bench_compare: verdicts differ on '%s': qemu-img %d %r, blkimg %d %r" %
                 (label, q.returncode, q.stdout, b.returncode, b.stdout))

print()
print("### SIZE=%s" % size)
print()
print("%d rounds per case; load average at the end %s" % (runs, " ".join(open("/proc/loadavg").read().split()[:3])))
print()
print("| case | qemu-img wall (s) | blkimg wall (s) | ratio | paired | qemu-img CPU (s) | blkimg CPU (s) "
      "| CPU ratio, paired | qemu-img peak RSS (KiB) | blkimg peak RSS (KiB) |")
print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
for label, files in cases:
    qw, qc, bw, bc = [], [], [], []
    for i in range(runs):
        order = [("q", ["qemu-img", "compare"] + files), ("b", [blkimg, "compare"] + files)]
        if i % 2:
            order.reverse()
        for who, argv in order:
            warm(files)
            w, c, _ = run(argv)
            (qw if who == "q" else bw).append(w)
            (qc if who == "q" else bc).append(c)
    qm = peak_rss(["qemu-img", "compare"] + files)
    bm = peak_rss([blkimg, "compare"] + files)
    med = statistics.median
    print("| %s | %.3f | %.3f | %.2f | %.2f | %.3f | %.3f | %.2f | %d | %d |" % (
        label, med(qw), med(bw), med(bw) / med(qw), paired(bw, qw), med(qc), med(bc), paired(bc, qc), qm, bm))
PY
cd "$TOP"
rm -rf "$W"
done
