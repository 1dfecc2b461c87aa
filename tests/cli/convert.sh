# convert end to end: flag checks with qemu-img's messages and exit codes, progress output
# (qemu's lines byte for byte, the terminal line, the JSON stream), and target safety: a
# killed, interrupted or failing convert leaves nothing complete-looking at the target path.
source "$SRCDIR/tests/lib.sh"

# wait_for CMD...: polls until CMD succeeds (20 s at most); the machine may be busy.
wait_for() {
    for _ in $(seq 200); do "$@" && return 0; sleep 0.1; done
    fail "timed out waiting for: $*"
}
has_temp() { ls -A | grep -q "^\.$1\.blkimg-......\$"; }
no_temp() { ! ls -A | grep -q '\.blkimg-' || fail "a temporary file was left: $(ls -A | grep blkimg)"; }

# Sources: data (1 MiB, 20 MiB, 5 MiB random), a sparse raw file, a qcow2 with a corrupt
# compressed cluster (reading guest byte 65536 fails).
head -c 1M /dev/urandom > s.raw
head -c 20M /dev/urandom > big.raw
head -c 5M /dev/urandom > r5.raw
truncate -s 10M sparse.raw
head -c 1M /dev/urandom | dd of=sparse.raw bs=1M seek=3 conv=notrunc status=none
qemu-img create -q -f raw empty.raw 0
{ head -c 64k /dev/urandom; head -c 64k /dev/zero | tr '\0' a; } > c.raw
qemu-img convert -c -O qcow2 c.raw bad.qcow2
python3 - <<'PY'
import struct
with open("bad.qcow2", "r+b") as f:
    d = f.read()
    l1 = struct.unpack(">Q", d[40:48])[0]
    l2 = struct.unpack(">Q", d[l1:l1 + 8])[0] & 0x00fffffffffffe00
    entry = struct.unpack(">Q", d[l2 + 8:l2 + 16])[0]
    assert entry >> 62 == 1, "cluster 1 is not compressed"
    f.seek(entry & ((1 << 54) - 1))  # 64 KiB clusters: 54 offset bits
    f.write(b"\xff" * 32)
PY
sums=$(md5sum s.raw big.raw r5.raw sparse.raw c.raw bad.qcow2)

# qcow2 creation comes with the create work; the checks that need it run once it is there.
QCOW2=0
if "$BLKIMG" convert -q -O qcow2 s.raw probe.qcow2 2>/dev/null; then QCOW2=1; fi
rm -f probe.qcow2

# --- Flag checks: the same message and exit code as qemu-img, and nothing left behind. ---
mkdir q b
for d in q b; do cp s.raw $d/s.raw; cp s.raw $d/s2.raw; mkdir $d/dir; done
normalize_qemu() {  # qemu-img's stderr as blkimg words it: one line per message, no doubled context
    sed 's/^qemu-img: /blkimg: /' "$1" |
        sed "s/^Try 'qemu-img --help'/Try 'blkimg --help'/" |
        sed -E "s/Could not open '([^']*)': Could not open '\\1': /Could not open '\\1': /"
}
same_as_qemu() {  # same_as_qemu ARGS...: run in q/ (qemu-img) and b/ (blkimg) on copies
    local rc_q=0 rc_b=0 before after
    (cd q && qemu-img "$@" >../q.out 2>../q.err) || rc_q=$?
    before=$(ls -A b)
    (cd b && "$BLKIMG" "$@" >../b.out 2>../b.err) || rc_b=$?
    after=$(ls -A b)
    expect_eq "convert exit code: $*" "$rc_q" "$rc_b"
    expect_eq "convert stderr: $*" "$(normalize_qemu q.err)" "$(cat b.err)"
    expect_eq "convert stdout: $*" "$(cat q.out)" "$(cat b.out)"
    if [ "$rc_b" != 0 ]; then expect_eq "files after a failed convert $*" "$before" "$after"; fi
    rm -f q/o.* b/o.*
}
same_as_qemu convert -c -C s.raw o.qcow2 -O qcow2
same_as_qemu convert -S 4k -C s.raw o.raw
same_as_qemu convert -S 0 -C s.raw o.raw
same_as_qemu convert -C --salvage s.raw o.raw
same_as_qemu convert --target-image-opts s.raw driver=raw,file.filename=o.raw
same_as_qemu convert -n -o preallocation=off s.raw s2.raw
same_as_qemu convert --target-is-zero s.raw o.raw
same_as_qemu convert --skip-broken-bitmaps s.raw o.raw
for v in 100 513 32M 16777217 abc -1 8E 99999999999999999999; do same_as_qemu convert -S "$v" s.raw o.raw; done
for v in 0 17 x "8 " -1 99999999999999999999; do same_as_qemu convert -m "$v" s.raw o.raw; done
for v in -5 1x 8E; do same_as_qemu convert -r "$v" s.raw o.raw; done
same_as_qemu convert -t bogus s.raw o.raw
same_as_qemu convert -T bogus s.raw o.raw
same_as_qemu convert -n -t bogus s.raw s2.raw
same_as_qemu convert s.raw
same_as_qemu convert
same_as_qemu convert -O bogus s.raw o.raw
same_as_qemu convert -c s.raw o.raw
same_as_qemu convert -c -n s.raw s2.raw
same_as_qemu convert -F raw s.raw o.raw
same_as_qemu convert -B s.raw -F raw s.raw o.raw
same_as_qemu convert -o bogus=1 s.raw o.raw
same_as_qemu convert -o nocow=maybe s.raw o.raw
same_as_qemu convert -n s.raw missing.raw
same_as_qemu convert -n s.raw nodir/o.raw
same_as_qemu convert s.raw nodir/o.raw
same_as_qemu convert missing.raw o.raw
same_as_qemu convert s.raw dir
same_as_qemu convert s.raw ''
same_as_qemu convert s.raw /dev/null
same_as_qemu convert -n s.raw /dev/null
same_as_qemu convert -n s.raw s.raw s2.raw
same_as_qemu convert --image-opts -f raw driver=raw,file.filename=s.raw o.raw
same_as_qemu convert --target-image-opts -n -O raw s.raw driver=raw,file.filename=s2.raw
same_as_qemu convert -o help
same_as_qemu convert -O raw -o help
same_as_qemu convert -O raw -o '?' s.raw o.raw
same_as_qemu convert -o preallocation=off -o help s.raw o.raw
same_as_qemu convert -O bogus -o help
# Successful runs print nothing, as qemu-img does.
same_as_qemu convert s.raw o.raw
same_as_qemu convert -q -O raw -S 0 -t none -T writeback -m 0x10 -W -U -r 1G s.raw o.raw
same_as_qemu convert -n s.raw s2.raw
same_as_qemu convert --target-image-opts -n s.raw driver=raw,file.filename=s2.raw
same_as_qemu convert -n --target-is-zero s.raw s2.raw
ok "flag checks match qemu-img"

