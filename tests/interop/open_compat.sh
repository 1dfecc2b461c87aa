# Opening as qemu-img 7.2 opens: -f file, -f over a json: naming another driver, a bare file
# node, encrypted qcow2 (metadata without the key), unsupported qcow2 features. Each case
# compares blkimg's stdout, stderr and exit code with qemu-img's on the same image.
source "$SRCDIR/tests/lib.sh"
STRIP="python3 $SRCDIR/tests/interop/strip_children.py"

# same CMD ARGS...: blkimg prints what qemu-img prints (JSON without qemu 8's "children").
same() {
    local rc_q=0 rc_b=0
    qemu-img "$@" >q.out 2>q.err || rc_q=$?
    "$BLKIMG" "$@" >b.out 2>b.err || rc_b=$?
    expect_eq "$* (stdout)" "$(cat q.out)" "$($STRIP <b.out)"
    expect_eq "$* (stderr)" "$(sed -E "s/^qemu-img: /blkimg: /; s/(Could not open '[^']*': )\1/\1/" q.err)" "$(cat b.err)"
    expect_eq "$* (exit code)" "$rc_q" "$rc_b"
}

qemu-img create -q -f qcow2 top.qcow2 64M
qemu-io -f qcow2 -c 'write -P 7 0 1M' -c 'write -z 4M 64k' top.qcow2 >/dev/null

# -f file opens the file node itself (a protocol as the format).
same info -f file top.qcow2
same info --output=json -f file top.qcow2
same map --output=json -f file top.qcow2
same map -f file top.qcow2
"$BLKIMG" convert -f file -O raw top.qcow2 file.raw
cmp top.qcow2 file.raw || fail "convert -f file does not copy the file's bytes"
ok "-f file opens the file node"

# -f wins over the driver a json: names: raw over that file.
J='json:{"driver":"qcow2","file":{"driver":"file","filename":"top.qcow2"}}'
same info -f raw "$J"
same info --output=json -f raw "$J"
same map --output=json -f raw "$J"
"$BLKIMG" convert -f raw -O raw "$J" json.raw
cmp top.qcow2 json.raw || fail "convert -f raw json: does not copy the file's bytes"
ok "-f raw over a json: naming qcow2 is raw"

# A bare file node has no format-specific facts in qemu 7.2.
same info --image-opts driver=file,filename=top.qcow2
same info --output=json --image-opts driver=file,filename=top.qcow2
ok "a bare file node shows no format-specific block"

# Encrypted qcow2 (LUKS, and the old AES method): info shows the header and its "encrypt"
# block without the key, as qemu-img does; map and convert need the key, as in qemu-img,
# and with it blkimg refuses to read (it cannot decrypt yet), never reading ciphertext.
# qemu-img times its PBKDF on CPU usage and fails now and then on a loaded machine
# ("Unable to get accurate CPU usage"): each encrypted create is tried a few times.
qcreate_enc() {
    local i
    for i in $(seq 10); do qemu-img create "$@" 2>enc.err && return 0; sleep 0.$i; done
    cat enc.err >&2
    return 1
}
qcreate_enc -q -f qcow2 --object secret,id=s,data=x \
    -o encrypt.format=luks,encrypt.key-secret=s e.qcow2 64M
qemu-io --object secret,id=s,data=x --image-opts -c 'write -P 7 0 1M' \
    driver=qcow2,file.filename=e.qcow2,encrypt.key-secret=s >/dev/null
qcreate_enc -q -f qcow2 --object secret,id=s,data=x \
    -o encrypt.format=luks,encrypt.key-secret=s,encrypt.cipher-alg=aes-128,encrypt.cipher-mode=cbc,encrypt.ivgen-alg=essiv,encrypt.ivgen-hash-alg=sha256,encrypt.hash-alg=sha1 e2.qcow2 8M
qcreate_enc -q -f qcow2 -o compat=0.10 --object secret,id=s,data=x \
    -o encrypt.format=luks,encrypt.key-secret=s e-v2.qcow2 8M
