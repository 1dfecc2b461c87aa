# blkimg installed or linked as qemu-img speaks as qemu-img 7.2: usage errors, messages that
# start with the name it was invoked as, --version in qemu-img's form. Under its own name it
# says blkimg. Also: value names in --help, --list-commands and --list-formats[=create].
source "$SRCDIR/tests/lib.sh"

mkdir bin
ln -s "$BLKIMG" bin/qemu-img
QI=$T/bin/qemu-img
qemu-img create -q -f qcow2 x.img 1M

# same_as_qemu ARGS...: blkimg run as qemu-img exits as qemu-img does and prints the same
# stdout and stderr, each run in its own copy of the directory; every stderr line is
# qemu-img's ("qemu-img: ..." or its "Try 'qemu-img --help'" hint).
same_as_qemu() {
    rm -rf q b; mkdir q b; cp x.img q/; cp x.img b/
    local rq=0 rb=0
    (cd q && qemu-img "$@" >../q.out 2>../q.err) || rq=$?
    (cd b && "$QI" "$@" >../b.out 2>../b.err) || rb=$?
    [ "$rq" = "$rb" ] || fail "qemu-img $*: exits $rb, qemu-img exits $rq; stderr: $(cat b.err)"
    cmp -s q.err b.err || fail "qemu-img $*: stderr differs from qemu-img's: $(diff q.err b.err)"
    cmp -s q.out b.out || fail "qemu-img $*: stdout differs from qemu-img's: $(diff q.out b.out)"
    if grep -Ev "^qemu-img: |^Try 'qemu-img --help' for more information\$" b.err | grep -q .; then
        fail "qemu-img $*: a stderr line not in qemu-img's form: $(cat b.err)"
    fi
}

# Usage errors: unknown options, missing arguments, empty values, missing names.
same_as_qemu info --bogus x.img
same_as_qemu info -Z x.img
same_as_qemu convert --bogus=1 x.img y.img
same_as_qemu info -f
same_as_qemu info --output
same_as_qemu map --start-offset
same_as_qemu info --output= x.img
same_as_qemu info --output=xml x.img
same_as_qemu info
same_as_qemu map
same_as_qemu create
same_as_qemu create -f qcow2
same_as_qemu create x.img ''
same_as_qemu create x.img -1
same_as_qemu create x.img 1Q
same_as_qemu --bogus
same_as_qemu bogus
same_as_qemu
ok "usage errors as qemu-img prints them"

# What getopt accepts: "--" before the names, prefixes, bundles, values glued on.
same_as_qemu create -q -f qcow2 -- y.img 1M
qemu-img check -q b/y.img || fail "create -- made a broken image"
same_as_qemu create -f qcow2 -- y.img 1M
same_as_qemu info --out=human -- x.img
same_as_qemu info -Uf qcow2 x.img
same_as_qemu info -fqcow2 --output human x.img
same_as_qemu map --output=json -- x.img
ok "getopt's forms of options"

# Messages of commands name the program as invoked, qemu-img or blkimg.
# (qemu-img doubles "Could not open 'F': " here; blkimg says it once, on purpose.)
expect_fail 1 "^qemu-img: Could not open 'missing.img': No such file or directory$" "$QI" info missing.img
expect_fail 1 "^qemu-img: Could not open 'missing.img': No such file or directory$" "$QI" convert missing.img y.img
expect_fail 1 "^blkimg: Could not open 'missing.img'" "$BLKIMG" info missing.img
rc=0; "$BLKIMG" info --bogus 2>err || rc=$?
expect_eq "blkimg info --bogus" "1
blkimg: unrecognized option '--bogus'
Try 'blkimg --help' for more information" "$rc
$(cat err)"
ok "messages start with the invoked name"

