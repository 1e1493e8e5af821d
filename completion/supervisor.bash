# bash completion for supervisor: commands, options, and the live names of services,
# asked of supervisor itself (supervisor/completion.py). Installed by `make install` as
# $(PREFIX)/share/bash-completion/completions/supervisor.
_supervisor()
{
    local cur=${COMP_WORDS[COMP_CWORD]} line IFS=$'\n'
    local -a answer
    COMPREPLY=()
    answer=($(supervisor __complete "$COMP_CWORD" "${COMP_WORDS[@]}" 2>/dev/null))
    for line in "${answer[@]}"; do
        case $line in
            __files__)
                COMPREPLY+=($(compgen -f -- "$cur"))
                compopt -o filenames 2>/dev/null ;;
            __dirs__)
                COMPREPLY+=($(compgen -d -- "$cur"))
                compopt -o filenames 2>/dev/null ;;
            __commands__)
                COMPREPLY+=($(compgen -c -- "$cur")) ;;
            *)
                COMPREPLY+=("$line") ;;
        esac
    done
}
complete -F _supervisor supervisor
