# blkimg create against qemu-img create: the same stdout (the Formatting line, -o help), the
# same errors and exit codes, -q; backing-file rules; hostile input (unwritable directories,
# images in use, commas, long names) gets one clear error and leaves no file behind.
source "$SRCDIR/tests/lib.sh"

mkdir q b
for d in q b; do
    qemu-img create -q -f qcow2 "$d/base.qcow2" 5M
    qemu-img create -q -f raw "$d/base.raw" 1000
    mkdir "$d/sub"
done

# qemu-img check without opening the backing file (some of these images name one that does not exist).
qcheck() {
    qemu-img check -q "json:{\"driver\":\"qcow2\",\"backing\":null,\"file.filename\":\"$1\"}" || fail "$1 does not pass qemu-img check"
}

# qemu prints some hints on extra lines ("Optional suffix ..." after an -o size); blkimg keeps
# those errors on one line. Fold qemu's text into that form before comparing. The size
# argument's two-line message and the "Try ... --help" hint blkimg prints as qemu does.
fold_qemu() {
    python3 -c '
import sys
lines = [l.rstrip("\n") for l in sys.stdin]
out = []
i = 0
while i < len(lines):
    l = lines[i].replace("qemu-img: ", "blkimg: ", 1) if lines[i].startswith("qemu-img: ") else lines[i]
    if l.endswith("below 2^64") and i + 2 < len(lines) and lines[i + 1].startswith("Optional suffix"):
        i += 2
    l = l.replace("Try \x27qemu-img --help\x27", "Try \x27blkimg --help\x27")
    out.append(l); i += 1
print("\n".join(out))'
}

# same_create ARGS...: both tools run in their own directory on the same names; stdout,
# stderr and the exit code agree, and where qemu made an image, blkimg made an equal one.
same_create() {
    local rc_q=0 rc_b=0
    (cd q && qemu-img create "$@") >q.out 2>q.err || rc_q=$?
    (cd b && "$BLKIMG" create "$@") >b.out 2>b.err || rc_b=$?
    expect_eq "create $* (stdout)" "$(cat q.out)" "$(cat b.out)"
    expect_eq "create $* (stderr)" "$(fold_qemu <q.err)" "$(cat b.err)"
    expect_eq "create $* (exit code)" "$rc_q" "$rc_b"
    for f in x.qcow2 x.raw; do
        # qemu-img leaves an empty file behind after some raw failures; blkimg never does.
        if [ "$rc_q" != 0 ]; then
            [ ! -e "b/$f" ] || fail "create $*: a failed create left $f"
            rm -f "q/$f"
            continue
        fi
        [ -e "q/$f" ] || [ -e "b/$f" ] || continue
        [ -e "q/$f" ] && [ -e "b/$f" ] || fail "create $*: only one tool left $f"
        json_eq "create $*: info" "$(cd q && qemu-img info --output=json "$f")" "$(cd b && qemu-img info --output=json "$f")"
        rm -f "q/$f" "b/$f"
    done
    rm -f q/d.raw b/d.raw
}

# The Formatting line: qemu's key order and selection (defaults, sizes as numbers, commas
# doubled, booleans as written) for a matrix of option combinations.
while read -r opts size; do
    same_create -f qcow2 -o "$opts" x.qcow2 $size
done <<'EOF'
cluster_size=4k 1M
cluster_size=0x10000,refcount_bits=010 1M
extended_l2=on,preallocation=metadata,compression_type=zstd 1M
compat=1.1,lazy_refcounts=yes,extended_l2=off 1000
compat=0.10 3M
compat=v3,refcount_bits=1,cluster_size=512 1M
lazy_refcounts=y,nocow=on,extent_size_hint=1M 2M
nolazy_refcounts,preallocation=off 1M
size=3M,data_file=d.raw,data_file_raw=on
data_file=d.raw,preallocation=falloc,cluster_size=64k 1M
encryption=off,refcount_bits=64 1M
backing_file=base.qcow2,backing_fmt=qcow2
backing_file=base.raw,backing_fmt=raw,cluster_size=2M
backing_file=base.qcow2,backing_fmt=qcow2,extended_l2=on,preallocation=metadata 8M
EOF
same_create -f raw x.raw 1000
same_create -f raw -o preallocation=falloc,nocow=off x.raw 1M
same_create -f raw -o size=64k -o extent_size_hint=0 x.raw
same_create -f file x.raw 1M
same_create -f qcow2 -b base.qcow2 -F qcow2 x.qcow2
same_create -f qcow2 -b base.qcow2 -F raw -o cluster_size=4k x.qcow2 7M
same_create -f qcow2 -u -b missing.qcow2 -F qcow2 x.qcow2 1M
same_create -f qcow2 -u -b base.qcow2 -F raw -o backing_file=other,backing_fmt=qcow2 x.qcow2 1M
same_create -f qcow2 -o 'backing_file=a,,b,backing_fmt=raw' -u x.qcow2 1M
ok "Formatting line and images as qemu-img's"