# Where blkimg words it differently, on purpose.
expect_fail 1 "^blkimg: Invalid parameter 'bogus'$" "$BLKIMG" convert -O raw -o bogus=1 s.raw o.raw
expect_fail 1 "^blkimg: Parameter 'size' expects a non-negative number below 2\^64" "$BLKIMG" convert -o size=abc s.raw o.raw
# qemu-img 7.2 prints this error but exits 0 having written nothing; blkimg does the same.
head -c 1M /dev/urandom > t.raw
cp t.raw t.before
"$BLKIMG" convert -n --target-is-zero -B s.raw s.raw t.raw 2>t.err || fail "-n --target-is-zero -B: exit code differs from qemu-img's 0"
expect_eq "-n --target-is-zero -B message" "blkimg: Cannot use --target-is-zero when the destination image has a backing file" "$(cat t.err)"
cmp -s t.raw t.before || fail "-n --target-is-zero -B wrote to the target"
expect_fail 1 "^blkimg: Having a backing file for the target makes no sense when concatenating multiple input images$" \
    "$BLKIMG" convert -n -b s.raw s.raw s.raw t.raw
expect_fail 1 "^blkimg: -l/--snapshot: converting internal snapshots is not supported yet$" "$BLKIMG" convert -l snap s.raw o.raw
expect_fail 1 "^blkimg: --bitmaps: copying persistent bitmaps is not supported yet$" "$BLKIMG" convert --bitmaps s.raw o.raw
cp s.raw bad.raw
expect_fail 1 "Could not open 'bad.raw': .*Image is not in qcow2 format$" "$BLKIMG" convert -f qcow2 bad.raw o.raw
[ ! -e o.raw ] || fail "a failed convert left o.raw"
# qemu 10.1 spells the backing file -b (and keeps -B); both reach the same check.
expect_fail 1 "^blkimg: Backing file not supported for file format 'raw'$" "$BLKIMG" convert -b s.raw -F raw s.raw o.raw
expect_fail 1 "^blkimg: Backing file not supported for file format 'raw'$" "$BLKIMG" convert --backing s.raw s.raw o.raw
ok "deliberate differences and unsupported flags"

