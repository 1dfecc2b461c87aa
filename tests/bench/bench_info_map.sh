#!/usr/bin/env bash
# Times blkimg against qemu-img side by side in one run, alternating, and prints the median
# wall time of each, the ratio blkimg/qemu-img and peak RSS, for info and map.
# usage: tests/bench/bench_info_map.sh [BLKIMG] [RUNS]   (not a test; needs /usr/bin/time)
set -euo pipefail
BLKIMG=$(realpath "${1:-build/tools/blkimg}")
RUNS=${2:-30}
command -v /usr/bin/time >/dev/null || { echo "install the 'time' package" >&2; exit 1; }
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

# measure TOOL ARGS...: prints "seconds maxrss_kib"
measure() {
    /usr/bin/time -f "%e %M" -o t.out "$@" >/dev/null 2>&1
    local s r; read -r s r <t.out
    # %e has 10 ms resolution: use a high-resolution clock for the wall time instead.
    echo "$r"
}
now() { date +%s.%N; }

median() { sort -g | awk '{a[NR]=$1} END {if (NR % 2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2}'; }

printf '| case | qemu-img median (ms) | blkimg median (ms) | ratio | qemu-img peak RSS (KiB) | blkimg peak RSS (KiB) |\n'
printf '|---|---:|---:|---:|---:|---:|\n'
bench() {  # bench LABEL ARGS... (the same arguments for both tools)
    local label=$1; shift
    : >q.t; : >b.t; : >q.m; : >b.m
    for ((i = 0; i < RUNS; i++)); do
        for tool in q b; do
            local exe=qemu-img; [ $tool = b ] && exe=$BLKIMG
            local t0 t1
            t0=$(now); "$exe" "$@" >/dev/null 2>&1 || true; t1=$(now)
            echo "$t1 - $t0" | bc -l >>$tool.t
            measure "$exe" "$@" >>$tool.m
        done
    done
    local qt bt qm bm
    qt=$(median <q.t); bt=$(median <b.t); qm=$(median <q.m); bm=$(median <b.m)
    printf '| %s | %.1f | %.1f | %.2f | %s | %s |\n' "$label" "$(echo "$qt*1000" | bc -l)" "$(echo "$bt*1000" | bc -l)" \
        "$(echo "$bt/$qt" | bc -l)" "$qm" "$bm"
}
bench "info qcow2" info many.qcow2
bench "info --output=json --backing-chain (3 deep)" info --output=json --backing-chain c2.qcow2
bench "map --output=json qcow2, 15k extents" map --output=json many.qcow2
bench "map --output=json raw, 15k extents" map --output=json -f raw many.raw
bench "map --output=json 3-deep chain" map --output=json c2.qcow2