qemu-img create -q -f qcow2 plain.qcow2 8M
python3 -c 'import sys; f=open(sys.argv[1],"r+b"); f.seek(32); f.write((1).to_bytes(4,"big"))' plain.qcow2
mv plain.qcow2 aes.qcow2
for img in e.qcow2 e2.qcow2 e-v2.qcow2 aes.qcow2; do
    same info "$img"
    same info --output=json "$img"
    same map "$img"
    same map --output=json "$img"
    rm -f out.raw
    same convert -O raw "$img" out.raw
    [ ! -e out.raw ] || fail "convert of $img without a key left a target"
done
same info --backing-chain --output=json e.qcow2
expect_fail 1 "^blkimg: Could not open .*encrypted qcow2 images are not supported yet" \
    "$BLKIMG" convert --object secret,id=s,data=x --image-opts -O raw driver=qcow2,file.filename=e.qcow2,encrypt.key-secret=s out.raw
[ ! -e out.raw ] || fail "convert of an encrypted image with its key left a target"
ok "encrypted qcow2: info without the key, no data read"

# Unsupported incompatible features: names from the image's feature table (in table order,
# up to its first unnamed entry, each bit once), then the rest as one hex mask.
qemu-img create -q -f qcow2 base.qcow2 8M
mkfeat() {  # mkfeat OUT INCOMPAT_BITS ENTRY... (ENTRY: type:bit:name)
    python3 - "$@" <<'PY'
import struct, sys, shutil
out, bits, entries = sys.argv[1], int(sys.argv[2], 16), sys.argv[3:]
shutil.copy("base.qcow2", out)
b = bytearray(open(out, "rb").read())
hlen = struct.unpack_from(">I", b, 100)[0]
struct.pack_into(">Q", b, 72, struct.unpack_from(">Q", b, 72)[0] | bits)
table = b""
for e in entries:
    t, bit, name = e.split(":", 2)
    table += bytes([int(t), int(bit)]) + name.encode().ljust(46, b"\0")
ext = struct.pack(">II", 0x6803f857, len(table)) + table + b"\0" * (-len(table) % 8)
ext += struct.pack(">II", 0, 0)
b[hlen:hlen + len(ext) + 64] = ext + b"\0" * 64
open(out, "wb").write(b)
PY
}
mkfeat f1.qcow2 6000000000000000 "0:0:dirty bit" "0:1:corrupt bit"
mkfeat f2.qcow2 7000000000000000 "0:62:Test feature" "0:60:Another"
mkfeat f3.qcow2 7000000000000000 "0:60:Before" "0:61:" "0:62:After the end"
mkfeat f4.qcow2 6000000000000000 "0:62:Once" "0:62:Twice" "1:61:Compatible"
mkfeat f5.qcow2 4000000000000000
for img in f1 f2 f3 f4 f5; do
    same info "$img.qcow2"
    same map --output=json "$img.qcow2"
done
ok "unsupported features are named as qemu-img names them"

# A qcow2 cut short: nothing partial reaches stdout before the error (no "[]" that reads as
# an empty image), and convert's error keeps the cause map names (which table, where).
qemu-img create -q -f qcow2 big.qcow2 64M
qemu-io -f qcow2 -c 'write -P 7 0 64M' big.qcow2 >/dev/null
head -c 300000 big.qcow2 >t2.qcow2
for cmd in "map --output=json" "map"; do
    expect_fail 1 "t2\.qcow2: L2 table at 0x40000 \(L1 index 0\) lies past the end of the file" "$BLKIMG" $cmd t2.qcow2
    [ ! -s "$T/.out" ] || fail "$cmd t2.qcow2 printed on stdout: $(cat "$T/.out")"
done
expect_fail 1 "^blkimg: error while reading block status at offset 0: Input/output error \(t2\.qcow2: L2 table at 0x40000 \(L1 index 0\) lies past the end of the file\)" \
    "$BLKIMG" convert -O raw t2.qcow2 t2.raw
[ ! -s "$T/.out" ] || fail "convert t2.qcow2 printed on stdout: $(cat "$T/.out")"
ok "a truncated qcow2: no partial output, the cause kept"
