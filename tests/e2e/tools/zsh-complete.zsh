#!/usr/bin/env zsh
# zsh-complete.zsh DIR LINE: prints, one a line, the matches zsh's completion
# offers for LINE (TAB at its end) with the completion functions of DIR first
# in fpath. It drives an interactive zsh on a pseudo-terminal (zsh/zpty) and
# catches what the completion functions hand to compadd; the shell exits right
# after the completion, so a completion that never returns shows as a hang.
emulate -L zsh
zmodload zsh/zpty || exit 2
dir=$1 line=$2
tmp=$(mktemp -d) || exit 2
trap 'rm -rf $tmp' EXIT
cat >$tmp/init.zsh <<INIT
PROMPT=''
fpath=(${(q)dir} \$fpath)
autoload -Uz compinit && compinit -u -d $tmp/zcompdump
bindkey '^I' complete-word
zstyle ':completion:*' insert-tab false
yard_done() { print -r -- '<<done>>'; exit }
comppostfuncs=(yard_done)
compadd() {
  # Calls that only ask for matches (-O, -A, -D) go through untouched.
  if [[ \${@[1,(i)(-|--)]} == *-(O|A|D)\ * ]]; then builtin compadd "\$@"; return; fi
  local -a hits
  builtin compadd -A hits "\$@"
  local h
  for h in \$hits; do print -r -- "<<match>>\$h"; done
}
print -r -- '<<ready>>'
INIT
zpty z zsh -f -i
zpty -w z "source ${(q)tmp}/init.zsh"
out=''
while zpty -r z chunk; do
  out+=$chunk
  [[ $out == *'<<ready>>'*$'\n'* ]] && break
done
zpty -w -n z "$line"$'\t'
out=''
while zpty -r z chunk; do out+=$chunk; done
zpty -d z
for l in ${(f)out}; do
  l=${l%$'\r'}
  # the first match may share its line with the echo of LINE
  [[ $l == *'<<match>>'* ]] && print -r -- ${l##*'<<match>>'}
done
[[ $out == *'<<done>>'* ]] || { print -u2 "zsh-complete: the completion did not finish"; exit 1 }
exit 0