if [ "$QCOW2" = 1 ]; then
    same_as_qemu convert -B s.raw s.raw s.raw o.qcow2 -O qcow2
    same_as_qemu convert -B s.raw s.raw o.qcow2 -O qcow2
    same_as_qemu convert -o backing_file=s.raw s.raw o.qcow2 -O qcow2
    same_as_qemu convert -O qcow2 -c -o preallocation=metadata s.raw o.qcow2
    same_as_qemu convert -O qcow2 -c -o preallocation=falloc s.raw o.qcow2
    same_as_qemu convert -O qcow2 -c -o encrypt.format=luks s.raw o.qcow2
    same_as_qemu convert -O qcow2 -o lazy_refcounts=maybe s.raw o.qcow2
    same_as_qemu convert -O qcow2 -o compat=0.10,lazy_refcounts=on s.raw o.qcow2
    same_as_qemu convert -O qcow2 -o cluster_size=3k s.raw o.qcow2
    same_as_qemu convert -O qcow2 -B s.raw -F raw -o help s.raw o.qcow2
    expect_fail 1 "^blkimg: Could not open 't.raw': (t.raw: )?Image is not in qcow2 format$" "$BLKIMG" convert -n -O qcow2 s.raw t.raw
    expect_fail 1 "^blkimg: Backing file not supported" "$BLKIMG" convert -b s.raw -F raw s.raw o.raw
    # qemu-img creates the image, fails to open its backing file and leaves it; blkimg leaves nothing.
    expect_fail 1 "^blkimg: Could not open 'o.qcow2': .*'missing.raw'.*No such file or directory$" \
        "$BLKIMG" convert -O qcow2 -B missing.raw -F raw s.raw o.qcow2
    [ ! -e o.qcow2 ] || fail "a missing backing file left the target"
    no_temp
    # A target in another directory keeps backing names relative to that directory.
    mkdir -p sub
    cp s.raw sub/base.raw
    "$BLKIMG" convert -O qcow2 -B base.raw -F raw r5.raw sub/top.qcow2 || fail "-B into another directory"
    qemu-img compare -q r5.raw sub/top.qcow2 || fail "-B into another directory differs"
    qemu-img info sub/top.qcow2 | grep -q "^backing file: base.raw (actual path: sub/base.raw)$" || fail "-B name: $(qemu-img info sub/top.qcow2)"
    ok "qcow2 target checks match qemu-img"
else
    echo "SKIP: qcow2 target checks (this build cannot create qcow2 images yet)"
fi

# --- -t none / -T none: O_DIRECT both ways, where the file system has it ---
if python3 -c 'import os, sys; os.close(os.open(sys.argv[1], os.O_RDONLY | os.O_DIRECT))' r5.raw 2>/dev/null; then
    # An odd size: the last block of every target is written by merging a partial block.
    head -c 3000123 /dev/urandom > odd.raw
    rm -f d.qcow2 d.raw dc.qcow2 q.raw
    qemu-img convert -O raw odd.raw q.raw
    "$BLKIMG" convert -t none -T none -O qcow2 odd.raw d.qcow2 || fail "-t none -T none to qcow2"
    qemu-img check -q d.qcow2 || fail "-t none: the qcow2 target does not check"
    qemu-img compare -q odd.raw d.qcow2 || fail "-t none: the qcow2 target differs"
    "$BLKIMG" convert -t directsync -T off -O raw d.qcow2 d.raw || fail "-t directsync to raw"
    cmp -s q.raw d.raw || fail "-t directsync: the raw target differs from qemu-img's"
    # Compressed clusters are written at byte offsets: every one merges partial blocks.
    "$BLKIMG" convert -t none -c -O qcow2 odd.raw dc.qcow2 || fail "-t none -c"
    qemu-img check -q dc.qcow2 || fail "-t none -c: the target does not check"
    qemu-img compare -q odd.raw dc.qcow2 || fail "-t none -c: the target differs"
    "$BLKIMG" convert -n -t none -T none -O raw dc.qcow2 d.raw || fail "-n -t none"
    cmp -s q.raw d.raw || fail "-n -t none: the target differs"
    rm -f odd.raw d.qcow2 d.raw dc.qcow2 q.raw
    ok "-t none and -T none (O_DIRECT)"
else
    echo "SKIP: -t none (no O_DIRECT on this file system)"
fi

# --- Progress ---
# Without a terminal, -p prints qemu-img's lines byte for byte.
for src in big.raw r5.raw s.raw empty.raw; do
    rm -f q.raw o.raw
    qemu-img convert -p "$src" q.raw >q.out
    "$BLKIMG" convert -p "$src" o.raw >b.out
    cmp -s q.out b.out || fail "-p output of $src differs from qemu-img's: $(od -c b.out | head -5)"
    cmp -s q.raw o.raw || fail "convert of $src differs from qemu-img's"
done
"$BLKIMG" convert -p sparse.raw o.raw >b.out
python3 - b.out <<'PY' || fail "-p lines of a sparse image: $(od -c b.out | head)"
import re, sys
assert re.fullmatch(r"    \(0\.00/100%\)\r(    \(\d+\.\d\d/100%\)\r)*    \(100\.00/100%\)\r\n", open(sys.argv[1], newline="").read())
PY
[ "$(tail -c 1 b.out | od -An -c | tr -d ' ')" = '\n' ] || fail "-p output does not end with a newline"
# A failure still ends the line, as qemu-img does.
"$BLKIMG" convert -p missing.raw o.raw >b.out 2>/dev/null && fail "missing source converted"
expect_eq "-p output of a failed convert" "$(printf '    (0.00/100%%)\r\n' | od -c)" "$(od -c <b.out)"
# -q silences everything and wins over -p.
"$BLKIMG" convert -q -p big.raw o.raw >b.out 2>b.err
[ ! -s b.out ] && [ ! -s b.err ] || fail "-q -p printed something"
"$BLKIMG" convert -q --salvage bad.qcow2 o.raw >b.out 2>b.err || fail "--salvage failed"
[ ! -s b.out ] && [ ! -s b.err ] || fail "-q --salvage printed warnings"
ok "-p and -q match qemu-img"

