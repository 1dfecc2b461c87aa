#!/usr/bin/env bash
# Times `blkimg convert` against `qemu-img convert` side by side in one run, with
# `cp --sparse=always` of the raw image as the floor, and prints a markdown table per image
# size: median wall time and median CPU time (user+sys) of each tool, peak RSS, output size
# and the ratios (for wall time the ratio of the medians and "paired", the median of the
# ratios within each round; for CPU time the paired ratio).
#
# usage: tests/bench/bench_convert.sh [BLKIMG|none] [RUNS]      (not a test)
#   BLKIMG  the blkimg binary (default build/tools/blkimg); "none" times only qemu-img and cp
#   RUNS    alternating rounds per case (default 10: single runs vary 0.6x to 2x here)
# environment:
#   SIZES="256M 1G 4G"  image sizes, one table each, smallest first (SIZES=512M for a smoke
#                run; SIZE=... alone is taken as one size, as before)
#   SEED=1       generator seed
#   CASES=...    comma-separated subset of: raw-qcow2, qcow2-raw, chain-qcow2, raw-qcow2-zlib,
#                raw-qcow2-zstd, zlib-raw, zstd-raw (default: all)
#   SETTLE=5     seconds to wait before each timed command (see Method)
#   WORKDIR=DIR  build the images in DIR/<size> and keep them for the next run (default: a
#                temporary directory under ${TMPDIR:-/var/tmp}, removed at the end)
# needs: qemu-utils, c++ (g++), python3, time (/usr/bin/time), about 4x the largest size of
# free disk (each size's images are removed before the next size's are built, unless kept
# in WORKDIR: then the sum).
#
# The images (all from SEED, the same bytes on every machine):
#   image.raw    <size> bytes in runs of 64 KiB to 8 MiB: ~40% random, ~20% text-like (zlib
#                with a 4 KiB window shrinks it ~2.8x, like documentation text), ~20% zeroes
#                written out, ~20% holes (tests/bench/gen_image.cpp, datagen.h)
#   image.qcow2  its qcow2 form (qemu-img convert, 64 KiB clusters)
#   top.qcow2    the chain's top: 10% of the clusters rewritten (random or text) over
#                backing image.qcow2 (a sparse delta converted to qcow2, then rebased -u)
#   comp-zlib.qcow2, comp-zstd.qcow2   compressed forms for the compressed-input cases: the
#                output of qemu-img's first timed `-c` run is kept (made up front when those
#                cases are not timed)
#
# Method: each round runs every tool once on the case, the order rotating from round to round
# (qemu-img, blkimg, cp; then blkimg, cp, qemu-img; ...), so drift on the shared machine hits
# all tools alike. Before every timed command the target is deleted, `sync` settles the
# previous run's writeback, and every data extent of the command's source files (backing
# files included) is read once, so both tools start with the same warm page cache (the
# machine's RAM holds the sources). Then it waits SETTLE seconds: on a virtual machine that
# returns freed memory to the host (free page reporting, about 2 s after the free), a command
# that runs right after the previous output was deleted gets already-backed pages and writes
# its output up to 4x faster than one that runs later (measured here: 0.5 s against 2.4 s for
# the same blkimg raw -> qcow2), so without the pause each time is a coin flip between two
# modes. The pause removes that effect but not the machine's slow spells (minutes in which
# every tool takes 2 to 3 times as long), hence the paired ratios. Wall time comes from a
# monotonic clock, CPU time and peak RSS from /usr/bin/time. Each tool's first output of each case is checked before any
# number is reported: qemu-img compare against the source, qemu-img check for qcow2 targets,
# compressed clusters present (and the zstd type) for -c targets; a failed check stops the
# benchmark. qemu-img convert writes with cache=unsafe by default (no fsync at the end), as
# cp does; blkimg is timed with its defaults too.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
BLKIMG=${1:-build/tools/blkimg}
RUNS=${2:-10}
if [ "$BLKIMG" != none ]; then
    BLKIMG=$(realpath "$BLKIMG")
    [ -x "$BLKIMG" ] || { echo "bench_convert: $BLKIMG is not an executable" >&2; exit 2; }