# Errors: the same message and exit code as qemu-img.
same_create -f qcow2 -o cluster_size=3k x.qcow2 1M
same_create -f qcow2 -o cluster_size=4M x.qcow2 1M
same_create -f qcow2 -o cluster_size=abc x.qcow2 1M
same_create -f qcow2 -o refcount_bits=3 x.qcow2 1M
same_create -f qcow2 -o refcount_bits=128 x.qcow2 1M
same_create -f qcow2 -o refcount_bits=abc x.qcow2 1M
same_create -f qcow2 -o refcount_bits=18446744073709551616 x.qcow2 1M
same_create -f qcow2 -o refcount_bits=8,compat=0.10 x.qcow2 1M
same_create -f qcow2 -o lazy_refcounts=on,compat=0.10 x.qcow2 1M
same_create -f qcow2 -o extended_l2=on,compat=0.10 x.qcow2 1M
same_create -f qcow2 -o extended_l2=on,cluster_size=8k x.qcow2 1M
same_create -f qcow2 -o compression_type=zstd,compat=0.10 x.qcow2 1M
same_create -f qcow2 -o compression_type=lz4 x.qcow2 1M
same_create -f qcow2 -o data_file_raw=on x.qcow2 1M
same_create -f qcow2 -o data_file=d.raw,compat=0.10 x.qcow2 1M
same_create -f qcow2 -o preallocation=foo x.qcow2 1M
same_create -f qcow2 -o lazy_refcounts=maybe x.qcow2 1M
same_create -f qcow2 -o foo=bar x.qcow2 1M
same_create -f qcow2 -o lazy_refcounts,nocow x.qcow2 1M
same_create -f qcow2 -o compat=1.0 x.qcow2 1M
same_create -f qcow2 -o 'compat=1.1,,' x.qcow2 1M
same_create -f qcow2 -o size=2M x.qcow2 1M
same_create -f qcow2 -o help=1 x.qcow2 1M
same_create -f qcow2 x.qcow2
same_create -f qcow2 x.qcow2 1Q
same_create -f qcow2 x.qcow2 1.5
same_create -f qcow2 x.qcow2 9E
same_create -f qcow2 x.qcow2 7E
same_create -f qcow2 -o cluster_size=512 x.qcow2 1T
same_create -f raw x.raw 7E
same_create -f raw -o size=9E x.raw
same_create -f raw -o size=99999999999999999999 x.raw
same_create -f raw -o preallocation=foo x.raw 1M
same_create -f raw -o preallocation=metadata x.raw 1M
same_create -f raw -o extent_size_hint=5G x.raw 1M
same_create -f raw -o cluster_size=64k x.raw 1M
same_create -f raw -o '' x.raw 1M
same_create -f raw -o ',size=1M' x.raw
same_create -f raw -o 'size=1M,' x.raw
same_create -f raw 'a:b.raw' 1M
same_create -f raw 'json:{}' 1M
same_create -f foo x.raw 1M
same_create -f null-co x.raw 1M
same_create -f raw x.raw 1M extra
same_create -f raw -b base.raw -F raw x.raw
same_create -f raw -F raw x.raw 1M
ok "errors as qemu-img's"