# On a terminal -p is one live line: percent, rate and ETA, then the elapsed time.
python3 "$SRCDIR/tests/pty_run.py" "$BLKIMG" convert -p -r 16M big.raw tty.raw >tty.out || fail "terminal progress: exit $?"
python3 - tty.out <<'PY' || fail "terminal progress"
import re, sys
text = open(sys.argv[1], newline="").read()
assert re.search(r"\r    \( *\d+\.\d\d/100%\)  [0-9.]+ MiB/s  ETA \d+:\d\d:\d\d\x1b\[K", text), repr(text)
final = re.search(r"\r    \(100\.00/100%\)  ([0-9.]+) MiB/s  \d+:\d\d:\d\d elapsed\x1b\[K\r\n$", text)
assert final, repr(text)
assert text.count("\n") == 1, repr(text)
# The rate is in MiB/s, the unit of -r: -r 16M reads about 16 (20 MiB, the first slice at once).
assert 12 <= float(final.group(1)) <= 19, repr(text)
# A rate from the first refresh with data on: no "--" once something was copied.
for pct, rate in re.findall(r"\(\s*(\d+\.\d\d)/100%\)  (\S+) MiB/s", text):
    assert float(pct) == 0 or rate != "--", repr(text)
PY
# A copy that ends well within a second still ends with its rate.
python3 "$SRCDIR/tests/pty_run.py" "$BLKIMG" convert -p s.raw tty2.raw >tty.out || fail "short terminal progress: exit $?"
grep -Eq '\(100\.00/100%\)  [0-9.]+ MiB/s  0:00:0[0-9] elapsed' tty.out || fail "terminal progress of a short copy: $(od -c tty.out | head)"
cmp -s big.raw tty.raw || fail "terminal-progress convert differs"
ok "terminal progress line"

# --progress-fd: JSON lines, monotonic, ending at total with a status.
check_json() {  # check_json FILE STATUS
    python3 - "$1" "$2" <<'PY'
import json, sys
lines = [json.loads(l) for l in open(sys.argv[1])]
assert lines, "no progress lines"
last = lines[-1]
assert last["status"] == sys.argv[2], last
for a, b in zip(lines, lines[1:]):
    assert b["done"] >= a["done"] and b["elapsed"] >= a["elapsed"] and b["total"] == a["total"], (a, b)
for l in lines[:-1]:
    assert set(l) == {"done", "total", "elapsed"}, l
    assert l["done"] <= l["total"], l
if sys.argv[2] == "ok":
    assert last["done"] == last["total"] and set(last) == {"done", "total", "elapsed", "status"}, last
else:
    assert "error" in last or sys.argv[2] == "interrupted", last
PY
}
"$BLKIMG" convert --progress-fd=3 -r 20M big.raw o.raw 3>prog.json || fail "convert with --progress-fd"
check_json prog.json ok || fail "progress stream: $(cat prog.json)"
[ "$(wc -l <prog.json)" -ge 4 ] || fail "a 1 s convert wrote too few progress lines: $(cat prog.json)"
[ "$(wc -l <prog.json)" -le 30 ] || fail "progress lines are not rate-limited: $(wc -l <prog.json)"
# The stream goes where it is told, beside -p, and says how a failure ended.
"$BLKIMG" convert -p --progress-fd=3 s.raw o.raw 3>prog.json >b.out || fail "-p with --progress-fd"
check_json prog.json ok || fail "progress stream with -p: $(cat prog.json)"
grep -q "(100.00/100%)" b.out || fail "-p output with --progress-fd: $(cat b.out)"
"$BLKIMG" convert --progress-fd=3 bad.qcow2 o.raw 3>prog.json 2>/dev/null && fail "corrupt source converted"
check_json prog.json failed || fail "progress stream of a failure: $(cat prog.json)"
grep -Eq '"error": "error while reading at byte (0|65536)' prog.json || fail "final line lacks the error: $(cat prog.json)"
expect_fail 1 "^blkimg: Invalid progress file descriptor '9': Bad file descriptor$" "$BLKIMG" convert --progress-fd=9 s.raw o.raw
expect_fail 1 "^blkimg: Invalid progress file descriptor '3': not open for writing$" "$BLKIMG" convert --progress-fd=3 s.raw o.raw 3<s.raw
expect_fail 1 "^blkimg: Invalid progress file descriptor 'x': expected a descriptor number$" "$BLKIMG" convert --progress-fd=x s.raw o.raw
# A reader that goes away costs a warning, not the copy.
"$BLKIMG" convert --progress-fd=3 -r 20M big.raw o.raw 3> >(head -c 1 >/dev/null) 2>b.err || fail "closed progress pipe failed the convert"
grep -q "progress stream (fd 3): Broken pipe" b.err || fail "no warning about the closed pipe: $(cat b.err)"
cmp -s big.raw o.raw || fail "convert with a closed progress pipe differs"
ok "--progress-fd JSON lines"

