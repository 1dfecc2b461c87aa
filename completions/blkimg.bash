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
        COMPREPLY=($(compgen -W "convert info map --help --version --list-drivers --list-commands" -- "$cur"))
        return
    fi
    case "$prev" in
        -f|--format|--source-format|-O|--target-format|-F|--backing-format)
            local drivers
            drivers=$("${COMP_WORDS[0]}" --list-drivers 2>/dev/null) || drivers="file null-co qcow2 raw"
            COMPREPLY=($(compgen -W "$drivers" -- "$cur"))
            return ;;
        --output)
            COMPREPLY=($(compgen -W "human json" -- "$cur"))
            return ;;
        -t|--target-cache|-T|--source-cache)
            COMPREPLY=($(compgen -W "none off writeback writethrough directsync unsafe" -- "$cur"))
            return ;;
        -o|--target-format-options)
            COMPREPLY=($(compgen -W "help" -- "$cur"))
            return ;;
        -b|-B|--backing)
            COMPREPLY=($(compgen -f -- "$cur"))
            return ;;
        --object|-s|--start-offset|-l|--max-length|--snapshot|-S|--sparse-size|-r|--rate-limit|-m|--parallel|--progress-fd)
            return ;;
    esac
    if [[ "$cur" == --output=* ]]; then
        COMPREPLY=($(compgen -W "--output=human --output=json" -- "$cur"))
        return
    fi
    local common="-f --format --image-opts --object --output -U --force-share -h --help"
    local opts
    case "$cmd" in
        info) opts="$common --backing-chain" ;;
        map) opts="$common -s --start-offset -l --max-length" ;;
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
complete -o filenames -F _blkimg blkimg
