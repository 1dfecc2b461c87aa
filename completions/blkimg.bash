# bash completion for blkimg
_blkimg() {
    local cur prev cmd i
    cur="${COMP_WORDS[COMP_CWORD]}"
    prev="${COMP_WORDS[COMP_CWORD-1]}"
    cmd=""
    for ((i = 1; i < COMP_CWORD; i++)); do
        case "${COMP_WORDS[i]}" in
            -*) ;;
            *) cmd="${COMP_WORDS[i]}"; break ;;
        esac
    done
    if [ -z "$cmd" ]; then
        COMPREPLY=($(compgen -W "check commit compare convert create graph info map --help --version --list-drivers --list-commands --list-formats --list-formats=create" -- "$cur"))
        return
    fi
    if [ "$cmd" = create ]; then
        _blkimg_create "$cur" "$prev"
        return
    fi
    # compare's -s is --strict, a flag (map's -s takes an offset).
    if [ "$cmd" = compare ] && [ "$prev" = -s ]; then prev=--strict; fi
    # check's -r is --repair (convert's -r is a rate limit).
    if [ "$cmd" = check ] && { [ "$prev" = -r ] || [ "$prev" = --repair ]; }; then
        COMPREPLY=($(compgen -W "leaks all" -- "$cur"))
        return
    fi
    case "$prev" in
        -O|--target-format)
            # Only formats that can create an image.
            COMPREPLY=($(compgen -W "$(_blkimg_creatable)" -- "$cur"))
            return ;;
        -f|--format|--a-format|--b-format|--source-format|-F|--backing-format)
            local drivers
            drivers=$("${COMP_WORDS[0]}" --list-drivers 2>/dev/null) || drivers="file inject-error null-co preallocate qcow2 raw"
            COMPREPLY=($(compgen -W "$drivers" -- "$cur"))
            return ;;
        --output)
            if [ "$cmd" = graph ]; then COMPREPLY=($(compgen -W "human json dot" -- "$cur")); return; fi
            COMPREPLY=($(compgen -W "human json" -- "$cur"))
            return ;;
        -t|--target-cache|-T|--source-cache|--cache)
            COMPREPLY=($(compgen -W "none off writeback writethrough directsync unsafe" -- "$cur"))
            return ;;
        -o|--target-format-options)
            # Create options of the target format (-O, raw by default), as for create -o.
            _blkimg_option_keys -O --target-format "$cur"
            return ;;
        -b|-B|--backing)
            COMPREPLY=($(compgen -f -- "$cur"))
            return ;;
        --object|-s|--start-offset|-l|--max-length|--snapshot|-S|--sparse-size|-r|--rate-limit|-m|--parallel|--progress-fd|--max-diffs)
            return ;;
    esac
    if [[ "$cur" == --output=* ]]; then
        if [ "$cmd" = graph ]; then
            COMPREPLY=($(compgen -W "--output=human --output=json --output=dot" -- "$cur"))
            return
        fi
        COMPREPLY=($(compgen -W "--output=human --output=json" -- "$cur"))
        return
    fi
    local common="-f --format --image-opts --object --output -U --force-share -h --help"
    local opts
    case "$cmd" in
        graph) opts="$common" ;;
        info) opts="$common --backing-chain" ;;
        map) opts="$common -s --start-offset -l --max-length" ;;
        check) opts="$common -T --cache -r --repair -q --quiet --chain" ;;
        commit) opts="-f --format --image-opts --object -t --cache -b --base -d --drop -r --rate-limit -p --progress
            -q --quiet -h --help" ;;
        compare) opts="-f --a-format -F --b-format --image-opts --object -T --cache -s --strict -U --force-share
            -p --progress -q --quiet --output --max-diffs -h --help" ;;
        convert) opts="-f --source-format --image-opts -T --source-cache -l --snapshot --bitmaps --skip-broken-bitmaps
            --salvage -O --target-format --target-image-opts -o --target-format-options -t --target-cache -b -B --backing
            -F --backing-format -S --sparse-size -n --no-create --target-is-zero -c --compress -U --force-share
            -r --rate-limit -m --parallel -W --oob-writes -C --copy-range-offloading -p --progress -q --quiet --object
            --progress-fd -h --help" ;;
        *) opts="" ;;
    esac
    if [[ "$cur" == -* ]]; then
        COMPREPLY=($(compgen -W "$opts" -- "$cur"))
    else
        COMPREPLY=($(compgen -f -- "$cur"))
    fi
}
# -o KEY= names from `blkimg create -f FMT -o help`, completing $3 after its last comma. FMT
# follows the flag $1 or $2 on the command line (raw if neither): -f --format for create -o,
# -O --target-format for convert -o.
_blkimg_option_keys() {
    local short=$1 long=$2 cur=$3 fmt=raw i keys head="" word=$3
    for ((i = 2; i < COMP_CWORD; i++)); do
        case "${COMP_WORDS[i]}" in
            "$short"|"$long") fmt="${COMP_WORDS[i+1]}" ;;
            "$long"=*) fmt="${COMP_WORDS[i]#"$long"=}" ;;
        esac
    done
    if [[ "$cur" == *,* ]]; then head="${cur%,*},"; word="${cur##*,}"; fi
    keys=$("${COMP_WORDS[0]}" create -f "$fmt" -o help /dev/null 2>/dev/null | sed -n 's/^  \([a-z_.-]*\)=.*/\1=/p')
    [ -n "$keys" ] || keys="size= preallocation= cluster_size= compat= backing_file= backing_fmt= help"
    COMPREPLY=($(compgen -P "$head" -W "$keys help" -- "$word"))
    compopt -o nospace 2>/dev/null
}
# Formats create -f and convert -O accept, as the binary lists them.
_blkimg_creatable() {
    "${COMP_WORDS[0]}" --list-formats=create 2>/dev/null || echo "qcow2 raw"
}
# create: flags, formats, backing files, and -o KEY= names taken from `blkimg create -o help`.
_blkimg_create() {
    local cur=$1 prev=$2
    case "$prev" in
        -f|--format)
            COMPREPLY=($(compgen -W "$(_blkimg_creatable)" -- "$cur"))
            return ;;
        -F|-B|--backing-format)
            local drivers
            drivers=$("${COMP_WORDS[0]}" --list-drivers 2>/dev/null) || drivers="file inject-error null-co preallocate qcow2 raw"
            COMPREPLY=($(compgen -W "$drivers" -- "$cur"))
            return ;;
        -o|--options)
            _blkimg_option_keys -f --format "$cur"
            return ;;
        -b|--backing)
            COMPREPLY=($(compgen -f -- "$cur"))
            return ;;
        --object)
            return ;;
    esac
    if [[ "$cur" == -* ]]; then
        COMPREPLY=($(compgen -W "-f --format -o --options -b --backing -F -B --backing-format -u --backing-unsafe -q --quiet --object -h --help" -- "$cur"))
    else
        COMPREPLY=($(compgen -f -- "$cur"))
    fi
}
complete -o filenames -F _blkimg blkimg