# SIGUSR1 prints the percentage to stderr (qemu-img's status request), and does not kill.
rm -f o.raw
"$BLKIMG" convert -r 10M big.raw o.raw 2>b.err &
pid=$!
wait_for has_temp o.raw
kill -USR1 $pid
wait $pid || fail "SIGUSR1 killed convert"
grep -Eq '^    \([0-9]+\.[0-9]{2}/100%\)$' b.err || fail "SIGUSR1 printed no status: $(cat b.err)"
ok "SIGUSR1 status line"

# --- Target safety ---
# The target appears only when complete; before that a hidden temporary file is written.
rm -f o.raw
"$BLKIMG" convert -r 10M big.raw o.raw &
pid=$!
wait_for has_temp o.raw
[ ! -e o.raw ] || fail "the target exists while the copy runs"
wait $pid || fail "slow convert failed"
cmp -s big.raw o.raw || fail "slow convert differs"
no_temp
ok "the target takes its name when complete"

# SIGKILL mid-copy: nothing at the target path (at most the hidden temporary file).
rm -f o.raw
"$BLKIMG" convert -r 4M big.raw o.raw &
pid=$!
wait_for has_temp o.raw
kill -KILL $pid
wait $pid 2>/dev/null || true
[ ! -e o.raw ] || fail "SIGKILL left a file at the target path"
rm -f .o.raw.blkimg-*
ok "SIGKILL leaves no target"

# SIGINT, SIGTERM, SIGHUP: exit 1, one line, the temporary file removed.
for sig in INT TERM HUP; do
    rm -f o.raw
    "$BLKIMG" convert -r 4M big.raw o.raw 2>b.err &
    pid=$!
    wait_for has_temp o.raw
    kill -$sig $pid
    rc=0; wait $pid || rc=$?
    expect_eq "exit code after SIG$sig" 1 "$rc"
    expect_eq "message after SIG$sig" "blkimg: interrupted by SIG$sig; the target 'o.raw' was not created" "$(cat b.err)"
    [ ! -e o.raw ] || fail "SIG$sig left the target"
    no_temp
done
# An existing target is overwritten in place, as qemu-img does: inode, owner, mode and hard
# links stay. Interrupted, it is flagged incomplete (raw: the xattr; qcow2: the corrupt bit).
has_xattr() { python3 -c 'import os,sys; sys.exit(0 if "user.blkimg.incomplete" in os.listxattr(sys.argv[1]) else 1)' "$1"; }
cp s.raw old.raw
chmod 640 old.raw
chown nobody old.raw
ln old.raw hard.raw
ino=$(stat -c %i old.raw)
"$BLKIMG" convert r5.raw old.raw || fail "overwriting an existing target"
cmp -s r5.raw old.raw || fail "the overwritten target differs"
expect_eq "inode, owner, mode, links of an overwritten raw target" "$ino nobody 640 2" "$(stat -c '%i %U %a %h' old.raw)"
cmp -s r5.raw hard.raw || fail "the hard link does not see the new content"
! has_xattr old.raw || fail "a finished convert left the incomplete flag"
"$BLKIMG" convert -O qcow2 r5.raw old.raw || fail "overwriting an existing target with qcow2"
expect_eq "inode, owner, mode, links of an overwritten qcow2 target" "$ino nobody 640 2" "$(stat -c '%i %U %a %h' old.raw)"
qemu-img compare -q r5.raw hard.raw || fail "the hard link does not see the new qcow2"
qemu-img check -q old.raw || fail "qemu-img check of the overwritten qcow2"
no_temp
ok "an existing target keeps its inode, owner, mode and links"
# Interrupted while overwriting: raw carries the flag, qcow2 the corrupt bit qemu-img reports.
"$BLKIMG" convert -r 4M big.raw old.raw 2>b.err &
pid=$!
sleep 0.7
kill -INT $pid
wait $pid && fail "interrupted convert exited 0"
expect_eq "message for an interrupted in-place target" \
    "blkimg: interrupted by SIGINT; the target 'old.raw' is incomplete (flagged with the extended attribute user.blkimg.incomplete)" "$(cat b.err)"
has_xattr old.raw || fail "an interrupted raw overwrite is not flagged"
expect_eq "inode after an interrupted overwrite" "$ino" "$(stat -c %i old.raw)"
# Reading the flagged raw file warns once, naming it; info says so in its human text only.
"$BLKIMG" convert -O raw old.raw rd.raw 2>b.err || fail "reading a flagged raw file"
expect_eq "warning for a flagged raw source" \
    "blkimg: warning: 'old.raw' is flagged incomplete (user.blkimg.incomplete): an interrupted convert left it partly written" "$(cat b.err)"
