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

# Formats that can create an image (create -f, convert -O).
function __blkimg_creatable
    blkimg --list-formats=create 2>/dev/null; or printf '%s\n' qcow2 raw
end

function __blkimg_drivers
    blkimg --list-drivers 2>/dev/null; or printf '%s\n' file inject-error null-co preallocate qcow2 raw
end

complete -c blkimg -f -n __blkimg_no_command -a check -d 'check an image\'s metadata for errors and leaked clusters'
complete -c blkimg -f -n __blkimg_no_command -a commit -d 'write an image into its backing file and empty it'
complete -c blkimg -f -n __blkimg_no_command -a compare -d 'check whether two images have the same content'
complete -c blkimg -f -n __blkimg_no_command -a convert -d 'copy images into a new or existing image'
complete -c blkimg -f -n __blkimg_no_command -a create -d 'create a new disk image'
complete -c blkimg -f -n __blkimg_no_command -a graph -d 'show the nodes and edges an image spec opens'
complete -c blkimg -f -n __blkimg_no_command -a info -d 'show facts about an image'
complete -c blkimg -f -n __blkimg_no_command -a map -d 'show where each range of the data lives'
complete -c blkimg -f -n __blkimg_no_command -l help -d 'show help'
complete -c blkimg -f -n __blkimg_no_command -l version -d 'show the version'
complete -c blkimg -f -n __blkimg_no_command -l list-drivers -d 'list drivers'
complete -c blkimg -f -n __blkimg_no_command -l list-commands -d 'list commands'
complete -c blkimg -f -n __blkimg_no_command -l list-formats -a create -d 'list format drivers (=create: those that can create)'

for c in check graph info map
    complete -c blkimg -n "__fish_seen_subcommand_from $c" -s f -l format -x -a '(__blkimg_drivers)' -d 'image format'
    complete -c blkimg -n "__fish_seen_subcommand_from $c" -l image-opts -d 'filename is dotted image options'
    complete -c blkimg -n "__fish_seen_subcommand_from $c" -l object -x -d 'define an object'
    complete -c blkimg -n "__fish_seen_subcommand_from $c" -s U -l force-share -d 'open shared, even if in use'
    complete -c blkimg -n "__fish_seen_subcommand_from $c" -s h -l help -d 'show help'
end
complete -c blkimg -n '__fish_seen_subcommand_from check info map' -l output -x -a 'human json' -d 'output format'
complete -c blkimg -n '__fish_seen_subcommand_from graph' -l output -x -a 'human json dot' -d 'output format'
complete -c blkimg -n '__fish_seen_subcommand_from info' -l backing-chain -d 'show every image of the backing chain'
complete -c blkimg -n '__fish_seen_subcommand_from map' -s s -l start-offset -x -d 'start at this offset'
complete -c blkimg -n '__fish_seen_subcommand_from map' -s l -l max-length -x -d 'map at most this many bytes'

# check
set -l ck '__fish_seen_subcommand_from check'
complete -c blkimg -n $ck -s T -l cache -x -a 'none off writeback writethrough directsync unsafe' -d 'cache mode'
complete -c blkimg -n $ck -s r -l repair -x -a 'leaks all' -d 'repair leaks, or all errors (read-write)'
complete -c blkimg -n $ck -s q -l quiet -d 'print nothing but errors'
complete -c blkimg -n $ck -l chain -d 'check every image of the backing chain (not with -r)'
# commit
set -l cmt '__fish_seen_subcommand_from commit'
complete -c blkimg -n $cmt -s f -l format -x -a '(__blkimg_drivers)' -d 'image format'
complete -c blkimg -n $cmt -l image-opts -d 'the image is dotted image options'
complete -c blkimg -n $cmt -l object -x -d 'define an object'
complete -c blkimg -n $cmt -s t -l cache -x -a 'none off writeback writethrough directsync unsafe' -d 'cache mode of the images'
complete -c blkimg -n $cmt -s b -l base -r -d 'commit into this image of the backing chain (implies -d)'
complete -c blkimg -n $cmt -s d -l drop -d 'leave the image as it is (do not empty it)'
complete -c blkimg -n $cmt -s r -l rate-limit -x -d 'bytes per second'
complete -c blkimg -n $cmt -s p -l progress -d 'show progress'
complete -c blkimg -n $cmt -s q -l quiet -d 'print nothing but errors'
complete -c blkimg -n $cmt -s h -l help -d 'show help'

# compare
set -l cm '__fish_seen_subcommand_from compare'
complete -c blkimg -n $cm -s f -l a-format -x -a '(__blkimg_drivers)' -d 'format of the first image'
complete -c blkimg -n $cm -s F -l b-format -x -a '(__blkimg_drivers)' -d 'format of the second image'
complete -c blkimg -n $cm -l image-opts -d 'both images are dotted image options'
complete -c blkimg -n $cm -l object -x -d 'define an object'
complete -c blkimg -n $cm -s T -l cache -x -a 'none off writeback writethrough directsync unsafe' -d 'cache mode of both images'
complete -c blkimg -n $cm -s s -l strict -d 'sizes and allocation must match too'
complete -c blkimg -n $cm -s U -l force-share -d 'open shared, even if in use'
complete -c blkimg -n $cm -s p -l progress -d 'show progress'
complete -c blkimg -n $cm -s q -l quiet -d 'print nothing but errors'
complete -c blkimg -n $cm -l output -x -a 'human json' -d 'output format'
complete -c blkimg -n $cm -l max-diffs -x -d 'with --output=json: at most this many differing ranges'
complete -c blkimg -n $cm -s h -l help -d 'show help'

