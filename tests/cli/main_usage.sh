# The top-level command line: help, version, listings, unknown commands.
source "$SRCDIR/tests/lib.sh"
"$BLKIMG" --help | grep -q "^usage: blkimg" || fail "--help lacks usage"
"$BLKIMG" --version | grep -Eq "^blkimg version [0-9]+\.[0-9]+" || fail "--version"
expect_eq "--list-drivers" "file
inject-error
null-co
preallocate
qcow2
raw" "$("$BLKIMG" --list-drivers)"
expect_eq "--list-commands" "check
commit
compare
convert
create
graph
info
map" "$("$BLKIMG" --list-commands)"
expect_fail 1 "Command not found: frobnicate" "$BLKIMG" frobnicate
expect_fail 1 "Not enough arguments" "$BLKIMG"
for c in check compare graph info map; do
    "$BLKIMG" $c --help | grep -q -- "--output" || fail "$c --help lacks --output"
    "$BLKIMG" $c --help | grep -q -- "--image-opts" || fail "$c --help lacks --image-opts"
done
"$BLKIMG" info --help | grep -q -- "--backing-chain" || fail "info --help lacks --backing-chain"
"$BLKIMG" map --help | grep -q -- "--start-offset" || fail "map --help lacks --start-offset"
"$BLKIMG" convert --help | grep -q -- "--target-is-zero" || fail "convert --help lacks --target-is-zero"
"$BLKIMG" commit --help | grep -q -- "--drop" || fail "commit --help lacks --drop"
"$BLKIMG" --help | grep -q "^  commit " || fail "--help does not list commit"
"$BLKIMG" create --help | grep -q -- "--backing-unsafe" || fail "create --help lacks --backing-unsafe"
"$BLKIMG" --help | grep -q "convert" || fail "--help does not list convert"
"$BLKIMG" --help | grep -q "create" || fail "--help does not list create"
"$BLKIMG" --help | grep -q "^  graph " || fail "--help does not list graph"
"$BLKIMG" graph --help | grep -q -- "human (default), json or dot" || fail "graph --help does not name its output formats"
expect_fail 1 "^blkimg: Expecting one image file name$" "$BLKIMG" info
ok "top-level usage"
