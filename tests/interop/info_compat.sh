# blkimg info prints what qemu-img 7.2 prints: the same JSON text (less qemu 8's "children",
# which blkimg adds) and the same human text, on qemu-made images.
source "$SRCDIR/tests/lib.sh"
source "$SRCDIR/tests/interop/variants.sh"
make_variants
STRIP="python3 $SRCDIR/tests/interop/strip_children.py"

same_info() {
    local rc_q=0 rc_b=0
    qemu-img info "$@" >q.out 2>q.err || rc_q=$?
    "$BLKIMG" info "$@" >b.out 2>b.err || rc_b=$?
    if printf '%s\n' "$@" | grep -q -- '--output=json'; then
        json_eq "info $* (JSON values, children removed)" "$(cat q.out)" "$($STRIP <b.out)"
        expect_eq "info $* (JSON text, children removed)" "$(cat q.out)" "$($STRIP <b.out)"
    else
        expect_eq "info $* (human text)" "$(cat q.out)" "$(cat b.out)"
    fi
    # qemu repeats "Could not open 'X': " when the file layer already said it; we say it once.
    expect_eq "info $* (stderr)" "$(sed -E "s/^qemu-img: /blkimg: /; s/(Could not open '[^']*': )\1/\1/" q.err)" "$(cat b.err)"
    expect_eq "info $* (exit code)" "$rc_q" "$rc_b"
}

# More variants: dirty and corrupt flags, bitmaps.
qemu-img create -q -f qcow2 -o lazy_refcounts=on dirty.qcow2 8M
python3 -c 'import sys; f=open(sys.argv[1],"r+b"); f.seek(79); b=f.read(1)[0]; f.seek(79); f.write(bytes([b|1]))' dirty.qcow2
qemu-img create -q -f qcow2 corrupt.qcow2 8M
python3 -c 'import sys; f=open(sys.argv[1],"r+b"); f.seek(79); b=f.read(1)[0]; f.seek(79); f.write(bytes([b|2]))' corrupt.qcow2
qemu-img create -q -f qcow2 bitmaps.qcow2 8M
qemu-img bitmap --add bitmaps.qcow2 b0
qemu-img bitmap --add -g 128k bitmaps.qcow2 second
qemu-img bitmap --add bitmaps.qcow2 off && qemu-img bitmap --disable bitmaps.qcow2 off
qemu-img create -q -f qcow2 snaps.qcow2 8M
qemu-io -f qcow2 -c 'write 0 1M' snaps.qcow2 >/dev/null
qemu-img snapshot -c snap1 snaps.qcow2
qemu-img snapshot -c 'second one' snaps.qcow2
qemu-img create -q -f qcow2 -o compat=0.10 snaps-v2.qcow2 8M
qemu-img snapshot -c old snaps-v2.qcow2
VARIANTS="$VARIANTS dirty.qcow2 corrupt.qcow2 bitmaps.qcow2 snaps.qcow2 snaps-v2.qcow2"

n=0
for img in $VARIANTS; do
    same_info --output=json "$img"
    same_info "$img"
    n=$((n + 1))
    ok "info of $img matches qemu-img"
done
[ "$n" -ge 15 ] || fail "only $n variants compared"

same_info --output=json --backing-chain chain/top.qcow2
same_info --backing-chain chain/top.qcow2
same_info --output=json --backing-chain rawback.qcow2
same_info --output=json -f raw v3.qcow2
same_info --output=json --image-opts driver=raw,offset=4096,size=65536,file.filename=sparse.raw
same_info --image-opts driver=raw,offset=4k,file.driver=raw,file.file.filename=sparse.raw
same_info --output=json 'json:{"driver":"null-co","size":"1M","read-zeroes":true}'
same_info --output=json 'json:{"driver":"qcow2","file":{"driver":"file","filename":"chain/top.qcow2"}}'
same_info --output=json -U v3.qcow2
ok "chains, image options and json: filenames match"

# Non-ASCII and invalid UTF-8 names are escaped as qemu escapes them (\uXXXX, U+FFFD).
qemu-img create -q -f raw 'é😀.raw' 1M
bad=$(printf 'bad\377.raw')
qemu-img create -q -f raw "$bad" 1M
same_info --output=json 'é😀.raw'
same_info --output=json "$bad"
same_info --output=json --image-opts 'driver=raw,offset=512,file.filename=é😀.raw'
same_info 'é😀.raw'
ok "non-ASCII names match"

# A missing backing file does not stop info (it opens each image alone).
qemu-img create -q -f qcow2 -b v3.qcow2 -F qcow2 orphan.qcow2
mv v3.qcow2 moved.qcow2
same_info --output=json orphan.qcow2
ok "missing backing file still shows"

# --backing-chain opens the chain as one graph: a missing backing file and loops (an image
# its own backing file, and two images backing each other) stop it with qemu-img's error
# and nothing on standard output.
same_info --backing-chain orphan.qcow2
[ ! -s b.out ] || fail "a failed --backing-chain printed: $(cat b.out)"
qemu-img create -q -f qcow2 self.qcow2 1M
qemu-img rebase -u -b self.qcow2 -F qcow2 self.qcow2
qemu-img create -q -f qcow2 loop-a.qcow2 1M
qemu-img create -q -f qcow2 -b loop-a.qcow2 -F qcow2 loop-b.qcow2
qemu-img rebase -u -b loop-b.qcow2 -F qcow2 loop-a.qcow2
for img in self.qcow2 loop-b.qcow2; do
    same_info --backing-chain "$img"
    grep -q "creates an infinite loop" b.err || fail "$img: $(cat b.err)"
    same_info "$img"
    # qemu-img convert follows such a chain for ever; blkimg refuses it.
    expect_fail 1 "creates an infinite loop" timeout 20 "$BLKIMG" convert -O raw "$img" loop.raw
done
ok "--backing-chain: missing backing file and loops as qemu-img"

# Errors: a nonexistent file.
same_info nonexistent.qcow2
ok "errors match"
