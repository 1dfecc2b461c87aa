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
        COMPREPLY=($(compgen -W "info map --help --version --list-drivers --list-commands" -- "$cur"))
        return
    fi
    case "$prev" in
        -f|--format)
            local drivers
            drivers=$("${COMP_WORDS[0]}" --list-drivers 2>/dev/null) || drivers="file null-co qcow2 raw"
            COMPREPLY=($(compgen -W "$drivers" -- "$cur"))
            return ;;
        --output)
            COMPREPLY=($(compgen -W "human json" -- "$cur"))
            return ;;
        --object|-s|--start-offset|-l|--max-length)
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
        *) opts="" ;;
    esac
    if [[ "$cur" == -* ]]; then
        COMPREPLY=($(compgen -W "$opts" -- "$cur"))
    else
        COMPREPLY=($(compgen -f -- "$cur"))
    fi
}
complete -o filenames -F _blkimg blkimg
