# check --chain (beyond qemu-img): every image of a backing chain qemu-img built gets its own
# report, top first, plus chain findings (missing or broken backing file, loop, backing format
# not recorded, overlay smaller than its backing); the exit code is the worst layer's
# (1 > 2 > 3 > 0). The chain is opened read-only: no layer changes, a reader's lock is no bar.
source "$SRCDIR/tests/lib.sh"

qi() { qemu-io "$@" >/dev/null || fail "qemu-io $*"; }
source "$SRCDIR/tests/interop/qcow2_poke.sh"

run() {  # run ARGS...: blkimg check --chain ARGS; stdout in out, stderr in err, exit code in rc
    rc=0
    timeout 60 "$BLKIMG" check --chain "$@" >out 2>err || rc=$?
    [ "$rc" != 124 ] || fail "check --chain $* hung"
    if grep -q "Sanitizer\|runtime error" err; then fail "check --chain $*: $(cat err)"; fi
}
expect_rc() { [ "$rc" = "$1" ] || fail "$2: exit $rc, expected $1; stdout: $(cat out) stderr: $(cat err)"; }
has() { grep -qxF -- "$1" out || fail "$2: no line '$1' in: $(cat out)"; }

mkchain() {  # mkchain DIR: base (data), mid (data), top in DIR, backing names relative
    mkdir -p "$1"
    qemu-img create -q -f qcow2 "$1/base.qcow2" 64M
    qi -c 'write -P 1 0 1M' -c 'write -P 2 8M 64k' "$1/base.qcow2"
    qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 "$1/mid.qcow2"
    qi -c 'write -P 3 1M 1M' "$1/mid.qcow2"
    qemu-img create -q -f qcow2 -b mid.qcow2 -F qcow2 "$1/top.qcow2"
    qi -c 'write -P 4 2M 64k' "$1/top.qcow2"
}

