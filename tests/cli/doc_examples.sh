# Every command example in README.md and man/blkimg.1 runs, and prints what the docs show
# (doc_examples.py says how examples are found and compared). This script provides the
# images the examples name, made with qemu-img and qemu-io, and runs them as `blkimg`.
source "$SRCDIR/tests/lib.sh"

mkdir bin work
ln -s "$BLKIMG" bin/blkimg   # the examples say `blkimg`, and so do its messages (argv[0])
export PATH="$T/bin:$PATH"

# The images, made afresh in each block's directory (copies would not keep the allocation
# that `disk size` shows).
cat >fixtures.sh <<'END'
set -eu
# The chain of the info and map transcripts: base holds 0-4M, top 1M-2M over it.
qemu-img create -q -f qcow2 base.qcow2 64M
qemu-io -f qcow2 -c 'write -P 0x11 0 4M' base.qcow2 >/dev/null
qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 top.qcow2
qemu-io -f qcow2 -c 'write -P 0x22 1M 1M' top.qcow2 >/dev/null
# disk.raw: 19 MiB of data (the --progress-fd transcript's total).
qemu-img create -q -f raw disk.raw 19M
qemu-io -f raw -c 'write -P 0x33 0 19M' disk.raw >/dev/null
# disk.qcow2: 2 GiB with data below and above 1G (man page: map --start-offset=1G).
qemu-img create -q -f qcow2 disk.qcow2 2G
qemu-io -f qcow2 -c 'write -P 0x44 0 1M' -c 'write -P 0x45 1G 2M' disk.qcow2 >/dev/null
qemu-img create -q -f raw disk.img 128M   # raw window offset=1M,size=64M
qemu-io -f raw -c 'write -P 0x55 1M 1M' disk.img >/dev/null
qemu-img create -q -f raw 'a,b.img' 1M
qemu-img create -q -f qcow2 a.qcow2 1M
qemu-img create -q -f raw part1.raw 1M
qemu-img create -q -f raw part2.raw 2M
qemu-img create -q -f raw big.raw 64M
qemu-io -f raw -c 'write -P 0x66 0 8M' big.raw >/dev/null
qemu-img create -q -f qcow2 old.qcow2 4G  # convert -n target: at least disk.raw's size
qemu-img convert -O vmdk disk.raw disk.vmdk
# leaky.qcow2 (check -r all): base's data and one leaked cluster past it, counted in the
# refcount block (16-bit entries) but referenced by nothing.
cp base.qcow2 leaky.qcow2
python3 -c '
import struct, sys
f = open(sys.argv[1], "r+b"); d = f.read(); cs = 1 << struct.unpack_from(">I", d, 20)[0]
rb = struct.unpack_from(">Q", d, struct.unpack_from(">Q", d, 48)[0])[0]
f.seek(rb + 2 * (len(d) // cs)); f.write(struct.pack(">H", 1)); f.seek(len(d)); f.write(bytes(cs))' leaky.qcow2
ln -s "$T/disk-in-use.qcow2" disk-in-use.qcow2
END

# disk-in-use.qcow2: held by a running qemu-io, as a VM would hold it; each block's
# directory links to this one file.
qemu-img create -q -f qcow2 disk-in-use.qcow2 64M
mkfifo holder.in
qemu-io -f qcow2 disk-in-use.qcow2 <holder.in >holder.out 2>&1 &
holder=$!
exec 9>holder.in   # qemu-io waits for commands as long as this stays open
trap 'exec 9>&-; kill $holder 2>/dev/null || true; wait $holder 2>/dev/null || true; rm -rf "$T"' EXIT
# Its prompt says the open is over; nothing may open the image before that (a reader's
# lock would make qemu-io's open fail).
for _ in $(seq 300); do
    grep -q 'qemu-io> ' holder.out && break
    sleep 0.1
done
blkimg info disk-in-use.qcow2 >/dev/null 2>&1 &&
    fail "qemu-io holds no lock on disk-in-use.qcow2: $(cat holder.out)"

export T
python3 "$SRCDIR/tests/cli/doc_examples.py" "$SRCDIR" "$T/fixtures.sh" "$T/work" ||
    fail "README.md or man/blkimg.1 shows examples that do not run as shown"
ok "every example in README.md and man/blkimg.1 runs as shown"
