# blkimg graph: the nodes and edges a spec opens (human, json, dot), for chains with relative
# backing names opened from another directory, a qcow2 with a data file and a raw window; its
# JSON opens the same graph again as a json: filename; secrets never shown; bad input refused.
source "$SRCDIR/tests/lib.sh"
mkdir d o
qemu-img create -q -f qcow2 d/base.qcow2 4M
qemu-io -c 'write -P 0x11 0 64k' d/base.qcow2 >/dev/null
qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 d/mid.qcow2
qemu-io -c 'write -P 0x22 1M 64k' d/mid.qcow2 >/dev/null
qemu-img create -q -f qcow2 -b mid.qcow2 -F qcow2 d/top.qcow2
cd o

size() { stat -c %s "$1"; }

# graph_check WHAT SPEC_JSON PYTHON: runs PYTHON with `g` bound to the parsed graph JSON.
graph_check() {
    python3 - "$1" "$2" "$3" <<'PY'
import json, sys
what, text, code = sys.argv[1:4]
g = json.loads(text)
try:
    exec(code)
except AssertionError as e:
    print("FAIL: %s: %s" % (what, e), file=sys.stderr)
    print(json.dumps(g, indent=2), file=sys.stderr)
    sys.exit(1)
PY
}

# round_trip WHAT ARGS...: the graph JSON of ARGS, passed back as json:, prints the same JSON;
# info (and info --backing-chain --output=json, and map) on it equal info on ARGS.
round_trip() {
    local what=$1; shift
    local j again
    j=$("$BLKIMG" graph --output=json "$@") || fail "$what: graph --output=json failed"
    again=$("$BLKIMG" graph --output=json "json:$j") || fail "$what: graph of its own JSON failed"
    expect_eq "$what: graph JSON round-trips" "$j" "$again"
    expect_eq "$what: info on the graph JSON" "$("$BLKIMG" info "$@")" "$("$BLKIMG" info "json:$j")"
    expect_eq "$what: info --backing-chain --output=json on the graph JSON" \
        "$("$BLKIMG" info --backing-chain --output=json "$@")" "$("$BLKIMG" info --backing-chain --output=json "json:$j")"
    # map reads no data but needs an image it could read (not an encrypted one without key).
    if "$BLKIMG" map "$@" >/dev/null 2>&1; then
        expect_eq "$what: map on the graph JSON" "$("$BLKIMG" map --output=json "$@")" "$("$BLKIMG" map --output=json "json:$j")"
    fi
}

# --- two layers, relative backing name, opened from another directory ---
mid_size=$(size ../d/mid.qcow2) base_size=$(size ../d/base.qcow2)
out=$("$BLKIMG" graph ../d/mid.qcow2)
expect_eq "human graph of a two-layer chain" \
"#block000: qcow2, 4 MiB (4194304 bytes), read-only
    options: driver=qcow2
    caps: backing, block-status
    file [data, metadata, primary] -> #block001: file, X (${mid_size} bytes), read-only
        options: driver=file,filename=../d/mid.qcow2
        caps: zero-init, protocol, block-status
    backing [cow] (named by the image) -> #block002: qcow2, 4 MiB (4194304 bytes), read-only
        options: driver=qcow2
        caps: zero-init, backing, block-status
        file [data, metadata, primary] -> #block003: file, X (${base_size} bytes), read-only
            options: driver=file,filename=../d/base.qcow2
            caps: zero-init, protocol, block-status" \
    "$(echo "$out" | sed -E 's/file, [0-9.]+ [KMG]?i?B \(/file, X (/')"
ok "human: a two-layer chain with its backing file resolved from the overlay's directory"

j=$("$BLKIMG" graph --output=json ../d/mid.qcow2)
graph_check "json of a two-layer chain" "$j" "
assert g['driver'] == 'qcow2' and g['@node-name'] == '#block000' and g['@size'] == 4194304, 'root'
assert g['@read-only'] is True and '@edge' not in g, 'root facts'
f = g['file']
assert f == {'driver': 'file', '@node-name': '#block001', '@edge': {'name': 'file', 'roles': ['data', 'metadata', 'primary']},
             '@size': $mid_size, '@read-only': True, '@caps': ['zero-init', 'protocol', 'block-status'],
             'filename': '../d/mid.qcow2'}, 'file node %r' % f