# A clean chain: three reports, each a plain check's lines under its header, exit 0.
mkchain c
cd c
qemu-img check top.qcow2 >q.top; qemu-img check mid.qcow2 >q.mid; qemu-img check base.qcow2 >q.base
sums=$(sha256sum ./*.qcow2)
run top.qcow2
expect_rc 0 "clean chain"
expected="Checking image 'top.qcow2' (layer 0, format qcow2):
$(cat q.top)

Checking image 'mid.qcow2' (layer 1, format qcow2):
$(cat q.mid)

Checking image 'base.qcow2' (layer 2, format qcow2):
$(cat q.base)

Backing chain of 'top.qcow2': 3 images, worst result: no errors (exit 0)"
expect_eq "clean chain report" "$expected" "$(cat out)"
[ ! -s err ] || fail "clean chain wrote to stderr: $(cat err)"
# Without --chain the top alone, as qemu-img.
rc=0; "$BLKIMG" check top.qcow2 >plain || rc=$?
expect_eq "plain check unchanged" "$(cat q.top)" "$(cat plain)"
ok "clean 3-layer chain: three reports, exit 0"

# JSON: one object per image with qemu-img's check fields plus filename, format, depth,
# exit-code, chain-errors and chain-warnings.
run --output=json top.qcow2
expect_rc 0 "json"
qemu-img check --output=json mid.qcow2 >q.json
python3 - out q.json <<'PY' || fail "json output: $(cat out)"
import json, sys
a = json.load(open(sys.argv[1])); q = json.load(open(sys.argv[2]))
assert isinstance(a, list) and len(a) == 3, a
assert [o["filename"] for o in a] == ["top.qcow2", "mid.qcow2", "base.qcow2"], a
assert [o["depth"] for o in a] == [0, 1, 2] and all(o["format"] == "qcow2" for o in a), a
for o in a:
    assert o["exit-code"] == 0 and o["chain-errors"] == [] and o["chain-warnings"] == [], o
    assert o["check-errors"] == 0, o
mid = {k: v for k, v in a[1].items() if k not in ("depth", "exit-code", "chain-errors", "chain-warnings")}
assert mid == q, (mid, q)
PY
ok "json: an array of qemu-img's check objects plus the chain fields"

# -q: nothing printed, the exit code only.
run -q top.qcow2
expect_rc 0 "-q"
[ ! -s out ] && [ ! -s err ] || fail "-q printed: $(cat out err)"
# -r is refused in one line, and nothing is written.
expect_fail 1 "^blkimg: --chain cannot be used with -r" "$BLKIMG" check --chain -r leaks top.qcow2
expect_fail 1 "^blkimg: --chain cannot be used with -r" "$BLKIMG" check --chain -r all top.qcow2
# A read-only holder (a VM's backing file) does not stop the check: no write lock is asked.
qemu-io -r -f qcow2 -c 'sleep 20000' base.qcow2 &
holder=$!
wait_lock_on base.qcow2 201
run top.qcow2
kill "$holder"; wait "$holder" 2>/dev/null || true
expect_rc 0 "base held read-only by qemu-io"
# -U, -f (the top's format), -T and --image-opts reach the top.
run -U -f qcow2 -T none top.qcow2; expect_rc 0 "-U -f -T"
run --image-opts driver=qcow2,file.filename=top.qcow2; expect_rc 0 "--image-opts"
has "Checking image 'base.qcow2' (layer 2, format qcow2):" "--image-opts walks the chain"
expect_eq "every layer unchanged" "$sums" "$(sha256sum ./*.qcow2)"
ok "-q silent, -r refused, a reader's lock shared, -U -f -T --image-opts, nothing written"
cd ..

# A relative backing chain checked from another working directory: names resolve from each
# overlay's directory.
run c/top.qcow2
expect_rc 0 "chain from another directory"
has "Checking image 'c/mid.qcow2' (layer 1, format qcow2):" "relative names"
has "Checking image 'c/base.qcow2' (layer 2, format qcow2):" "relative names"
ok "relative backing names resolve from the overlay's directory"

# A leak in the middle layer: exit 3, the leak reported under mid only.
mkchain l; poke l/mid.qcow2 leak
sums=$(sha256sum l/*.qcow2)
run l/top.qcow2
expect_rc 3 "leak in mid"
has "1 leaked clusters were found on the image." "leak in mid"
[ "$(grep -c "No errors were found on the image." out)" = 2 ] || fail "leak in mid: top and base not clean: $(cat out)"
has "Backing chain of 'l/top.qcow2': 3 images, worst result: leaked clusters only (exit 3)" "leak summary"
grep -q "^Leaked cluster" err || fail "leak in mid: no report line on stderr: $(cat err)"
expect_eq "leaky chain unchanged" "$sums" "$(sha256sum l/*.qcow2)"
ok "leak in the middle layer: exit 3"

# A corrupt base under a leaky middle: corruption ranks above leaks, exit 2.
poke l/base.qcow2 refcount-high
run l/top.qcow2
expect_rc 2 "corrupt base"
has "Backing chain of 'l/top.qcow2': 3 images, worst result: corruptions (exit 2)" "corrupt summary"
run --output=json l/top.qcow2
expect_rc 2 "corrupt base, json"
python3 -c 'import json,sys; a=json.load(open("out")); assert [o["exit-code"] for o in a]==[0,3,2], a; assert a[2]["corruptions"]>=1, a' ||
    fail "corrupt base json: $(cat out)"
ok "corrupt base: exit 2 over a leak"

# A missing base: the layers above are checked, the base reported as not opened, exit 1
# (not completed ranks above corruption and leaks).
mkchain m; rm m/base.qcow2
run m/top.qcow2
expect_rc 1 "missing base"
has "Checking image 'm/base.qcow2' (layer 2, format qcow2):" "missing base layer"
has "Check not completed: the image could not be opened" "missing base"
grep -q "^Chain error: backing file 'm/base.qcow2' of 'm/mid.qcow2' cannot be opened: .*No such file or directory$" out ||
    fail "missing base: no chain error: $(cat out)"
[ "$(grep -c "No errors were found on the image." out)" = 2 ] || fail "missing base: top and mid not checked: $(cat out)"
run --output=json m/top.qcow2
python3 -c '
import json; a = json.load(open("out"))
assert len(a) == 3 and a[2]["exit-code"] == 1 and "check-errors" not in a[2] and len(a[2]["chain-errors"]) == 1, a
assert a[2]["filename"] == "m/base.qcow2" and a[2]["format"] == "qcow2" and a[2]["depth"] == 2, a' || fail "missing base json: $(cat out)"
# A base that is no image of its format (garbage where the header was): the same.
mkchain g; dd if=/dev/urandom of=g/base.qcow2 bs=512 count=1 conv=notrunc status=none
run g/top.qcow2
expect_rc 1 "garbage base"
grep -q "^Chain error: backing file 'g/base.qcow2' of 'g/mid.qcow2' cannot be opened: " out || fail "garbage base: $(cat out)"
ok "missing or broken base: reported, layers above checked, exit 1"

# A loop (base names top): reported on the layer that closes it, no hang, exit 1.
mkchain o; qemu-img rebase -u -b top.qcow2 -F qcow2 o/base.qcow2
run o/top.qcow2
expect_rc 1 "loop"
grep -q "^Chain error: backing file '.*top.qcow2' of 'o/base.qcow2': Backing file '.*top.qcow2' creates an infinite loop.$" out ||
    fail "loop: $(cat out)"
[ "$(grep -c "^Checking image" out)" = 3 ] || fail "loop: not three reports: $(cat out)"
# A chain deeper than the opener allows (17 images): bounded, exit 1.
qemu-img create -q -f qcow2 d0.qcow2 1M
for i in $(seq 1 17); do qemu-img create -q -f qcow2 -b "d$((i - 1)).qcow2" -F qcow2 "d$i.qcow2"; done
run d17.qcow2
expect_rc 1 "deep chain"
grep -q "^Chain error: .*backing chain deeper than 16 images$" out || fail "deep chain: $(cat out)"
ok "loop and too deep a chain: reported, exit 1"

# A backing format not recorded (the extension renamed to an unknown one, as an image made
# before qemu 6.1 without -F): a warning naming the image, the exit code unchanged.
mkchain f
python3 - f/mid.qcow2 <<'PY'
import struct, sys
p = sys.argv[1]; d = bytearray(open(p, 'rb').read())
off = struct.unpack_from('>I', d, 100)[0] if struct.unpack_from('>I', d, 4)[0] == 3 else 72
while True:
    t, n = struct.unpack_from('>II', d, off)
    if t == 0: sys.exit("no backing format extension")
    if t == 0xe2792aca:
        struct.pack_into('>I', d, off, 0x6b6c6d6e); break
    off += 8 + (n + 7) // 8 * 8
open(p, 'wb').write(d)
PY
qemu-img info f/mid.qcow2 | grep -q "backing file format" && fail "the backing format is still recorded"
run f/top.qcow2
expect_rc 0 "backing format not recorded"
has "Chain warning: 'f/mid.qcow2' does not record the format of its backing file 'base.qcow2': it is probed (unsafe; set it with rebase -u -F)" "no backing format"
run --output=json f/top.qcow2
python3 -c 'import json; a=json.load(open("out")); assert len(a[1]["chain-warnings"]) == 1 and a[1]["exit-code"] == 0, a' ||
    fail "no backing format json: $(cat out)"
ok "backing format not recorded: a warning"

# A recorded backing format that the backing file's first bytes contradict (raw recorded
# over a qcow2 file: the guest reads qcow2 metadata as its disk): a warning, exit unchanged.
qemu-img create -q -f qcow2 pb.qcow2 16M
qemu-img create -q -f qcow2 -b pb.qcow2 -F raw pov.qcow2 16M
run pov.qcow2
expect_rc 0 "raw recorded over qcow2"
has "Chain warning: 'pov.qcow2' records its backing file 'pb.qcow2' as raw, but its first bytes are a qcow2 image: the guest reads that image's metadata as data" "raw recorded over qcow2"
run --output=json pov.qcow2
python3 -c 'import json; a=json.load(open("out")); assert len(a[0]["chain-warnings"]) == 1 and a[0]["exit-code"] == 0, a' ||
    fail "raw recorded over qcow2, json: $(cat out)"
ok "a recorded backing format the file contradicts: a warning"

# An overlay smaller than its backing file: a warning (the guest loses the tail); larger is normal.
qemu-img create -q -f qcow2 big.qcow2 64M
qemu-img create -q -f qcow2 -b big.qcow2 -F qcow2 small.qcow2 32M
run small.qcow2
expect_rc 0 "small overlay"
has "Chain warning: 'small.qcow2' (33554432 bytes) is smaller than its backing file 'big.qcow2' (67108864 bytes): the guest sees only the first 33554432 bytes of it" "small overlay"
qemu-img create -q -f qcow2 -b big.qcow2 -F qcow2 large.qcow2 128M
run large.qcow2
expect_rc 0 "large overlay"
grep -q "^Chain warning" out && fail "large overlay warned: $(cat out)"
ok "overlay smaller than its backing: a warning"

# A raw base has no checks: said so, counted as clean; a lone raw image exits 63 as plain check.
qemu-img create -q -f raw r.raw 16M
qemu-img create -q -f qcow2 -b r.raw -F raw ro.qcow2
qi -c 'write -P 5 0 64k' ro.qcow2
run ro.qcow2
expect_rc 0 "raw base"
has "Checking image 'r.raw' (layer 1, format raw):" "raw base"
has "Not checked: format 'raw' has no checks (counted as clean)" "raw base"
run r.raw
expect_rc 63 "lone raw"
ok "raw base counted as clean; a lone raw image exits 63"