# convert
set -l cv '__fish_seen_subcommand_from convert'
set -l caches 'none off writeback writethrough directsync unsafe'
complete -c blkimg -n $cv -s f -l source-format -x -a '(__blkimg_drivers)' -d 'format of every source'
complete -c blkimg -n $cv -l image-opts -d 'sources are dotted image options'
complete -c blkimg -n $cv -s T -l source-cache -x -a $caches -d 'cache mode of the sources'
complete -c blkimg -n $cv -s l -l snapshot -x -d 'convert a snapshot (not supported yet)'
complete -c blkimg -n $cv -l bitmaps -d 'copy bitmaps (not supported yet)'
complete -c blkimg -n $cv -l skip-broken-bitmaps -d 'skip broken bitmaps (not supported yet)'
complete -c blkimg -n $cv -l salvage -d 'read errors become zeroes'
complete -c blkimg -n $cv -s O -l target-format -x -a '(__blkimg_creatable)' -d 'format of the target'
complete -c blkimg -n $cv -l target-image-opts -d 'target is dotted image options'
complete -c blkimg -n $cv -s o -l target-format-options -x -a '(__blkimg_create_options -O --target-format)' -d 'create options of the target (-o help lists them)'
complete -c blkimg -n $cv -s t -l target-cache -x -a $caches -d 'cache mode of the target'
complete -c blkimg -n $cv -s b -s B -l backing -r -d 'backing file of the new target'
complete -c blkimg -n $cv -s F -l backing-format -x -a '(__blkimg_drivers)' -d 'format of the backing file'
complete -c blkimg -n $cv -s S -l sparse-size -x -d 'zero runs at least this long become holes'
complete -c blkimg -n $cv -s n -l no-create -d 'write into an existing target'
complete -c blkimg -n $cv -l target-is-zero -d 'the existing target reads as zeroes'
complete -c blkimg -n $cv -s c -l compress -d 'write compressed clusters'
complete -c blkimg -n $cv -s U -l force-share -d 'open the sources shared'
complete -c blkimg -n $cv -s r -l rate-limit -x -d 'bytes per second at most'
complete -c blkimg -n $cv -s m -l parallel -x -d 'requests in flight (1-16)'
complete -c blkimg -n $cv -s W -l oob-writes -d 'allow out-of-order writes'
complete -c blkimg -n $cv -s C -l copy-range-offloading -d 'let the kernel copy ranges'
complete -c blkimg -n $cv -s p -l progress -d 'show progress'
complete -c blkimg -n $cv -s q -l quiet -d 'print nothing but errors'
complete -c blkimg -n $cv -l object -x -d 'define an object'
complete -c blkimg -n $cv -l progress-fd -x -d 'write JSON progress lines to this descriptor'
complete -c blkimg -n $cv -s h -l help -d 'show help'

# -o KEY= names come from `blkimg create -f FMT -o help`; FMT follows the flags given as
# arguments (create: -f --format; convert: -O --target-format).
function __blkimg_create_options
    set -l flags $argv
    test (count $flags) -gt 0; or set flags -f --format
    set -l fmt raw
    set -l words (commandline -opc)
    for i in (seq (count $words))
        if contains -- $words[$i] $flags; and test $i -lt (count $words)
            set fmt $words[(math $i + 1)]
        end
    end
    set -l tok (commandline -ct)
    # No comma yet: an empty string, not an empty list (which would make $head$key empty).
    set -l head (string match -r '^.*,' -- $tok; or echo '')
    for key in (blkimg create -f $fmt -o help /dev/null 2>/dev/null | string replace -rf '^  ([a-z_.-]+)=.*' '$1=') help
        echo $head$key
    end
end
complete -c blkimg -n '__fish_seen_subcommand_from create' -s f -l format -x -a '(__blkimg_creatable)' -d 'format of the new image'
complete -c blkimg -n '__fish_seen_subcommand_from create' -s o -l options -x -a '(__blkimg_create_options)' -d 'format options (-o help lists them)'
complete -c blkimg -n '__fish_seen_subcommand_from create' -s b -l backing -r -F -d 'backing file'
complete -c blkimg -n '__fish_seen_subcommand_from create' -s F -s B -l backing-format -x -a '(__blkimg_drivers)' -d 'format of the backing file'
complete -c blkimg -n '__fish_seen_subcommand_from create' -s u -l backing-unsafe -d 'do not open the backing file'
complete -c blkimg -n '__fish_seen_subcommand_from create' -s q -l quiet -d 'do not print the Formatting line'
complete -c blkimg -n '__fish_seen_subcommand_from create' -l object -x -d 'define an object'
complete -c blkimg -n '__fish_seen_subcommand_from create' -s h -l help -d 'show help'
