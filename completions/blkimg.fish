# fish completion for blkimg
function __blkimg_no_command
    set -l words (commandline -opc)
    for w in $words[2..-1]
        if not string match -q -- '-*' $w
            return 1
        end
    end
    return 0
end

function __blkimg_drivers
    blkimg --list-drivers 2>/dev/null; or printf '%s\n' file null-co qcow2 raw
end

complete -c blkimg -f -n __blkimg_no_command -a info -d 'show facts about an image'
complete -c blkimg -f -n __blkimg_no_command -a map -d 'show where each range of the data lives'
complete -c blkimg -f -n __blkimg_no_command -l help -d 'show help'
complete -c blkimg -f -n __blkimg_no_command -l version -d 'show the version'
complete -c blkimg -f -n __blkimg_no_command -l list-drivers -d 'list drivers'
complete -c blkimg -f -n __blkimg_no_command -l list-commands -d 'list commands'

for c in info map
    complete -c blkimg -n "__fish_seen_subcommand_from $c" -s f -l format -x -a '(__blkimg_drivers)' -d 'image format'
    complete -c blkimg -n "__fish_seen_subcommand_from $c" -l image-opts -d 'filename is dotted image options'
    complete -c blkimg -n "__fish_seen_subcommand_from $c" -l object -x -d 'define an object'
    complete -c blkimg -n "__fish_seen_subcommand_from $c" -l output -x -a 'human json' -d 'output format'
    complete -c blkimg -n "__fish_seen_subcommand_from $c" -s U -l force-share -d 'open shared, even if in use'
    complete -c blkimg -n "__fish_seen_subcommand_from $c" -s h -l help -d 'show help'
end
complete -c blkimg -n '__fish_seen_subcommand_from info' -l backing-chain -d 'show every image of the backing chain'
complete -c blkimg -n '__fish_seen_subcommand_from map' -s s -l start-offset -x -d 'start at this offset'
complete -c blkimg -n '__fish_seen_subcommand_from map' -s l -l max-length -x -d 'map at most this many bytes'