"$BLKIMG" info old.raw 2>b.err | grep -qx "incomplete: yes (flagged user.blkimg.incomplete by an interrupted convert)" ||
    fail "info does not show the incomplete flag: $("$BLKIMG" info old.raw 2>&1)"
"$BLKIMG" info --output=json old.raw 2>/dev/null | grep -q incomplete && fail "info JSON gained a key"
"$BLKIMG" info r5.raw 2>&1 | grep -q incomplete && fail "info of an unflagged file mentions incomplete"
"$BLKIMG" convert -O qcow2 -r 4M big.raw old.raw 2>b.err &
pid=$!
sleep 0.7
kill -INT $pid
wait $pid && fail "interrupted qcow2 convert exited 0"
qemu-img info old.raw | grep -q "corrupt: true" || fail "an interrupted qcow2 overwrite does not say corrupt: $(qemu-img info old.raw)"
qemu-io -c 'write 0 512' old.raw >/dev/null 2>&1 && fail "qemu-io wrote to an interrupted qcow2 target"
"$BLKIMG" convert -O qcow2 r5.raw old.raw || fail "overwriting an interrupted qcow2 target again"
qemu-img info old.raw | grep -q "corrupt: false" || fail "the finished qcow2 still says corrupt"
! has_xattr old.raw || fail "a finished qcow2 convert left the incomplete flag"
no_temp
ok "an interrupted overwrite is flagged"
# Through a symlink, the file it points to is replaced and the link stays.
ln -s old.raw link.raw
"$BLKIMG" convert s.raw link.raw || fail "convert onto a symlink"
[ -L link.raw ] || fail "the symlink was replaced"
cmp -s s.raw old.raw || fail "the symlink's file was not overwritten"
# Two quick signals: the second stops at once; still nothing left.
rm -f o.raw
"$BLKIMG" convert -r 1 big.raw o.raw 2>b.err &
pid=$!
wait_for has_temp o.raw
sleep 0.2
kill -INT $pid; sleep 0.2; kill -INT $pid 2>/dev/null || true
rc=0; wait $pid || rc=$?
expect_eq "exit code after two signals" 1 "$rc"
[ ! -e o.raw ] || fail "two signals left the target"
no_temp
ok "signals remove the temporary file and keep an existing target"

# A target a VM uses is refused before anything is written.
cp s.raw held.raw
qemu-io -f raw -c 'sleep 20000' held.raw &
holder=$!
wait_lock_on held.raw 101
expect_fail 1 "^blkimg: held.raw: error while converting raw: Failed to get .* lock" \
    "$BLKIMG" convert r5.raw held.raw
kill $holder; wait $holder 2>/dev/null || true
cmp -s s.raw held.raw || fail "a target in use was changed"
no_temp
ok "a target in use is refused"

# Write failures: ENOSPC on a small tmpfs (where a mount namespace can be had) and EFBIG
# from RLIMIT_FSIZE; the message names the byte and no target is left.
if unshare -rm true 2>/dev/null; then
    mkdir -p small
    rc=0
    unshare -rm sh -c 'mount -t tmpfs -o size=4m tmpfs small && "$1" convert big.raw small/o.raw 2>b.err; echo $? >rc; ls -A small >left' _ "$BLKIMG" || true
    expect_eq "exit code on ENOSPC" 1 "$(cat rc)"
    grep -Eq "^blkimg: error while writing at byte [0-9]+: No space left on device; the target 'small/o.raw' was not created$" b.err ||
        fail "ENOSPC message: $(cat b.err)"
    expect_eq "files left on a full tmpfs" "" "$(cat left)"
    ok "ENOSPC leaves no target"
else
    echo "SKIP: ENOSPC on tmpfs (no mount namespace here)"
fi
rc=0
(ulimit -f 2048; exec "$BLKIMG" convert big.raw o.raw) 2>b.err || rc=$?
expect_eq "exit code on EFBIG" 1 "$rc"
grep -Eq "^blkimg: o.raw: error while converting raw: (.*File too large|The image size is too large for file format 'raw')$" b.err ||
    fail "EFBIG message: $(cat b.err)"
[ "$(wc -l <b.err)" = 1 ] || fail "EFBIG: more than one line: $(cat b.err)"
[ ! -e o.raw ] || fail "EFBIG left the target"
no_temp
ok "EFBIG while creating leaves no target"
if [ "$QCOW2" = 1 ]; then
    # A qcow2 file grows as clusters are written: the limit strikes mid-copy.
    rc=0
    (ulimit -f 2048; exec "$BLKIMG" convert -O qcow2 big.raw o.qcow2) 2>b.err || rc=$?
    expect_eq "exit code on EFBIG mid-copy" 1 "$rc"
    grep -Eq "^blkimg: error while writing at byte [0-9]+: File too large; the target 'o.qcow2' was not created$" b.err ||
        fail "EFBIG mid-copy message: $(cat b.err)"
    [ ! -e o.qcow2 ] || fail "EFBIG mid-copy left the target"
    no_temp
    ok "EFBIG while writing leaves no target"
