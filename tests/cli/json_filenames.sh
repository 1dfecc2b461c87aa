# json: filenames in qemu's JSON dialect (single quotes, its escapes, several lines), as
# QEMU's iotests write them: the same output as qemu-img; bad ones refused with the position.
source "$SRCDIR/tests/lib.sh"
qemu-img create -q -f raw r.img 1M

spec="json:{ 'driver': 'null-co', 'size': 1048576, 'read-zeroes': true }"
diff <("$BLKIMG" info "$spec") <(qemu-img info "$spec") || fail "single-quoted json: differs from qemu-img"
spec=$'json:{\n    \'driver\': \'raw\',\n    \'file\': {\n        \'driver\': \'file\',\n        \'filename\': \'r.img\'\n    }\n}'
diff <("$BLKIMG" info "$spec" | grep -v '^disk size') <(qemu-img info "$spec" | grep -v '^disk size') ||
    fail "multi-line json: differs from qemu-img"
ok "qemu-style json: filenames open as qemu-img opens them"

expect_fail 1 "Unknown driver 'nu'll-co'" "$BLKIMG" info "json:{'driver': 'nu\\'ll-co'}"
expect_fail 1 "Unknown driver 'a'b'" "$BLKIMG" info "json:{'driver': \"a\\'b\"}"
expect_fail 1 "JSON parse error, invalid escape sequence in string \(at column 19\)" "$BLKIMG" info "json:{'driver': 'a\\x'}"
expect_fail 1 "JSON parse error, stray '01' \(at column 29\)" "$BLKIMG" info "json:{'driver': 'raw', 'a': 01}"
expect_fail 1 "JSON parse error, duplicate key \(at column 20\)" "$BLKIMG" info "json:{'a': 'b',    'a': 'c'}"
expect_fail 1 "Expecting at most one JSON value \(at column 14\)" "$BLKIMG" info "json:{'a': 1}}"
ok "bad qemu-style json: refused with qemu's words and the position"