# --version: qemu-img's two lines with the release blkimg matches, when invoked as qemu-img
# (tools parse the first line); its own line as blkimg.
qemu_second=$(qemu-img --version | sed -n 2p)
for v in --version -V; do
    out=$("$QI" $v)
    echo "$out" | sed -n 1p | grep -Eq '^qemu-img version 7\.2\.0 \(blkimg [0-9]+\.[0-9]+\.[0-9]+\)$' ||
        fail "qemu-img $v: first line not in qemu-img's form: $out"
    expect_eq "qemu-img $v: second line" "$qemu_second" "$(echo "$out" | sed -n 2p)"
    expect_eq "qemu-img $v: two lines" 2 "$(echo "$out" | wc -l)"
    out=$("$BLKIMG" $v)
    echo "$out" | grep -Eq '^blkimg version [0-9]+\.[0-9]+\.[0-9]+$' || fail "blkimg $v: $out"
done
# The version a qemu-img version check reads (libvirt's and iotests' pattern) is 7.2.0.
expect_eq "qemu-img version as parsed" "7.2.0" \
    "$("$QI" --version | sed -nE '1s/^qemu-img version ([0-9]+\.[0-9]+\.[0-9]+).*/\1/p')"
ok "--version as qemu-img and as blkimg"

# --help: every option that takes a value names it (FMT, SIZE, ...), none is CLI11's bare
# TEXT/INT; usage lines name the program as invoked.
for c in convert create info map; do
    help=$("$QI" $c --help)
    if echo "$help" | grep -Eq '\b(TEXT|INT|UINT|FLOAT|BOOLEAN)\b'; then
        fail "$c --help shows a bare type name: $(echo "$help" | grep -E '\b(TEXT|INT|UINT|FLOAT|BOOLEAN)\b')"
    fi
    echo "$help" | grep -q "^Usage: qemu-img $c " || fail "$c --help usage line does not name qemu-img: $help"
done
"$BLKIMG" create --help | grep -Eq -- '-f,--format FMT' || fail "create --help lacks FMT"
"$BLKIMG" convert --help | grep -Eq -- '-S,--sparse-size SIZE' || fail "convert --help lacks -S SIZE"
"$BLKIMG" map --help | grep -Eq -- '-s,--start-offset OFFSET' || fail "map --help lacks OFFSET"
top=$("$BLKIMG" --help)
for opt in --list-commands --list-drivers '--list-formats[=create]' --version; do
    echo "$top" | grep -qF -- "$opt" || fail "--help does not mention $opt: $top"
done
# --list-commands names exactly the commands --help describes.
expect_eq "--list-commands" "$(echo "$top" | sed -n '/^commands:/,/^$/s/^  \([a-z]*\) .*/\1/p' | sort)" \
    "$("$BLKIMG" --list-commands | sort)"
ok "--help names values and lists the top-level options"

# --list-formats: the format drivers; =create: those of them create and convert -O accept.
formats=$("$BLKIMG" --list-formats)
creatable=$("$BLKIMG" --list-formats=create)
expect_eq "--list-formats" "qcow2 raw" "$(echo $formats)"
for d in $formats; do
    if echo "$creatable" | grep -qx "$d"; then
        "$BLKIMG" create -q -f "$d" "c-$d.img" 1M || fail "--list-formats=create lists $d, which create refuses"
        "$BLKIMG" convert -O "$d" x.img "v-$d.img" || fail "--list-formats=create lists $d, which convert -O refuses"
    else
        expect_fail 1 "does not support image creation" "$BLKIMG" create -q -f "$d" "c-$d.img" 1M
    fi
done
for d in $creatable; do echo "$formats" | grep -qx "$d" || fail "--list-formats=create lists $d, not a format"; done
for d in null-co preallocate file; do
    if echo "$creatable" | grep -qx $d; then fail "--list-formats=create lists $d"; fi
done
expect_fail 1 "^blkimg: --list-formats takes no value or 'create', not 'x'$" "$BLKIMG" --list-formats=x
ok "--list-formats and --list-formats=create"