fi

# A read failure (corrupt compressed cluster): the offset of the failing request (qemu-img
# says 65536: its requests stop where a compressed run starts; a larger request may start
# at 0), no target.
expect_fail 1 "^blkimg: error while reading at byte (0|65536): Input/output error \(bad\.qcow2: compressed cluster for guest offset 0x[0-9a-f]+: corrupt compressed data.*\); the target 'o.raw' was not created$" \
    "$BLKIMG" convert bad.qcow2 o.raw
[ ! -e o.raw ] || fail "a read error left the target"
no_temp
# --salvage turns it into zeroes, as qemu-img does.
qemu-img convert -q --salvage bad.qcow2 q.raw
"$BLKIMG" convert --salvage bad.qcow2 o.raw 2>b.err || fail "--salvage failed"
cmp -s q.raw o.raw || fail "--salvage result differs from qemu-img's"
grep -Eq "^blkimg: warning: error while reading offset 65536, [0-9]+ bytes: Input/output error \(read as zeroes\)$" b.err ||
    fail "first --salvage warning: $(cat b.err)"
grep -Eq "^blkimg: warning: --salvage: [0-9]+ unreadable runs?, [0-9]+ bytes in all, read as zeroes$" b.err ||
    fail "--salvage summary: $(cat b.err)"
# A qcow2 cut short: one line per run of bad sectors and the summary, not one per sector.
qemu-img create -q -f qcow2 full.qcow2 64M
qemu-io -c 'write -P 7 0 64M' full.qcow2 >/dev/null
head -c 300000 full.qcow2 >t2.qcow2
"$BLKIMG" convert --salvage -O raw t2.qcow2 o.raw 2>b.err || fail "--salvage of a cut qcow2 failed"
expect_eq "--salvage warnings for a cut qcow2" \
"blkimg: warning: error while reading offset 0, 67108864 bytes: Input/output error (read as zeroes)
blkimg: warning: --salvage: 1 unreadable run, 67108864 bytes in all, read as zeroes" "$(cat b.err)"
rm -f full.qcow2 t2.qcow2
ok "read errors"

# --- -n: the existing target carries user.blkimg.incomplete while it is overwritten. ---
xattrs() { python3 -c 'import os, sys; print(" ".join(os.listxattr(sys.argv[1])))' "$1"; }
if python3 -c 'import os; open("x.probe", "w"); os.setxattr("x.probe", "user.t", b"1")' 2>/dev/null; then
    flagged() { [ "$(xattrs t.raw)" = user.blkimg.incomplete ]; }
    cp big.raw t.raw
    "$BLKIMG" convert -n -r 2M r5.raw t.raw &
    pid=$!
    wait_for flagged
    kill -0 $pid 2>/dev/null || fail "the flag was seen only after the copy"
    wait $pid || fail "-n convert failed"
    expect_eq "xattr after the copy" "" "$(xattrs t.raw)"
    cmp -s r5.raw <(head -c 5M t.raw) || fail "-n wrote the wrong data"
    cmp -s <(tail -c +$((5 * 1048576 + 1)) big.raw) <(tail -c +$((5 * 1048576 + 1)) t.raw) || fail "-n touched bytes past the source"
    expect_fail 1 "^blkimg: error while reading at byte (0|65536): Input/output error \(bad\.qcow2: .*\); the target 't.raw' is incomplete \(flagged with the extended attribute user.blkimg.incomplete\)$" \
        "$BLKIMG" convert -n bad.qcow2 t.raw
    expect_eq "xattr after a failure" "user.blkimg.incomplete" "$(xattrs t.raw)"
    # (the flag is still on from the failure; the progress stream tells when the copy runs)
    : >p.json
    "$BLKIMG" convert -n -r 4M --progress-fd=3 big.raw t.raw 2>b.err 3>p.json &
    pid=$!
    wait_for grep -q '"done": [1-9]' p.json
    kill -INT $pid
    wait $pid && fail "interrupted -n convert exited 0"
    expect_eq "-n interrupted" "blkimg: interrupted by SIGINT; the target 't.raw' is incomplete (flagged with the extended attribute user.blkimg.incomplete)" "$(cat b.err)"
    "$BLKIMG" convert -n big.raw t.raw || fail "retrying -n"
    expect_eq "xattr after a retry" "" "$(xattrs t.raw)"
    cmp -s big.raw t.raw || fail "retried -n differs"
    # A target too small is refused before it is flagged.
    cp s.raw small.raw
    expect_fail 1 "^blkimg: output file is smaller than input file$" "$BLKIMG" convert -n big.raw small.raw
    expect_eq "xattr on a refused target" "" "$(xattrs small.raw)"
    cmp -s s.raw small.raw || fail "a refused -n target was changed"
    ok "-n flags the target while it is overwritten"

    # A directory that refuses new files but holds a writable target: written in place, as
    # qemu-img does, and flagged like -n.
    chmod 755 "$T"
    if nobody_blkimg "in-place convert into a directory uid 65534 cannot write"; then
        mkdir locked
        cp s.raw locked/t.raw
        chown 65534 locked/t.raw
        as_nobody "$NOBODY_BLKIMG" convert r5.raw locked/t.raw || fail "convert into a locked directory"
        cmp -s r5.raw locked/t.raw || fail "in-place convert differs"
        expect_eq "xattr after an in-place convert" "" "$(xattrs locked/t.raw)"
        expect_fail 1 "^blkimg: error while reading at byte (0|65536): Input/output error \(bad\.qcow2: .*\); the target 'locked/t.raw' is incomplete \(flagged with the extended attribute user.blkimg.incomplete\)$" \
            as_nobody "$NOBODY_BLKIMG" convert bad.qcow2 locked/t.raw
        expect_eq "xattr after a failed in-place convert" "user.blkimg.incomplete" "$(xattrs locked/t.raw)"
        ok "a target in a read-only directory is written in place and flagged"
    fi
