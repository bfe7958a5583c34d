# bash completion for yard(1): commands, each command's options and their
# values, and the names of models and pods from the running daemon
# ('yard ps --json', 'yard pod ls --json'; nothing when no daemon answers).
# Needs nothing from the bash-completion package.
# tests/e2e/package.test.mjs checks these lists against the binary.

_yard_commands="serve check ps start stop sleep wake pin unpin logs events gpus hosts pod session cloud models import init version help"

# _yard_options COMMAND [SUBCOMMAND]: the options the command takes.
_yard_options() {
    local common="--state-dir --help"
    case $1 in
    serve) echo "$common -c --config --listen --log-format --keep-engines" ;;
    check) echo "$common -c --config" ;;
    ps | gpus | hosts | version) echo "$common --json" ;;
    start) echo "$common -w --wait --pod" ;;
    stop) echo "$common -a --all" ;;
    sleep) echo "$common --level" ;;
    wake | pin | unpin) echo "$common" ;;
    logs) echo "$common -f --follow -n --lines --replica" ;;
    events) echo "$common -f --follow -n --lines --json" ;;
    models) echo "$common --pod --json" ;;
    cloud) echo "$common --gpus --vram --model --add --forget --json" ;;
    init) echo "$common -c --config --dir --force" ;;
    import) echo "$common -o --output" ;;
    session)
        case $2 in
        ls) echo "$common --json" ;;
        exec) echo "$common --timeout" ;;
        stop | rm | pause | resume) echo "$common" ;;
        *) echo "$common --json --timeout" ;;
        esac
        ;;
    pod)
        case $2 in
        add) echo "$common --ssh --models-path --json" ;;
        ls) echo "$common --json" ;;
        rm) echo "$common --force" ;;
        setup) echo "$common --timeout" ;;
        *) echo "$common" ;;
        esac
        ;;
    *) echo "$common" ;;
    esac
}

# _yard_names WHAT STATE-DIR-ARGS...: model, pod or session names from the daemon.
# A daemon that does not run, or does not answer within 2 s, gives none.
_yard_names() {
    local what=$1 json
    shift
    local cmd=(ps --json)
    local key=name
    [[ $what == pods ]] && cmd=(pod ls --json)
    [[ $what == sessions ]] && cmd=(session ls --json) && key=id
    json=$(timeout 2 "${_yard_bin:-yard}" "$@" "${cmd[@]}" 2>/dev/null) || return 0
    # Every object of each list has its name first; names hold no quotes.
    printf '%s\n' "$json" | grep -o "\"$key\": *\"[^\"]*\"" | sed 's/.*"\([^"]*\)"$/\1/' | sort -u
}

_yard() {
    local cur=${COMP_WORDS[COMP_CWORD]} prev=""
    ((COMP_CWORD > 0)) && prev=${COMP_WORDS[COMP_CWORD - 1]}
    local _yard_bin=${COMP_WORDS[0]}
    local cmd="" sub="" i w dir=() npos=0
    # The command (the first word that is not an option or an option's
    # value), its subcommand, --state-dir for the daemon, and how many
    # positional words come before the cursor.
    for ((i = 1; i < COMP_CWORD; i++)); do
        w=${COMP_WORDS[i]}
        case $w in
        --state-dir | -c | --config | --listen | --log-format | --pod | --level | -n | --lines | \
            --replica | --ssh | --models-path | --timeout | --gpus | --vram | --model | --dir | --add | --forget)
            [[ $w == --state-dir ]] && dir=(--state-dir "${COMP_WORDS[i + 1]}")
            ((i++))
            continue
            ;;
        --state-dir=*) dir=("$w") ;;
        -*) ;;
        *)
            if [[ -z $cmd ]]; then
                cmd=$w
            elif [[ ($cmd == pod || $cmd == cloud || $cmd == session) && -z $sub ]]; then
                sub=$w
            else
                ((npos++))
            fi
            ;;
        esac
    done

    case $prev in
    --state-dir | --dir)
        compopt -o filenames 2>/dev/null
        COMPREPLY=($(compgen -d -- "$cur"))
        return
        ;;
    -c | --config)
        compopt -o filenames 2>/dev/null
        COMPREPLY=($(compgen -f -- "$cur"))
        return
        ;;
    --log-format)
        COMPREPLY=($(compgen -W "text json" -- "$cur"))
        return
        ;;
    --level)
        COMPREPLY=($(compgen -W "1 2 suspend checkpoint" -- "$cur"))
        return
        ;;
    --pod)
        COMPREPLY=($(compgen -W "$(_yard_names pods "${dir[@]}")" -- "$cur"))
        return
        ;;
    --model)
        COMPREPLY=($(compgen -W "$(_yard_names models "${dir[@]}")" -- "$cur"))
        return
        ;;
    --listen | -n | --lines | --replica | --ssh | --models-path | --timeout | --gpus | --vram)
        return
        ;;
    esac

    if [[ -z $cmd ]]; then
        if [[ $cur == -* ]]; then
            COMPREPLY=($(compgen -W "--state-dir --config --json --help --version" -- "$cur"))
        else
            COMPREPLY=($(compgen -W "$_yard_commands" -- "$cur"))
        fi
        return
    fi
    if [[ $cur == -* ]]; then
        COMPREPLY=($(compgen -W "$(_yard_options "$cmd" "$sub")" -- "$cur"))
        return
    fi
    case $cmd in
    start | sleep | wake | pin | unpin | logs | events)
        ((npos == 0)) && COMPREPLY=($(compgen -W "$(_yard_names models "${dir[@]}")" -- "$cur"))
        ;;
    stop)
        COMPREPLY=($(compgen -W "$(_yard_names models "${dir[@]}")" -- "$cur"))
        ;;
    check)
        if ((npos == 0)); then
            compopt -o filenames 2>/dev/null
            COMPREPLY=($(compgen -f -- "$cur"))
        fi
        ;;
    help)
        ((npos == 0)) && COMPREPLY=($(compgen -W "$_yard_commands" -- "$cur"))
        ;;
    init)
        compopt -o filenames 2>/dev/null
        COMPREPLY=($(compgen -d -- "$cur"))
        ;;
    import)
        if ((npos == 0)); then
            COMPREPLY=($(compgen -W "llama-swap" -- "$cur"))
        else
            compopt -o filenames 2>/dev/null
            COMPREPLY=($(compgen -f -- "$cur"))
        fi
        ;;
    cloud)
        [[ -z $sub ]] && COMPREPLY=($(compgen -W "offers rent ls release bad" -- "$cur"))
        ;;
    session)
        if [[ -z $sub ]]; then
            COMPREPLY=($(compgen -W "ls exec stop pause resume backup restore rm" -- "$cur"))
        elif [[ $sub != ls && $npos -eq 0 ]]; then
            COMPREPLY=($(compgen -W "$(_yard_names sessions "${dir[@]}")" -- "$cur"))
        fi
        ;;
    pod)
        if [[ -z $sub ]]; then
            COMPREPLY=($(compgen -W "add ls rm setup" -- "$cur"))
        elif [[ ($sub == rm || $sub == setup) && $npos -eq 0 ]]; then
            COMPREPLY=($(compgen -W "$(_yard_names pods "${dir[@]}")" -- "$cur"))
        fi
        ;;
    esac
}

complete -F _yard yard
