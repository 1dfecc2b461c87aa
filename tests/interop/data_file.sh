# A qcow2 image's external data file named by a relative name: qemu 7.2 resolves it from the
# working directory (create makes it there, every open looks for it there), never from the
# image's directory. blkimg must make and find the same file, and a command that fails must
# not have emptied an existing file named as data_file.
source "$SRCDIR/tests/lib.sh"

qemu-img create -q -f raw src.raw 8M
qemu-io -f raw -c 'write -P 9 0 1M' -c 'write -P 3 5M 64k' src.raw >/dev/null

# create: the data file lands in the working directory, the image opens from there.
mkdir dd
"$BLKIMG" create -q -f qcow2 -o data_file=c1.raw dd/c.qcow2 10M
[ -f c1.raw ] || fail "create did not make ./c1.raw"
[ ! -e dd/c1.raw ] || fail "create made dd/c1.raw"
"$BLKIMG" info dd/c.qcow2 >/dev/null || fail "blkimg info dd/c.qcow2 (data file ./c1.raw)"
qemu-img check -q dd/c.qcow2 || fail "qemu-img check on blkimg's image"
qemu-io -c 'write -P 5 0 64k' dd/c.qcow2 >/dev/null
"$BLKIMG" convert -O raw dd/c.qcow2 out.raw
qemu-io -f raw -c 'read -P 5 0 64k' out.raw >/dev/null || fail "data qemu-io wrote through ./c1.raw"
ok "create: relative data_file from the working directory"

# convert with a relative data_file into another directory.
"$BLKIMG" convert -O qcow2 -o data_file=d.raw src.raw dd/x.qcow2 || fail "convert -o data_file=d.raw src.raw dd/x.qcow2"
[ -f d.raw ] && [ ! -e dd/d.raw ] || fail "convert put the data file elsewhere than ./d.raw"
qemu-img compare -q src.raw dd/x.qcow2 || fail "qemu-img compare: blkimg's converted image"
qemu-img check -q dd/x.qcow2 || fail "qemu-img check: blkimg's converted image"
ok "convert: relative data_file from the working directory"

# An absolute name stays absolute, from any directory.
"$BLKIMG" convert -O qcow2 -o data_file="$T/abs.raw" src.raw dd/a.qcow2
[ -f abs.raw ] || fail "absolute data_file not made"
(cd dd && "$BLKIMG" convert -O raw a.qcow2 ../a-out.raw) || fail "open with absolute data file from another directory"
cmp -s src.raw a-out.raw || fail "absolute data_file: data differs"
ok "absolute data_file"

# Images qemu-img made: blkimg opens them where qemu-img does, and fails where it fails,
# with qemu's message.
qemu-img convert -O qcow2 -o data_file=q.raw src.raw dd/q.qcow2
"$BLKIMG" convert -O raw dd/q.qcow2 q-out.raw || fail "blkimg reading qemu-img's image with ./q.raw"
cmp -s src.raw q-out.raw || fail "qemu-img's image read wrongly"
qemu-img map --output=json dd/q.qcow2 >map.q
"$BLKIMG" map --output=json dd/q.qcow2 >map.b
json_eq "map of qemu-img's data-file image" "$(cat map.q)" "$(cat map.b)"
expect_fail 1 "^blkimg: Could not open 'q.qcow2': Could not open 'q.raw': No such file or directory$" \
    sh -c "cd dd && exec \"\$0\" map q.qcow2" "$BLKIMG"
(cd dd && ! qemu-img map q.qcow2 >/dev/null 2>&1) || fail "qemu-img opened dd/q.qcow2 from dd/ (test premise)"
ok "qemu-img's data-file images"

# An existing file named as data_file: qemu-img overwrites it (create semantics) on success;
# a convert that fails before copying must leave it as it was.
head -c 12M /dev/urandom >keep.raw
cp keep.raw keep.orig
expect_fail 1 "." "$BLKIMG" convert -O qcow2 -o data_file=keep.raw,cluster_size=1k src.raw dd/nope/y.qcow2
cmp -s keep.raw keep.orig || fail "a failed convert changed the existing data file"
"$BLKIMG" convert -O qcow2 -o data_file=keep.raw src.raw dd/y.qcow2
qemu-img compare -q src.raw dd/y.qcow2 || fail "convert over an existing data file"
expect_eq "existing data file size after convert (as qemu-img)" 8388608 "$(stat -c %s keep.raw)"
ok "existing data_file untouched by a failed convert"

# info opens no data file (qemu-img 7.2 as installed, with the fix for CVE-2024-4467: info must
# not touch the files an untrusted image names): a missing one does not stop it, and the
# output is qemu-img's. Anything that reads data still fails with qemu's message.
mkdir gone
(cd gone && qemu-img create -q -f qcow2 -o data_file=m.raw m.qcow2 1M && rm m.raw)
for out in human json; do
    rq=0; (cd gone && qemu-img info --output=$out m.qcow2 >../info.q 2>../info.qerr) || rq=$?
    rb=0; (cd gone && "$BLKIMG" info --output=$out m.qcow2 >../info.b 2>../info.berr) || rb=$?
    expect_eq "info --output=$out with a missing data file: exit code (qemu-img's)" "$rq" "$rb"
    expect_eq "info --output=$out with a missing data file: stderr" "" "$(cat info.berr)"
    if [ $out = json ]; then
        json_eq "info --output=json with a missing data file" "$(cat info.q)" "$(python3 "$SRCDIR/tests/interop/strip_children.py" <info.b)"
    else
        expect_eq "info with a missing data file" "$(cat info.q)" "$(sed '/^Child node/,$d' info.b)"
        grep -q '^    data file: m.raw$' info.b || fail "info lacks the data file name: $(cat info.b)"
    fi
done
for cmd in "map m.qcow2" "convert -O raw m.qcow2 o.raw"; do
    rq=0; (cd gone && qemu-img $cmd 2>../q.err) || rq=$?
    rb=0; (cd gone && "$BLKIMG" $cmd 2>../b.err) || rb=$?
    expect_eq "$cmd with a missing data file: exit code" "$rq" "$rb"
    expect_eq "$cmd with a missing data file: stderr" "$(sed 's/^qemu-img:/blkimg:/' q.err)" "$(cat b.err)"
done
ok "a missing data file: info as qemu-img, reads refused"