assert g['@caps'] == ['backing', 'block-status'], 'root caps %r' % g['@caps']
b = g['@backing']
assert 'backing' not in g, 'an image-named backing file is no option'
assert b['@edge'] == {'name': 'backing', 'roles': ['cow'], 'from-image': True}, 'backing edge'
assert b['@node-name'] == '#block002' and b['file']['filename'] == '../d/base.qcow2', 'backing node'
assert '@backing' not in b, 'base has no backing'
"
round_trip "two layers" ../d/mid.qcow2
ok "json: a two-layer chain, and it round-trips"

# --- three layers ---
j=$("$BLKIMG" graph --output=json ../d/top.qcow2)
graph_check "json of a three-layer chain" "$j" "
names = []
n = g
while n:
    names.append(n['@node-name']); names.append(n['file']['@node-name'])
    n = n.get('@backing')
assert names == ['#block%03d' % i for i in range(6)], names
assert [g['file']['filename'], g['@backing']['file']['filename'], g['@backing']['@backing']['file']['filename']] == \
    ['../d/top.qcow2', '../d/mid.qcow2', '../d/base.qcow2'], 'chain files'
"
round_trip "three layers" ../d/top.qcow2
# The same from the image's own directory and by absolute name.
(cd ../d && round_trip "three layers, opened in place" top.qcow2)
round_trip "three layers, absolute name" "$T/d/top.qcow2"
round_trip "three layers, -f qcow2" -f qcow2 ../d/top.qcow2
ok "json: a three-layer chain from another directory round-trips"

# An explicit backing in the options is an option again (not '@backing').
spec='json:{"driver":"qcow2","file":{"driver":"file","filename":"../d/top.qcow2"},"backing":{"driver":"qcow2","file":{"driver":"file","filename":"../d/base.qcow2"}}}'
j=$("$BLKIMG" graph --output=json "$spec")
graph_check "explicit backing" "$j" "
assert '@backing' not in g and g['backing']['file']['filename'] == '../d/base.qcow2', 'backing'
assert g['backing']['@edge'] == {'name': 'backing', 'roles': ['cow']}, g['backing']['@edge']
"
round_trip "explicit backing" "$spec"
ok "json: a backing given in the options stays an option"

# --- a qcow2 with an external data file (qemu 7.2 opens its stored name from the cwd) ---
cd ../d
qemu-img create -q -f qcow2 -o data_file=df.raw df.qcow2 1M
qemu-io -c 'write -P 0x33 0 64k' df.qcow2 >/dev/null
j=$("$BLKIMG" graph --output=json df.qcow2)
graph_check "data file" "$j" "
assert g['file']['@edge']['roles'] == ['metadata', 'primary'], g['file']['@edge']
d = g['@data-file']
assert d['@edge'] == {'name': 'data-file', 'roles': ['data'], 'from-image': True}, d['@edge']
assert d['driver'] == 'file' and d['filename'] == 'df.raw' and d['@size'] == 1048576, d
"
"$BLKIMG" graph df.qcow2 | grep -qx '    data-file \[data\] (named by the image) -> #block002: file, 1 MiB (1048576 bytes), read-only' ||
    fail "human graph lacks the data file: $("$BLKIMG" graph df.qcow2)"
round_trip "data file" df.qcow2
spec='json:{"driver":"qcow2","file":{"driver":"file","filename":"df.qcow2"},"data-file":{"driver":"file","filename":"df.raw"}}'
graph_check "data file in the options" "$("$BLKIMG" graph --output=json "$spec")" "
assert '@data-file' not in g and g['data-file']['@edge'] == {'name': 'data-file', 'roles': ['data']}, g
"
round_trip "data file in the options" "$spec"
ok "a qcow2 with a data file"