# Backing files: the format must be given (qemu 6.1+), with qemu's hint line.
same_create -f qcow2 -b base.qcow2 x.qcow2
same_create -f qcow2 -b base.qcow2 -u x.qcow2 1M
same_create -f qcow2 -b base.qcow2 -F qcow2 -u x.qcow2
same_create -f qcow2 -b missing.qcow2 -F qcow2 x.qcow2
same_create -f qcow2 -b x.qcow2 -F qcow2 x.qcow2
same_create -f qcow2 -b '' -F qcow2 x.qcow2
same_create -f qcow2 -F qcow2 x.qcow2 1M
same_create -f qcow2 -b base.qcow2 -F qcow2 -o preallocation=metadata x.qcow2
same_create -f qcow2 -b base.qcow2 -F qcow2 -o data_file=d.raw,data_file_raw=on x.qcow2
same_create -f qcow2 -b base.qcow2 -F foo -u x.qcow2 5M
same_create -f qcow2 -b base.qcow2 -F foo x.qcow2 5M
same_create -f qcow2 -b base.qcow2 sub/x.qcow2
same_create -f qcow2 -b ../base.qcow2 -F qcow2 sub/x.qcow2
expect_fail 1 "^blkimg: x.qcow2: Backing file specified without backing format$" "$BLKIMG" create -f qcow2 -b q/base.qcow2 -u x.qcow2 1M
"$BLKIMG" create -f qcow2 -b q/base.qcow2 x.qcow2 2>err && fail "a backing file without its format was accepted"
expect_eq "the hint names the detected format" "blkimg: x.qcow2: Backing file specified without backing format
Detected format of qcow2." "$(cat err)"
[ ! -e x.qcow2 ] || fail "a refused create left x.qcow2"
ok "backing files need their format"

# The other spellings: qemu 10's -B, the long options.
"$BLKIMG" create -q -f qcow2 -b base.qcow2 -B qcow2 b/x1.qcow2
"$BLKIMG" create --quiet --format qcow2 --backing base.qcow2 --backing-format qcow2 b/x2.qcow2
"$BLKIMG" create -q --format=qcow2 --options=cluster_size=4k --backing-unsafe --backing=nowhere.qcow2 \
    --backing-format=qcow2 b/x3.qcow2 1M
for i in 1 2 3; do qcheck "b/x$i.qcow2"; done
expect_eq "-B names the backing format" "qcow2" "$(qemu-img info --output=json b/x1.qcow2 | python3 -c 'import json,sys; print(json.load(sys.stdin)["backing-filename-format"])')"
expect_eq "size from the backing file" "5242880" "$(qemu-img info --output=json b/x2.qcow2 | python3 -c 'import json,sys; print(json.load(sys.stdin)["virtual-size"])')"
expect_eq "--options" "4096" "$(qemu-img info --output=json b/x3.qcow2 | python3 -c 'import json,sys; print(json.load(sys.stdin)["cluster-size"])')"
ok "-B, long options"

# -o help and -o ?: qemu-img's text for qcow2, raw and file, with and without a filename.
for fmt in qcow2 raw file; do
    expect_eq "-o help for $fmt" "$(qemu-img create -f $fmt -o help)" "$("$BLKIMG" create -f $fmt -o help)"
    expect_eq "-o ? for $fmt with a filename" "$(qemu-img create -f $fmt -o '?' x.img)" "$("$BLKIMG" create -f $fmt -o '?' x.img)"
    expect_eq "-o help among other options" "$(qemu-img create -f $fmt -o size=1M,help -o bad x.img 1M)" \
        "$("$BLKIMG" create -f $fmt -o size=1M,help -o bad x.img 1M)"
done
expect_eq "-o help without -f lists raw" "$(qemu-img create -o help)" "$("$BLKIMG" create -o help)"
[ ! -e x.img ] || fail "-o help created a file"
same_create -f null-co -o help
same_create -f foo -o help
same_create -f raw -o help a:b.raw
ok "-o help"

# -q prints nothing on success.
out=$("$BLKIMG" create -q -f qcow2 b/quiet.qcow2 1M 2>&1)
expect_eq "-q is quiet" "" "$out"
ok "-q"

# Names with commas, in the image, the backing file and options (",," escapes a comma).
qemu-img create -q -f raw 'c,d.raw' 1M
"$BLKIMG" create -f qcow2 -b 'c,d.raw' -F raw 'a,b.qcow2' >out
expect_eq "commas in the Formatting line" "Formatting 'a,b.qcow2', fmt=qcow2 cluster_size=65536 extended_l2=off compression_type=zlib size=1048576 backing_file=c,,d.raw backing_fmt=raw lazy_refcounts=off refcount_bits=16" "$(cat out)"
qemu-img check -q 'a,b.qcow2' || fail "a,b.qcow2 does not pass qemu-img check"
expect_eq "backing name with a comma" "c,d.raw" "$(qemu-img info --output=json 'a,b.qcow2' | python3 -c 'import json,sys; print(json.load(sys.stdin)["backing-filename"])')"
"$BLKIMG" create -q -f qcow2 -o 'backing_file=c,,d.raw,backing_fmt=raw,data_file=e,,f.raw' 'g,h.qcow2'
qemu-img check -q 'g,h.qcow2' || fail "g,h.qcow2 does not pass qemu-img check"
[ -e 'e,f.raw' ] || fail "the data file e,f.raw was not created"
ok "commas"

