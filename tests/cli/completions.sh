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
expect_eq "bash: graph command" "graph" "$(bash_complete blkimg gr)"
expect_eq "bash: graph output values" "dot" "$(bash_complete blkimg graph --output d)"
expect_eq "bash: graph --output= values" "--output=dot" "$(bash_complete blkimg graph --output=d)"
[ -z "$(bash_complete blkimg info --output d)" ] || fail "bash offers dot for info --output"
expect_eq "bash: graph flags" "--force-share" "$(bash_complete blkimg graph --forc)"
[ -z "$(bash_complete blkimg graph --back)" ] || fail "bash offers info flags for graph"
ok "bash completion"

# Every flag in --help appears in every completion file.
for c in convert create graph info map; do
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
    for c in convert create graph info map; do
        for flag in $("$BLKIMG" $c --help | grep -oE -- '--[a-z][a-z-]+' | sort -u); do
            grep -q -- "$(echo "${flag#--}" | sed 's/-/\\\\-/g')" "$SRCDIR/man/blkimg.1" || fail "man page lacks $flag"
        done
    done
    ok "man page"
fi