# --- a raw window, and raw as a filter ---
truncate -s 4M w.img
qemu-io -f raw -c 'write -P 0x44 4096 64k' w.img >/dev/null
win=driver=raw,offset=4096,size=1048576,file.filename=w.img
j=$("$BLKIMG" graph --output=json --image-opts $win)
graph_check "raw window" "$j" "
assert g['driver'] == 'raw' and g['offset'] == '4096' and g['size'] == '1048576' and g['@size'] == 1048576, g
assert g['file']['@edge'] == {'name': 'file', 'roles': ['data', 'primary']}, g['file']['@edge']
assert g['file']['@size'] == 4194304, g['file']
"
expect_eq "human raw window" \
"#block000: raw, 1 MiB (1048576 bytes), read-only
    options: driver=raw,offset=4096,size=1048576
    caps: block-status
    file [data, primary] -> #block001: file, 4 MiB (4194304 bytes), read-only
        options: driver=file,filename=w.img
        caps: zero-init, protocol, block-status" "$("$BLKIMG" graph --image-opts $win)"
round_trip "raw window" --image-opts $win
graph_check "raw filter" "$("$BLKIMG" graph --output=json -f raw w.img)" "
assert g['file']['@edge']['roles'] == ['filtered', 'primary'], g['file']['@edge']
assert g['@caps'] == ['zero-init', 'block-status'] and g['file']['@caps'] == ['zero-init', 'protocol', 'block-status'], g
"
round_trip "raw filter" -f raw w.img
ok "a raw window and raw as a filter"

# --- node names: given ones are options and names; the others are numbered ---
j=$("$BLKIMG" graph --output=json --image-opts "node-name=top,$win")
graph_check "node names" "$j" "
assert g['node-name'] == 'top' and g['@node-name'] == 'top', g
assert g['file']['@node-name'] == '#block001' and 'node-name' not in g['file'], g['file']
"
round_trip "node names" --image-opts "node-name=top,$win"
ok "node names"

# --- secrets are never printed; an encrypted image needs no key ---
for try in 1 2 3 4 5; do
    qemu-img create -q -f qcow2 --object secret,id=sec-hunter,data=hunter2pw \
        -o encrypt.format=luks,encrypt.key-secret=sec-hunter,encrypt.iter-time=10 e.qcow2 1M 2>e.err && break
    rm -f e.qcow2
done
[ -s e.qcow2 ] || { cat e.err >&2; fail "qemu-img could not make e.qcow2"; }
espec=driver=qcow2,file.filename=e.qcow2,encrypt.key-secret=sec-hunter
for fmt in human json dot; do
    out=$("$BLKIMG" graph --output=$fmt --object secret,id=sec-hunter,data=hunter2pw --image-opts $espec)
    if echo "$out" | grep -q "hunter"; then fail "graph --output=$fmt shows a secret: $out"; fi
done
"$BLKIMG" graph --object secret,id=sec-hunter,data=hunter2pw --image-opts $espec |
    grep -qx '    options: driver=qcow2,encrypt.key-secret=<masked>' || fail "human graph does not mask key-secret"
j=$("$BLKIMG" graph --output=json e.qcow2)
round_trip "encrypted, no key" e.qcow2
round_trip "encrypted, masked key" --object secret,id=sec-hunter,data=hunter2pw --image-opts $espec
ok "secrets are masked; an encrypted image opens without its key"

# --- dot ---
cd ../o
dot_out=$("$BLKIMG" graph --output=dot ../d/top.qcow2)
python3 - "$dot_out" <<'PY' || fail "dot output is malformed: $dot_out"
import re, sys
lines = sys.argv[1].split("\n")
assert lines[0] == "digraph blkimg {" and lines[-1] == "}", "not one digraph"
q = r'"((?:[^"\\]|\\.)*)"'
nodes, edges = {}, []
for l in lines[2:-1]:
    m = re.fullmatch(r"    %s \[label=%s\];" % (q, q), l)
    if m:
        assert m.group(1) not in nodes, "node twice: " + l
        nodes[m.group(1)] = m.group(2)
        continue
    m = re.fullmatch(r'    %s -> %s \[label=%s(, style=dashed)?\];' % (q, q, q), l)
    assert m, "not a node or edge statement: " + l
    edges.append((m.group(1), m.group(2), m.group(3), bool(m.group(4))))