# Long backing names: qemu's limit is 1023 bytes; beyond it a clean error and no file.
long=$(printf 'n%.0s' $(seq 1024))
expect_fail 1 "Could not assign backing file 'n+' with format 'qcow2': Invalid argument" \
    "$BLKIMG" create -q -f qcow2 -u -b "$long" -F qcow2 long.qcow2 1M
[ ! -e long.qcow2 ] || fail "a refused long backing name left long.qcow2"
"$BLKIMG" create -q -f qcow2 -u -b "${long:1}" -F qcow2 long.qcow2 1M
qcheck long.qcow2
expect_fail 1 "Could not assign backing file 'n+' with format 'qcow2': No space left on device" \
    "$BLKIMG" create -q -f qcow2 -o cluster_size=512 -u -b "${long:1}" -F qcow2 small.qcow2 1M
[ ! -e small.qcow2 ] || fail "a backing name that does not fit left small.qcow2"
"$BLKIMG" create -q -f qcow2 -o cluster_size=512 -u -b "${long:0:376}" -F qcow2 small.qcow2 1M
qcheck small.qcow2
ok "long backing names"

# The backing file is never the image itself or its data file, whatever the spelling.
qemu-img create -q -f qcow2 self.qcow2 1M
sum=$(md5sum self.qcow2)
expect_fail 1 "same filename as the backing file" "$BLKIMG" create -q -f qcow2 -b ./self.qcow2 -F qcow2 self.qcow2
expect_fail 1 "The data file './self.qcow2' is the image file itself" "$BLKIMG" create -q -f qcow2 -o data_file=./self.qcow2 self.qcow2 1M
expect_fail 1 "The data file 'self.qcow2' is the backing file" \
    "$BLKIMG" create -q -f qcow2 -b self.qcow2 -F qcow2 -o data_file=self.qcow2 other.qcow2
expect_eq "the backing file is untouched" "$sum" "$(md5sum self.qcow2)"
[ ! -e other.qcow2 ] || fail "a refused data file left other.qcow2"
ok "no image over its own backing or data file"

# An image in use by a qemu process is refused before it is touched.
qemu-img create -q -f raw busy.raw 1M
qemu-io -f raw -c 'write -P 0x5a 0 64k' busy.raw >/dev/null
sum=$(md5sum busy.raw)
qemu-io -f raw -c 'sleep 20000' busy.raw &
holder=$!
wait_lock_on busy.raw 101
for fmt in raw qcow2; do
    expect_fail 1 "busy.raw: .*Failed to get .*lock" "$BLKIMG" create -q -f $fmt busy.raw 2M
done
kill "$holder"; wait "$holder" 2>/dev/null || true
expect_eq "an image in use is untouched" "$sum" "$(md5sum busy.raw)"
ok "images in use are refused"

# Unwritable places: one error line, nothing left behind.
mkdir -p nodir-parent
expect_fail 1 "^blkimg: nodir/x.qcow2: Could not create 'nodir/x.qcow2': No such file or directory$" \
    "$BLKIMG" create -q -f qcow2 nodir/x.qcow2 1M
expect_fail 1 "Could not create 'nodir-parent': Is a directory" "$BLKIMG" create -q -f raw nodir-parent 1M
chmod 755 "$T"  # uid 65534 must reach locked/ for its refusal to be the one tested
if [ "$(id -u)" = 0 ]; then
    if nobody_blkimg "create in a directory uid 65534 cannot write"; then
        mkdir locked && chmod 755 locked
        in_locked() { (cd locked && "$@"); }
        expect_fail 1 "Could not create 'locked/x.qcow2': Permission denied" \
            as_nobody "$NOBODY_BLKIMG" create -q -f qcow2 locked/x.qcow2 1M
        expect_fail 1 "Could not create 'd.raw': Permission denied" \
            in_locked as_nobody "$NOBODY_BLKIMG" create -q -f qcow2 -o data_file=d.raw /tmp/blkimg-create-$$.qcow2 1M
        [ ! -e /tmp/blkimg-create-$$.qcow2 ] || { rm -f /tmp/blkimg-create-$$.qcow2; fail "a failed data file left the image"; }
    fi
else
    mkdir locked && chmod 555 locked
    expect_fail 1 "Could not create 'locked/x.qcow2': Permission denied" "$BLKIMG" create -q -f qcow2 locked/x.qcow2 1M
fi
ok "unwritable places"
