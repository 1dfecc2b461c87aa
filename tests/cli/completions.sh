# Shell completions: bash completes commands, flags and values; zsh and fish files parse and
# (fish) complete; every flag a command's --help shows is offered by each shell.
source "$SRCDIR/tests/lib.sh"
BINDIR=$(dirname "$BLKIMG")
export PATH="$BINDIR:$PATH"

# bash: source the file and call the function.
bash_complete() {  # bash_complete WORDS...: prints COMPREPLY, one per line
    bash -c '
        source "$1"; shift
        COMP_WORDS=("$@"); COMP_CWORD=$(($# - 1))
        _blkimg
        printf "%s\n" "${COMPREPLY[@]}"' _ "$SRCDIR/completions/blkimg.bash" "$@"
}
expect_eq "bash: commands" "info" "$(bash_complete blkimg in)"
expect_eq "bash: convert command" "convert" "$(bash_complete blkimg con)"
expect_eq "bash: convert flags" "--progress-fd" "$(bash_complete blkimg convert --progress-)"
expect_eq "bash: convert target formats" "qcow2" "$(bash_complete blkimg convert -O qc)"
expect_eq "bash: convert cache modes" "unsafe" "$(bash_complete blkimg convert -t un)"
[ -z "$(bash_complete blkimg convert --out)" ] || fail "bash offers --output for convert"
expect_eq "bash: map flags" "--max-length" "$(bash_complete blkimg map --max)"
expect_eq "bash: info flags" "--backing-chain" "$(bash_complete blkimg info --back)"
expect_eq "bash: formats" "qcow2" "$(bash_complete blkimg info -f qc)"
expect_eq "bash: output values" "json" "$(bash_complete blkimg map --output j)"
touch img-one.qcow2
expect_eq "bash: filenames" "img-one.qcow2" "$(bash_complete blkimg info img-o)"
[ -z "$(bash_complete blkimg info --backing-chain --start)" ] || fail "bash offers map flags for info"
expect_eq "bash: create" "create" "$(bash_complete blkimg cr)"
expect_eq "bash: create flags" "--backing-unsafe" "$(bash_complete blkimg create --backing-u)"
expect_eq "bash: create -o keys from the schema" "cluster_size=" "$(bash_complete blkimg create -f qcow2 -o clus)"
expect_eq "bash: create -o keys after a comma" "size=1M,lazy_refcounts=" "$(bash_complete blkimg create -f qcow2 -o size=1M,lazy)"
expect_eq "bash: create -o keys of the host file" "extent_size_hint=" "$(bash_complete blkimg create -f raw -o ext)"
expect_eq "bash: backing formats" "qcow2" "$(bash_complete blkimg create -b base -B qc)"
expect_eq "bash: convert -o keys of the -O format" "compression_type=" "$(bash_complete blkimg convert -O qcow2 -o compr)"
expect_eq "bash: convert -o keys after a comma" "cluster_size=1M,lazy_refcounts=" "$(bash_complete blkimg convert --target-format=qcow2 -o cluster_size=1M,lazy)"
[ -z "$(bash_complete blkimg convert -O raw -o compr)" ] || fail "bash offers qcow2 keys for convert -O raw -o"
expect_eq "bash: compare" "compare" "$(bash_complete blkimg comp)"
expect_eq "bash: commit" "commit" "$(bash_complete blkimg comm)"
expect_eq "bash: commit flags" "--drop" "$(bash_complete blkimg commit --dr)"
expect_eq "bash: compare flags" "--max-diffs" "$(bash_complete blkimg compare --max)"
expect_eq "bash: compare -s is a flag" "--strict" "$(bash_complete blkimg compare -s --str)"
expect_eq "bash: compare formats" "qcow2" "$(bash_complete blkimg compare -F qc)"
# create -f and convert -O offer only formats that can create an image.
expect_eq "bash: create formats" "$("$BLKIMG" --list-formats=create)" "$(bash_complete blkimg create -f '')"
expect_eq "bash: convert target formats" "$("$BLKIMG" --list-formats=create)" "$(bash_complete blkimg convert -O '')"
for w in "create -f" "create --format" "convert -O" "convert --target-format"; do
    for d in null-co preallocate file; do
        if bash_complete blkimg $w '' | grep -qx $d; then fail "bash offers $d for $w"; fi
    done
done
expect_eq "bash: --list-formats" "$(printf "%s\n" --list-formats --list-formats=create)" "$(bash_complete blkimg --list-f)"
expect_eq "bash: graph command" "graph" "$(bash_complete blkimg gr)"
expect_eq "bash: graph output values" "dot" "$(bash_complete blkimg graph --output d)"
expect_eq "bash: graph --output= values" "--output=dot" "$(bash_complete blkimg graph --output=d)"
[ -z "$(bash_complete blkimg info --output d)" ] || fail "bash offers dot for info --output"
expect_eq "bash: graph flags" "--force-share" "$(bash_complete blkimg graph --forc)"
[ -z "$(bash_complete blkimg graph --back)" ] || fail "bash offers info flags for graph"
ok "bash completion"

# Every flag in --help appears in every completion file.
for c in check commit compare convert create graph info map; do
    for flag in $("$BLKIMG" $c --help | grep -oE -- '--[a-z][a-z-]+' | sort -u); do
        for f in blkimg.bash _blkimg blkimg.fish; do
            name=${flag#--}
            grep -q -- "$name" "$SRCDIR/completions/$f" || fail "$f lacks $flag of $c"
        done
    done
done
ok "every --help flag is completed"

if command -v zsh >/dev/null; then
    zsh -n "$SRCDIR/completions/_blkimg" || fail "zsh completion does not parse"
    # Which function completes the format values of create -f and convert -O.
    for w in "'(-f --format)'{-f,--format=}" "'(-O --target-format)'{-O,--target-format}"; do
        grep -F -- "$w" "$SRCDIR/completions/_blkimg" | grep -q ":_blkimg_creatable'" ||
            fail "zsh completes $w with something else than _blkimg_creatable"
    done
    grep -q -- "--list-formats=create" "$SRCDIR/completions/_blkimg" || fail "zsh: _blkimg_creatable does not ask --list-formats=create"
    ok "zsh completion parses"
fi
if command -v fish >/dev/null; then
    fish -n "$SRCDIR/completions/blkimg.fish" || fail "fish completion does not parse"
    out=$(fish -c "source $SRCDIR/completions/blkimg.fish; complete -C 'blkimg map --max'")
    echo "$out" | grep -q -- "--max-length" || fail "fish does not complete --max-length: $out"
    out=$(fish -c "source $SRCDIR/completions/blkimg.fish; complete -C 'blkimg convert --progress-'")
    echo "$out" | grep -q -- "--progress-fd" || fail "fish does not complete --progress-fd: $out"
    out=$(fish -c "source $SRCDIR/completions/blkimg.fish; complete -C 'blkimg convert -t un'")
    echo "$out" | grep -q "^-tunsafe\|^unsafe" || fail "fish does not complete cache modes: $out"
    out=$(fish -c "source $SRCDIR/completions/blkimg.fish; complete -C 'blkimg i'")
    echo "$out" | grep -q "^info" || fail "fish does not complete info: $out"
    out=$(fish -c "source $SRCDIR/completions/blkimg.fish; complete -C 'blkimg create -f qcow2 -o size=1M,clu'")
    echo "$out" | grep -q "^size=1M,cluster_size=" || fail "fish does not complete create -o keys: $out"
    out=$(fish -c "source $SRCDIR/completions/blkimg.fish; complete -C 'blkimg create -f qcow2 -o clu'")
    echo "$out" | grep -q "^cluster_size=" || fail "fish does not complete the first create -o key: $out"
    out=$(fish -c "source $SRCDIR/completions/blkimg.fish; complete -C 'blkimg convert -O qcow2 -o compr'")
    echo "$out" | grep -q "^compression_type=" || fail "fish does not complete convert -o keys: $out"
    for w in "create -f " "convert -O "; do
        out=$(fish -c "source $SRCDIR/completions/blkimg.fish; complete -C 'blkimg $w'" | cut -f1)
        expect_eq "fish: formats for $w" "$("$BLKIMG" --list-formats=create)" "$(echo "$out" | sort)"
    done
    out=$(fish -c "source $SRCDIR/completions/blkimg.fish; complete -C 'blkimg gr'")
    echo "$out" | grep -q "^graph" || fail "fish does not complete graph: $out"
    out=$(fish -c "source $SRCDIR/completions/blkimg.fish; complete -C 'blkimg graph --output '")
    echo "$out" | grep -q "^dot" || fail "fish does not complete graph --output dot: $out"
    out=$(fish -c "source $SRCDIR/completions/blkimg.fish; complete -C 'blkimg info --output '")
    if echo "$out" | grep -q "^dot"; then fail "fish offers dot for info --output: $out"; fi
    ok "fish completion"
fi

# The man page renders without warnings and documents every command and flag.
if command -v groff >/dev/null; then
    warnings=$(groff -man -Tutf8 -ww "$SRCDIR/man/blkimg.1" 2>&1 >/dev/null)
    [ -z "$warnings" ] || fail "man page warnings: $warnings"
    for c in check commit compare convert create graph info map; do
        for flag in $("$BLKIMG" $c --help | grep -oE -- '--[a-z][a-z-]+' | sort -u); do
            grep -q -- "$(echo "${flag#--}" | sed 's/-/\\\\-/g')" "$SRCDIR/man/blkimg.1" || fail "man page lacks $flag"
        done
    done
    ok "man page"
fi
