#!/usr/bin/env bash
# Times `blkimg commit` against `qemu-img commit` side by side in one run, alternating, and
# prints a markdown table per image size: median wall time, median CPU time (user+sys), the
# ratios blkimg/qemu-img (of the medians, and "paired": the median of the per-round ratios)
# and peak RSS. Commit changes its images, so every timed command gets fresh copies (made,
# synced and read once before the clock starts, for both tools alike).
# usage: tests/bench/bench_commit.sh [BLKIMG] [RUNS]   (not a test; needs qemu-utils, c++, python3)
#   RUNS    alternating rounds per case (default 5)
# environment:
#   SIZES="256M 1G 4G"  image sizes, one table each (SIZES=64M for a smoke run)
#   SEED=1              generator seed (the same images as bench_convert.sh)
#   SETTLE=2            seconds to wait before each timed command (see bench_convert.sh, Method)
#
# The cases, from tests/bench/gen_image.cpp's image (~40% random, ~20% text-like, ~20% zeroes
# written out, ~20% holes) and its delta (10% of the clusters rewritten, random or text):
#   10% overlay → qcow2 base    top.qcow2 (the delta in qcow2) over image.qcow2
#   10% overlay → raw base      the same top over image.raw
#   compressed overlay → qcow2  the delta compressed (qemu-img convert -c, zlib) over image.qcow2
# Each tool's first result of each case is checked before any number is reported: the two
# bases must read the same (qemu-img compare), qcow2 bases must pass qemu-img check.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
BLKIMG=$(realpath "${1:-build/tools/blkimg}")
RUNS=${2:-5}
SIZES=${SIZES:-${SIZE:-256M 1G 4G}}
SEED=${SEED:-1}
SETTLE=${SETTLE:-2}
for tool in qemu-img c++ python3 /usr/bin/time; do
    command -v "$tool" >/dev/null || { echo "bench_commit: $tool is missing" >&2; exit 2; }
done
TOP=$(mktemp -d "${TMPDIR:-/var/tmp}/blkimg-bench-commit.XXXXXX")
trap 'rm -rf "$TOP"' EXIT
c++ -O2 -std=c++20 -o "$TOP/blk-genimage" "$HERE/gen_image.cpp"

for SIZE in $SIZES; do
W=$TOP/$SIZE
mkdir -p "$W/src"
cd "$W/src"
echo "building the $SIZE images in $W ..." >&2
"$TOP/blk-genimage" --seed "$SEED" "$SIZE" image.raw delta.raw 2>/dev/null
qemu-img convert -f raw -O qcow2 image.raw image.qcow2
qemu-img convert -f raw -O qcow2 delta.raw top.qcow2
qemu-img rebase -u -f qcow2 -b image.qcow2 -F qcow2 top.qcow2
qemu-img convert -f raw -O qcow2 delta.raw top-raw.qcow2
qemu-img rebase -u -f qcow2 -b image.raw -F raw top-raw.qcow2
qemu-img convert -f raw -O qcow2 -c delta.raw top-comp.qcow2
qemu-img rebase -u -f qcow2 -b image.qcow2 -F qcow2 top-comp.qcow2
rm -f delta.raw
cd "$W"

python3 - "$BLKIMG" "$RUNS" "$SIZE" "$SETTLE" <<'PY'
import os, shutil, statistics, subprocess, sys, time
blkimg, runs, size, settle = sys.argv[1], int(sys.argv[2]), sys.argv[3], float(sys.argv[4])
# label, top, base
cases = [
    ("10% overlay → qcow2 base", "top.qcow2", "image.qcow2"),
    ("10% overlay → raw base", "top-raw.qcow2", "image.raw"),
    ("compressed overlay → qcow2 base", "top-comp.qcow2", "image.qcow2"),
]

def fresh(d, top, base):
    # Sparse copies of the two images into d (the top's relative backing name resolves there).
    shutil.rmtree(d, ignore_errors=True)
    os.mkdir(d)
    for f in (top, base):
        subprocess.run(["cp", "--sparse=always", os.path.join("src", f), os.path.join(d, f)], check=True)
    os.sync()
    for f in (top, base):
        with open(os.path.join(d, f), "rb") as fh:
            while fh.read(8 << 20):
                pass
    time.sleep(settle)

def run(argv):
    with open(os.devnull, "wb") as null:
        t0 = time.perf_counter()
        p = subprocess.Popen(["/usr/bin/time", "-f", "%M", "-o", ".rss"] + argv, stdout=null, stderr=subprocess.PIPE)
        _, status, ru = os.wait4(p.pid, 0)
        t1 = time.perf_counter()
        err = p.stderr.read().decode(errors="replace")
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit("bench_commit: failed: %s\n%s" % (" ".join(argv), err))
    return t1 - t0, ru.ru_utime + ru.ru_stime, int(open(".rss").read().split()[-1])

def check(label, base):
    r = subprocess.run(["qemu-img", "compare", os.path.join("q", base), os.path.join("b", base)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit("bench_commit: '%s': the bases differ: %s" % (label, r.stdout + r.stderr))
    if base.endswith(".qcow2"):
        r = subprocess.run(["qemu-img", "check", os.path.join("b", base)], capture_output=True, text=True)
        if r.returncode != 0:
            sys.exit("bench_commit: '%s': qemu-img check of blkimg's base:\n%s" % (label, r.stdout))

def paired(a, b):
    return statistics.median([x / y for x, y in zip(a, b) if y > 0] or [float("nan")])

rows = []
for label, top, base in cases:
    qw, qc, qm, bw, bc, bm = [], [], [], [], [], []
    for i in range(runs):
        order = [("q", ["qemu-img", "commit", "-q"]), ("b", [blkimg, "commit", "-q"])]
        if i % 2:
            order.reverse()
        for who, argv in order:
            fresh(who, top, base)
            w, c, m = run(argv + [os.path.join(who, top)])
            (qw if who == "q" else bw).append(w)
            (qc if who == "q" else bc).append(c)
            (qm if who == "q" else bm).append(m)
            print("%-34s round %d/%d  %-8s %7.2f s" % (label, i + 1, runs, "qemu-img" if who == "q" else "blkimg", w),
                  file=sys.stderr, flush=True)
        if i == 0:
            check(label, base)
    rows.append((label, qw, qc, qm, bw, bc, bm))
    shutil.rmtree("q", ignore_errors=True)
    shutil.rmtree("b", ignore_errors=True)

print()
print("### SIZE=%s" % size)
print()
print("%s; %d rounds per case; %d CPUs; load average at the end %s" % (
    subprocess.run(["qemu-img", "--version"], stdout=subprocess.PIPE, text=True).stdout.splitlines()[0], runs,
    os.cpu_count(), " ".join(open("/proc/loadavg").read().split()[:3])))
print()
print("| case | qemu-img wall (s) | blkimg wall (s) | ratio | paired | qemu-img CPU (s) | blkimg CPU (s) "
      "| CPU ratio, paired | qemu-img peak RSS (MiB) | blkimg peak RSS (MiB) |")
print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
med = statistics.median
for label, qw, qc, qm, bw, bc, bm in rows:
    print("| %s | %.3f | %.3f | %.2f | %.2f | %.3f | %.3f | %.2f | %.1f | %.1f |" % (
        label, med(qw), med(bw), med(bw) / med(qw), paired(bw, qw), med(qc), med(bc), paired(bc, qc),
        max(qm) / 1024, max(bm) / 1024))
PY
cd "$TOP"
rm -rf "$W"
done
