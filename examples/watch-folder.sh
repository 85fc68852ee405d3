#!/usr/bin/env bash
# Watch a folder: chart every scene that lands in INCOMING, as often as asked.
#
#   examples/watch-folder.sh INCOMING OUT [INTERVAL_SECONDS]   (default 60; 0 = run once)
#
# Each round is one `icechart predict` batch over the whole folder: finished scenes are
# skipped by their manifests, new ones are charted, a bad one is reported without stopping
# the others. Only files that have stopped growing are passed on (a scene still being copied
# in is left for the next round). A lock keeps rounds from overlapping with cron or a second
# copy of this script. Exit codes are icechart's (see `man icechart`); 75 (busy) is not an
# error here. Set ICECHART to use another executable (default: icechart on PATH).
set -u -o pipefail

incoming=${1:?usage: watch-folder.sh INCOMING OUT [INTERVAL_SECONDS]}
out=${2:?usage: watch-folder.sh INCOMING OUT [INTERVAL_SECONDS]}
interval=${3:-60}
icechart=${ICECHART:-icechart}
lock="${out%/}/.icechart.lock"
mkdir -p "$out" || exit 73

stop=0
trap 'stop=1' INT TERM

round() {
    local -a ready=()
    local f s1 s2
    shopt -s nullglob
    for f in "$incoming"/*.nc; do
        s1=$(stat -c %s "$f") || continue
        sleep 0.2
        s2=$(stat -c %s "$f") || continue
        [[ "$s1" == "$s2" ]] && ready+=("$f")
    done
    shopt -u nullglob
    (( ${#ready[@]} )) || return 0
    $icechart predict "${ready[@]}" -o "$out" --lock "$lock"
}

while :; do
    round
    rc=$?
    case $rc in
        0) ;;
        75) echo "watch-folder: another run holds $lock; next round" >&2 ;;
        *) echo "watch-folder: round ended with exit $rc" >&2 ;;
    esac
    if (( interval == 0 )); then
        [[ $rc == 75 ]] && exit 0
        exit "$rc"
    fi
    (( stop )) && exit 0
    sleep "$interval" & wait $!
    (( stop )) && exit 0
done
