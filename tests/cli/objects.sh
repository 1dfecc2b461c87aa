# --object definitions are checked when they are parsed, with qemu-img's messages and exit
# codes; --object help and TYPE,help print what qemu-img prints.
source "$SRCDIR/tests/lib.sh"
qemu-img create -q -f raw r.img 1M
mkdir d
printf pw > pw.txt
for o in 'secret,id=s0,file=missing.txt' 'secret,id=s0' 'secret,id=s0,file=d' 'secret,id=s0,data=x,file=pw.txt' \
    'secret,id=s0,data=x,bogus=1' 'secret,id=s0,data=x,format=bad' 'secret,id=s0,data=x,keyid=k' 'secret,data=x' \
    'id=x' 'foo,id=x' 'throttle-group,id=t,bogus=1' 'throttle-group,id=t,x-iops-total=abc' \
    '{"qom-type":"secret","id":"s0"}' 'secret,id=s0,file=pw.txt' 'secret,id=s0,data=eA==,format=base64' \
    'throttle-group,id=t,x-iops-total=5' 'help' 'secret,help' 'throttle-group,help'; do
    mine=$("$BLKIMG" info --object "$o" r.img 2>&1 >/dev/null; echo "rc=$?")
    theirs=$(qemu-img info --object "$o" r.img 2>&1 >/dev/null; echo "rc=$?")
    [ "${mine#blkimg: }" = "${theirs#qemu-img: }" ] || fail "--object $o: '$mine', qemu-img: '$theirs'"
    case "$o" in
    *help) diff <("$BLKIMG" info --object "$o") <(qemu-img info --object "$o") ||
        fail "--object $o prints other help than qemu-img" ;;
    esac
done
ok "--object checked as qemu-img checks it"
