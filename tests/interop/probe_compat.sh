# Probing recognises every format qemu-img 7.2 probes, and blkimg refuses the ones it cannot
# read yet by name (exit 1, one line) instead of reading their bytes as raw data. The winner
# is checked against qemu-img on the same file, so scores and ties stay qemu's.
source "$SRCDIR/tests/lib.sh"

qemu-img create -q -f qcow2 a.qcow2 64M
qemu-io -f qcow2 -c 'write -P 7 0 1M' a.qcow2 >/dev/null

# refused FILE FMT: info (both outputs), map (both) and convert refuse FILE as a FMT image,
# print nothing on stdout and create no target; qemu-img takes it for FMT too.
refused() {
    local f=$1 fmt=$2
    local q
    q=$(qemu-img info --output=json "$f" 2>/dev/null | python3 -c 'import json,sys; print(json.load(sys.stdin)["format"])' 2>/dev/null || true)
    # qemu-img cannot open the hand-made headers (bochs, cloop, dmg); its error names the driver.
    if [ -z "$q" ]; then
        q=$(qemu-img info "$f" 2>&1 | tail -1 || true)
        case "$fmt:$q" in
            bochs:*"Extent size"*|cloop:*block_size*|dmg:*UDIF*|vmdk:*"VMDK image descriptor"*) q=$fmt ;;
        esac
    fi
    expect_eq "qemu-img probes $f as" "$fmt" "$q"
    local re="Could not open '$f': $f is a $fmt image; blkimg cannot read $fmt yet\$"
    for cmd in "info" "info --output=json" "map" "map --output=json"; do
        expect_fail 1 "^blkimg: $re" "$BLKIMG" $cmd "$f"
        [ ! -s "$T/.out" ] || fail "$cmd $f printed on stdout: $(cat "$T/.out")"
    done
    rm -f out.raw
    expect_fail 1 "^blkimg: $re" "$BLKIMG" convert -O raw "$f" out.raw
    [ ! -e out.raw ] || fail "convert of $f left a target"
    # -f raw still reads any file as its bytes.
    "$BLKIMG" info -f raw "$f" | grep -qx 'file format: raw' || fail "-f raw $f is not raw"
    ok "$f is refused as $fmt"
}

for fmt in vmdk vdi vhdx vpc qed qcow parallels; do
    qemu-img convert -O $fmt a.qcow2 a.$fmt
    refused a.$fmt $fmt
done
# VMDK in its other forms: the descriptor files (text) of flat and split images, and the
# stream-optimized form.
qemu-img convert -O vmdk -o subformat=monolithicFlat a.qcow2 flat.vmdk
head -c 40 flat.vmdk | grep -q '^# Disk DescriptorFile' || fail "flat.vmdk is not a descriptor"
refused flat.vmdk vmdk
qemu-img convert -O vmdk -o subformat=twoGbMaxExtentSparse a.qcow2 split.vmdk
refused split.vmdk vmdk
qemu-img convert -O vmdk -o subformat=streamOptimized a.qcow2 stream.vmdk
refused stream.vmdk vmdk
# A descriptor with CRLF lines and blank lines before "version=" (qemu accepts both).
printf '# Disk DescriptorFile\r\n   \r\nversion=1\r\nCID=fffffffe\r\n' >crlf.vmdk
refused crlf.vmdk vmdk
# qemu-img times its PBKDF on CPU usage and fails now and then on a loaded machine
# ("Unable to get accurate CPU usage"): tried a few times.
for i in 1 2 3 4 5; do
    qemu-img create -q -f luks --object secret,id=s,data=x -o key-secret=s a.luks 16M 2>luks.err && break
done
[ -s a.luks ] || { cat luks.err >&2; fail "qemu-img could not make a.luks"; }
refused a.luks luks

# Hand-made headers for the formats qemu-img cannot create (from their on-disk specs).
python3 - <<'PY'
import struct
h = bytearray(512)
h[0:22] = b"Bochs Virtual HD Image"; h[32:39] = b"Redolog"; h[48:55] = b"Growing"
struct.pack_into("<I", h, 64, 0x00020000)
open("a.bochs", "wb").write(bytes(h) + bytes(4096))
cloop = b"#!/bin/sh\n#V2.0 Format\nmodprobe cloop file=$0 && mount -r -t iso9660 /dev/cloop $1\n"
open("a.cloop", "wb").write(cloop + bytes(4096))
# dmg has no leading magic: qemu goes by the name. A cloop preamble in a .dmg: dmg wins.
open("a.dmg", "wb").write(bytes(4096))
open("cloop.dmg", "wb").write(cloop + bytes(4096))
PY
refused a.bochs bochs
refused a.cloop cloop
refused a.dmg dmg
refused cloop.dmg dmg

# Near misses stay raw, as in qemu-img: an empty .dmg, a qcow magic with version 0, a
# descriptor whose first real line is not version=, a bochs header of another subtype.
: >empty.dmg
printf 'QFI\373\0\0\0\0' >v0.img
printf '# Disk DescriptorFile\nCID=1\nversion=1\n' >notvmdk.txt
python3 -c '
h = bytearray(512); h[0:22] = b"Bochs Virtual HD Image"; h[32:39] = b"Redolog"; h[48:56] = b"Volatile"
h[64:68] = (0x20000).to_bytes(4, "little"); open("vol.bochs", "wb").write(bytes(h))'
for f in empty.dmg v0.img notvmdk.txt vol.bochs; do
    expect_eq "qemu-img probes $f" "raw" "$(qemu-img info --output=json "$f" | python3 -c 'import json,sys; print(json.load(sys.stdin)["format"])')"
    expect_eq "blkimg probes $f" "raw" "$("$BLKIMG" info --output=json "$f" | python3 -c 'import json,sys; print(json.load(sys.stdin)["format"])')"
done
ok "near misses are raw, as in qemu-img"

# Naming the format says the same.
expect_fail 1 "^blkimg: Could not open 'a.vdi': blkimg cannot read vdi yet$" "$BLKIMG" info -f vdi a.vdi
# A backing file in such a format is refused too, not read as raw under the overlay.
qemu-img create -q -f qcow2 -b a.vmdk -F vmdk over.qcow2
expect_fail 1 "a.vmdk.*blkimg cannot read vmdk yet" "$BLKIMG" convert -O raw over.qcow2 out2.raw
ok "named formats and backing files are refused too"