fi
SIZES=${SIZES:-${SIZE:-256M 1G 4G}}
SEED=${SEED:-1}
SETTLE=${SETTLE:-5}
CASES=${CASES:-raw-qcow2,qcow2-raw,chain-qcow2,raw-qcow2-zlib,raw-qcow2-zstd,zlib-raw,zstd-raw}
for tool in qemu-img qemu-io c++ python3 /usr/bin/time; do
    command -v "$tool" >/dev/null || { echo "bench_convert: $tool is missing" >&2; exit 2; }
done

if [ -n "${WORKDIR:-}" ]; then
    TOP=$(mkdir -p "$WORKDIR" && cd "$WORKDIR" && pwd)
else
    TOP=$(mktemp -d "${TMPDIR:-/var/tmp}/blkimg-bench.XXXXXX")
    trap 'rm -rf "$TOP"' EXIT
fi

for SIZE in $SIZES; do
W=$TOP/$SIZE
mkdir -p "$W"
cd "$W"
rm -f out.raw out.qcow2

# The images are rebuilt when the size, the seed or the generator changed.
stamp="$SIZE $SEED $(cat "$HERE/gen_image.cpp" "$HERE/datagen.h" | cksum)"
if [ ! -f stamp ] || [ "$(cat stamp)" != "$stamp" ]; then
    rm -f stamp image.raw image.qcow2 top.qcow2 comp-zlib.qcow2 comp-zstd.qcow2 composition
    SECONDS=0
    echo "building the images in $W ..." >&2
    c++ -O2 -std=c++20 -o blk-genimage "$HERE/gen_image.cpp"
    ./blk-genimage --seed "$SEED" "$SIZE" image.raw delta.raw 2>composition
    qemu-img convert -f raw -O qcow2 image.raw image.qcow2
    qemu-img convert -f raw -O qcow2 delta.raw top.qcow2
    qemu-img rebase -u -f qcow2 -b image.qcow2 -F qcow2 top.qcow2
    rm -f delta.raw
    echo "$stamp" >stamp
    echo "images built in ${SECONDS} s" >&2
fi
cat composition >&2

python3 - "$BLKIMG" "$RUNS" "$CASES" "$SIZE" "$SETTLE" <<'PY'
import os, statistics, subprocess, sys, time

blkimg, runs, cases_wanted, size = sys.argv[1], int(sys.argv[2]), sys.argv[3].split(","), sys.argv[4]
settle = float(sys.argv[5])
have_blk = blkimg != "none"

# name, label, convert arguments (source first), sources to warm, target, compare formats,
# compressed output type, uncompressed (gets the cp floor)
CASES = [
    ("raw-qcow2", "raw → qcow2", ["-f", "raw", "-O", "qcow2", "image.raw"], ["image.raw"], "out.qcow2", ("raw", "qcow2"), None, True),
    ("qcow2-raw", "qcow2 → raw", ["-f", "qcow2", "-O", "raw", "image.qcow2"], ["image.qcow2"], "out.raw", ("qcow2", "raw"), None, True),
    ("chain-qcow2", "chain (2 images) → qcow2", ["-f", "qcow2", "-O", "qcow2", "top.qcow2"], ["top.qcow2", "image.qcow2"], "out.qcow2", ("qcow2", "qcow2"), None, True),
    ("raw-qcow2-zlib", "raw → qcow2 -c (zlib)", ["-f", "raw", "-O", "qcow2", "-c", "image.raw"], ["image.raw"], "out.qcow2", ("raw", "qcow2"), "zlib", False),
    ("raw-qcow2-zstd", "raw → qcow2 -c -o compression_type=zstd", ["-f", "raw", "-O", "qcow2", "-c", "-o", "compression_type=zstd", "image.raw"], ["image.raw"], "out.qcow2", ("raw", "qcow2"), "zstd", False),
    ("zlib-raw", "compressed qcow2 (zlib) → raw", ["-f", "qcow2", "-O", "raw", "comp-zlib.qcow2"], ["comp-zlib.qcow2"], "out.raw", ("qcow2", "raw"), None, False),
    ("zstd-raw", "compressed qcow2 (zstd) → raw", ["-f", "qcow2", "-O", "raw", "comp-zstd.qcow2"], ["comp-zstd.qcow2"], "out.raw", ("qcow2", "raw"), None, False),
]
unknown = set(cases_wanted) - {c[0] for c in CASES}
if unknown:
    sys.exit("bench_convert: unknown case(s): " + ", ".join(sorted(unknown)))