assert sorted(nodes) == ["#block%03d" % i for i in range(6)], nodes
for a, b, label, dashed in edges:
    assert a in nodes and b in nodes, (a, b)
assert nodes["#block000"] == r"#block000\nqcow2\n4 MiB", nodes["#block000"]
assert nodes["#block005"].endswith(r"\n../d/base.qcow2"), nodes["#block005"]
assert ("#block000", "#block002", r"backing\ncow", True) in edges, edges
assert ("#block000", "#block001", r"file\ndata, metadata, primary", False) in edges, edges
assert len(edges) == 5, edges
PY
if command -v dot >/dev/null; then
    echo "$dot_out" | dot -Tsvg >g.svg || fail "dot -Tsvg refused the output"
    grep -q '#block005' g.svg || fail "the svg lacks a node"
    ok "dot renders with Graphviz"
else
    echo "skip: graphviz (dot) not installed; dot output checked structurally only"
fi
# Quotes and backslashes in a filename are escaped (DOT and JSON alike).
odd='q"u\o.img'
truncate -s 1M "$odd"
"$BLKIMG" graph --output=dot "$odd" | grep -qF '[label="#block001\nfile\n1 MiB\nq\"u\\o.img"];' ||
    fail "dot does not escape a filename: $("$BLKIMG" graph --output=dot "$odd")"
if command -v dot >/dev/null; then
    "$BLKIMG" graph --output=dot "$odd" | dot -Tsvg | grep -qF 'q&quot;u\o.img' || fail "dot renders an odd filename wrongly"
fi
round_trip "odd filename" "$odd"
ok "dot output"

# --- bad input: one line, exit 1 ---
expect_fail 1 "^blkimg: Could not open 'nope.qcow2': No such file or directory$" "$BLKIMG" graph nope.qcow2
cp ../d/top.qcow2 lonely.qcow2
expect_fail 1 "^blkimg: Could not open 'lonely.qcow2': Could not open backing file 'mid.qcow2'" "$BLKIMG" graph lonely.qcow2
expect_fail 1 "^blkimg: --output must be used with human, json or dot as argument\.$" "$BLKIMG" graph --output=xml ../d/top.qcow2
expect_fail 1 "^blkimg: unrecognized option '--bogus'$" "$BLKIMG" graph --bogus ../d/top.qcow2
expect_fail 1 "^blkimg: Expecting one image file name$" "$BLKIMG" graph
expect_fail 1 "^blkimg: Expecting one image file name$" "$BLKIMG" graph a b
expect_fail 1 "does not support the option 'foo'" "$BLKIMG" graph 'json:{"driver":"raw","file":{"driver":"file","filename":"../d/w.img"},"foo":1}'
expect_fail 1 "mutually exclusive" "$BLKIMG" graph -f raw --image-opts driver=raw,file.filename=../d/w.img
ok "bad input: one line, exit 1"

# --- info --backing-chain walks the opened graph by role ---
# A backing file given by options (here a raw image behind a preallocate filter) is the
# layer info shows: the one blkimg reads, not the name stored in the image's header; the
# filter between the layers is passed over, not shown as a layer.
mkdir -p walk && cd walk
qemu-img create -q -f qcow2 base.qcow2 1M
qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 top.qcow2
qemu-img create -q -f raw other.raw 2M
spec="driver=qcow2,file.filename=top.qcow2,backing.driver=preallocate,backing.file.driver=raw,backing.file.file.filename=other.raw"
expect_eq "layers by role" "image: json:{\"backing\": {\"driver\": \"preallocate\", \"file\": {\"driver\": \"raw\", \"file\": {\"driver\": \"file\", \"filename\": \"other.raw\"}}}, \"driver\": \"qcow2\", \"file\": {\"driver\": \"file\", \"filename\": \"top.qcow2\"}}
file format: qcow2
image: other.raw
file format: raw" "$("$BLKIMG" info --backing-chain --image-opts "$spec" | grep -E '^(image|file format):')"
expect_eq "layers of the stored chain" "image: top.qcow2
image: base.qcow2" "$("$BLKIMG" info --backing-chain top.qcow2 | grep '^image:')"
cd ..
ok "info --backing-chain walks the graph by role"