else
    echo "SKIP: -n incomplete flag (no user xattrs on this file system)"
fi

# --- What gets copied ---
cat s.raw r5.raw big.raw > cat.raw
"$BLKIMG" convert s.raw r5.raw big.raw o.raw || fail "several sources"
cmp -s cat.raw o.raw || fail "several sources are not concatenated"
"$BLKIMG" convert -S 0 sparse.raw o.raw || fail "-S 0"
[ "$(du -k o.raw | cut -f1)" -ge 10240 ] || fail "-S 0 left holes: $(du -k o.raw)"
"$BLKIMG" convert sparse.raw o.raw || fail "sparse convert"
[ "$(du -k o.raw | cut -f1)" -le 2048 ] || fail "zeroes were written as data: $(du -k o.raw)"
cmp -s sparse.raw o.raw || fail "sparse convert differs"
cp big.raw t.raw
"$BLKIMG" convert -n -t writeback r5.raw t.raw || fail "-n -t writeback"
cmp -s r5.raw <(head -c 5M t.raw) || fail "-n -t writeback differs"
ok "concatenation, -S 0, cache modes"

if [ "$QCOW2" = 1 ]; then
    # A new qcow2 target grows through the preallocate filter: the step it set aside beyond
    # the last cluster is cut off at close, so the file ends where qemu-img's does.
    cat big.raw sparse.raw r5.raw > mixed.raw
    "$BLKIMG" convert -O qcow2 mixed.raw o.qcow2 || fail "raw -> qcow2"
    qemu-img convert -O qcow2 mixed.raw q.qcow2
    expect_eq "qcow2 target length" "$(stat -c %s q.qcow2)" "$(stat -c %s o.qcow2)"
    end=$(qemu-img check o.qcow2 | sed -n 's/^Image end offset: //p')
    expect_eq "qcow2 target ends at its last cluster" "$end" "$(stat -c %s o.qcow2)"
    [ "$(du -k o.qcow2 | cut -f1)" -le $(( $(du -k q.qcow2 | cut -f1) + 64 )) ] ||
        fail "the qcow2 target holds more than qemu-img's: $(du -k o.qcow2 q.qcow2)"
    qemu-img compare -q mixed.raw o.qcow2 || fail "raw -> qcow2 differs"
    rm -f o.qcow2 q.qcow2 mixed.raw
    ok "a qcow2 target is cut back to its last cluster"

    # While the copy runs, the new qcow2 file is already a step (128 MiB) longer than its
    # data: the filter is in the target's graph, between the qcow2 node and its file.
    mkdir pre && head -c 8M /dev/urandom > pre/d.raw
    "$BLKIMG" convert -r 2M -O qcow2 pre/d.raw pre/o.qcow2 &
    pid=$!
    grown=0
    for _ in $(seq 1 60); do
        sleep 0.1
        len=$(find pre -name '.o.qcow2.blkimg-*' -printf '%s\n' 2>/dev/null | head -n1)
        if [ -n "$len" ] && [ "$len" -ge $((64 << 20)) ]; then grown=1; break; fi
    done
    wait $pid || fail "rate-limited raw -> qcow2"
    [ "$grown" = 1 ] || fail "the qcow2 target did not grow through the preallocate filter"
    [ "$(stat -c %s pre/o.qcow2)" -lt $((16 << 20)) ] || fail "the preallocated step was not cut back"
    qemu-img compare -q pre/d.raw pre/o.qcow2 || fail "rate-limited raw -> qcow2 differs"
    rm -rf pre
    ok "a new qcow2 target grows through preallocate, inserted by a graph edit"
fi

expect_eq "sources unchanged" "$sums" "$(md5sum s.raw big.raw r5.raw sparse.raw c.raw bad.qcow2)"
ok "no source was written"