CASES = [c for c in CASES if c[0] in cases_wanted]
KEEP = {"raw-qcow2-zlib": "comp-zlib.qcow2", "raw-qcow2-zstd": "comp-zstd.qcow2"}

def log(msg):
    print(msg, file=sys.stderr, flush=True)

def warm(paths):
    # Read every data extent once (holes are skipped): the page cache then holds the source.
    buf = bytearray(8 << 20)
    for p in paths:
        fd = os.open(p, os.O_RDONLY)
        try:
            end = os.fstat(fd).st_size
            pos = 0
            while pos < end:
                try:
                    start = os.lseek(fd, pos, os.SEEK_DATA)
                except OSError:
                    break
                stop = os.lseek(fd, start, os.SEEK_HOLE)
                while start < stop:
                    n = os.preadv(fd, [memoryview(buf)[: min(len(buf), stop - start)]], start)
                    if n <= 0:
                        break
                    start += n
                pos = stop
        finally:
            os.close(fd)

def timed(argv):
    with open(os.devnull, "wb") as null:
        t0 = time.perf_counter()
        p = subprocess.run(["/usr/bin/time", "-f", "%U %S %M", "-o", ".time"] + argv, stdout=null, stderr=subprocess.PIPE)
        wall = time.perf_counter() - t0
    if p.returncode != 0:
        sys.exit("bench_convert: failed (%d): %s\n%s" % (p.returncode, " ".join(argv), p.stderr.decode(errors="replace")))
    user, sys_, rss = open(".time").read().split()[-3:]
    return wall, float(user) + float(sys_), int(rss)

def out_size(path):
    st = os.stat(path)
    # qcow2: the file's length; raw: the bytes allocated (its length is the image size).
    return st.st_size if path.endswith(".qcow2") else st.st_blocks * 512

def run_quiet(argv):
    return subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

def verify(tool, case, target):
    name, label, args, sources, _, fmts, ctype, _ = case
    src = args[-1]
    r = run_quiet(["qemu-img", "compare", "-f", fmts[0], "-F", fmts[1], src, target])
    if r.returncode != 0:
        sys.exit("bench_convert: %s output of '%s' differs from the source:\n%s" % (tool, label, r.stdout))
    if target.endswith(".qcow2"):
        r = run_quiet(["qemu-img", "check", target])
        if r.returncode != 0:
            sys.exit("bench_convert: qemu-img check fails on the %s output of '%s':\n%s" % (tool, label, r.stdout))
        if ctype:
            if " 0.00% compressed clusters" in r.stdout or "compressed clusters" not in r.stdout:
                sys.exit("bench_convert: the %s output of '%s' holds no compressed cluster:\n%s" % (tool, label, r.stdout))
            info = run_quiet(["qemu-img", "info", target]).stdout
            if "compression type: %s" % ctype not in info:
                sys.exit("bench_convert: the %s output of '%s' is not of compression type %s" % (tool, label, ctype))

def make_compressed_input(path):
    if os.path.exists(path):
        return
    ctype = "zstd" if "zstd" in path else "zlib"
    log("making %s with qemu-img (untimed) ..." % path)
    subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", "-c", "-o", "compression_type=" + ctype,
                    "image.raw", path + ".tmp"], check=True)
    os.rename(path + ".tmp", path)

def qemu_version():
    return subprocess.run(["qemu-img", "--version"], stdout=subprocess.PIPE, text=True).stdout.splitlines()[0]

results = []
for case in CASES:
    name, label, args, sources, target, fmts, ctype, floor = case
    for s in sources:
        if s.startswith("comp-"):
            make_compressed_input(s)
    tools = [("qemu-img", ["qemu-img", "convert"] + args + [target])]
    if have_blk:
        tools.append(("blkimg", [blkimg, "convert"] + args + [target]))
    if floor:
        tools.append(("cp", ["cp", "--sparse=always", "image.raw", "out.raw"]))
    stats = {t: {"wall": [], "cpu": [], "rss": [], "size": None} for t, _ in tools}
    for rnd in range(runs):
        order = tools[rnd % len(tools):] + tools[: rnd % len(tools)]
        for tool, argv in order:
            tgt = "out.raw" if tool == "cp" else target
            for f in ("out.raw", "out.qcow2"):
                if os.path.exists(f):
                    os.unlink(f)
            os.sync()
            warm(["image.raw"] if tool == "cp" else sources)
            time.sleep(settle)
            wall, cpu, rss = timed(argv)
            st = stats[tool]
            st["wall"].append(wall)
            st["cpu"].append(cpu)
            st["rss"].append(rss)
            if st["size"] is None:
                if tool != "cp":
                    verify(tool, case, tgt)
                st["size"] = out_size(tgt)
                if tool == "qemu-img" and name in KEEP and not os.path.exists(KEEP[name]):
                    os.rename(tgt, KEEP[name])
            log("%-40s round %2d/%d  %-8s %7.2f s" % (label, rnd + 1, runs, tool, wall))
    for f in ("out.raw", "out.qcow2"):
        if os.path.exists(f):
            os.unlink(f)
    results.append((case, stats))

def med(xs):
    return statistics.median(xs) if xs else None

def fmt(x, spec="%.2f"):
    return "–" if x is None else spec % x

def ratio(a, b):
    return "–" if a is None or b is None or b == 0 else "%.2f" % (a / b)

# The median of the per-round ratios: the tools of one round run within seconds of each other,
# so a slow spell of the shared machine (all three tools 2-3x slower for minutes) cancels out
# of each round's ratio instead of deciding which tool's median lands in it.
def paired(a, b):
    rs = [x / y for x, y in zip(a, b) if y > 0]
    return "–" if not rs else "%.2f" % statistics.median(rs)

print()
print("### SIZE=%s" % size)
print()
print("%s; %s; %d CPUs; load average at the end %s; %d rounds per case" % (
    qemu_version(), ("blkimg " + blkimg) if have_blk else "blkimg not timed", os.cpu_count(),
    " ".join(open("/proc/loadavg").read().split()[:3]), runs))
print()
print("| case | qemu-img wall (s) | blkimg wall (s) | blkimg / qemu-img wall | paired "
      "| qemu-img CPU (s) | blkimg CPU (s) | blkimg / qemu-img CPU, paired "
      "| cp wall (s) | cp CPU (s) | blkimg / cp wall | paired "
      "| qemu-img peak RSS (MiB) | blkimg peak RSS (MiB) "
      "| qemu-img output (MiB) | blkimg output (MiB) | output blkimg / qemu-img |")
print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
cp_walls, cp_cpus = [], []
for case, stats in results:
    q = stats["qemu-img"]
    b = stats.get("blkimg", {"wall": [], "cpu": [], "rss": [], "size": None})
    c = stats.get("cp", {"wall": [], "cpu": [], "rss": [], "size": None})
    cp_walls += c["wall"]
    cp_cpus += c["cpu"]
    qs = q["size"] / 2**20 if q["size"] is not None else None
    bs = b["size"] / 2**20 if b["size"] is not None else None
    print("| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |" % (
        case[1], fmt(med(q["wall"])), fmt(med(b["wall"])), ratio(med(b["wall"]), med(q["wall"])),
        paired(b["wall"], q["wall"]),
        fmt(med(q["cpu"])), fmt(med(b["cpu"])), paired(b["cpu"], q["cpu"]),
        fmt(med(c["wall"])), fmt(med(c["cpu"])), ratio(med(b["wall"]), med(c["wall"])), paired(b["wall"], c["wall"]),
        fmt(max(q["rss"]) / 1024 if q["rss"] else None, "%.1f"), fmt(max(b["rss"]) / 1024 if b["rss"] else None, "%.1f"),
        fmt(qs, "%.1f"), fmt(bs, "%.1f"), "–" if bs is None else "%.3f" % (bs / qs)))
if cp_walls:
    print("| cp --sparse=always image.raw (the floor, all rounds) | | | | | | | | %s | %s | | | | | | | |" % (
        fmt(med(cp_walls)), fmt(med(cp_cpus))))
PY
# Without WORKDIR only one size's images are on disk at a time.
cd "$TOP"
[ -n "${WORKDIR:-}" ] || rm -rf "$W"
done
