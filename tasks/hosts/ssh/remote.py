"""The shell side of an SSH job: POSIX sh scripts run on the host, and their command lines.

A job lives in a private directory `/tmp/ccs-<job key>.XXXXXXXX` (mktemp -d: mode 0700, owned by
the job's account) holding the plugin, its parameters and `pgid`, the id of the process group
(and session) the plugin runs in. Whoever holds the job id can find that directory again from
another connection (a control worker, the sitter) to pause, resume or stop the group.
"""

import hashlib
import re

TMP = "/tmp"

# One job, start to end, in one exec channel, as the job's account (through sudo for another
# one). Arguments: the directory of jobs, the job key, the marker, the script's suffix, the
# account, then the job's variables and its interpreter. Standard input: the parameters as one
# line of JSON, then the plugin. The marker (random per job) opens both output streams, so
# whatever the login shell printed before it is dropped, and a trailer on stdout ends the job's
# own output:
#   "<marker> exit <code> [stopped]"   the job ran ("stopped": an operator stopped it)
#   "<marker> stopped-before-start"     a stop came first: nothing ran
#   "<marker> setup-failed <what>"      the directory or its files could not be made
# The job runs in its own session and process group (pgid recorded), in its directory, with a
# clean environment. The shell's own notices ("Terminated") go to /dev/null, the job's stderr
# to the channel. The trailer is written before the directory is removed: if the channel is
# gone (its worker died), the directory stays for the sitter's pull to find and report.
RUN = """
t=$1 k=$2 m=$3 x=$4 a=$5; shift 5
printf '%s\\n' "$m"; printf '%s\\n' "$m" >&2
end() { printf '%s %s\\n' "$m" "$1"; exit 0; }
mark="$t/ccs-$k.stop"
if [ -d "$mark" ] && [ ! -L "$mark" ] && [ -O "$mark" ]; then
    rmdir "$mark"; end stopped-before-start
fi
d=$(mktemp -d "$t/ccs-$k.XXXXXXXX") || end "setup-failed directory"
cd "$d" || end "setup-failed directory"
IFS= read -r p && printf '%s' "$p" > params.json && cat > "job$x" || {
    cd / && rm -rf -- "$d"; end "setup-failed files"
}
u=$USER h=$HOME
if [ "$u" != "$a" ]; then u=$(id -un); h=$(getent passwd "$u" | cut -d: -f6); fi
exec 3>&2 2>/dev/null
setsid -w env -i HOME="${h:-/}" USER="$u" LOGNAME="$u" "$@" "job$x" < params.json 2>&3 3>&- &
g=$!
echo "$g" > pgid
wait "$g"
c=$? s=
[ -e stop ] && s=stopped
printf '%s exit %s %s\\n' "$m" "$c" "$s" || exit 1
cd / && rm -rf -- "$d"
"""

# Find a job's directory by its key and act on its process group:
#   pause / resume   SIGSTOP / SIGCONT, keeping the paused time (the timeout excludes it)
#   stop / kill      SIGTERM, SIGKILL after the grace; stop leaves a mark: an operator did it
#   status, reap     "running <paused s>" or "paused <paused s>"; reap also removes the
#                    directory of a job whose processes have all ended
# Prints the state, "ended" (no process left) or "unknown" (no such job here). A stop for a job
# not started yet leaves a mark, a directory `ccs-<key>.stop`: the job never starts.
CONTROL = """
key=$1; op=$2; grace=$3; d=
own() { [ -d "$1" ] && [ ! -L "$1" ] && [ -O "$1" ]; }
for x in "$4"/ccs-"$key".*; do
    if [ -O "$x" ] && [ -f "$x/pgid" ]; then d=$x; fi
done
if [ -z "$d" ]; then
    mark="$4/ccs-$key.stop"
    if [ "$op" = stop ] && { mkdir -m 700 "$mark" 2>/dev/null || own "$mark"; }; then
        echo stopping
    else
        echo unknown
    fi
    exit 0
fi
g=$(cat "$d/pgid")
case $g in ''|*[!0-9]*) echo unknown; exit 0;; esac
sig() { env kill -s "$1" -- "-$g" 2>/dev/null; }
zombies_only() {  # the group's members are all in its session: unreaped zombies are gone
    s=$(ps -o stat= -s "$g" 2>/dev/null) && ! printf '%s\n' "$s" | grep -qv '^Z'
}
alive() { sig 0 && ! zombies_only; }
paused() {
    t=0
    [ -f "$d/paused_total" ] && while read -r s; do t=$((t + s)); done < "$d/paused_total"
    echo "$t"
}
if ! alive; then
    [ "$op" = reap ] && rm -rf -- "$d"
    echo ended; exit 0
fi
case $op in
pause)
    [ -e "$d/paused" ] || date +%s > "$d/paused"
    sig STOP; echo paused ;;
resume)
    if [ -e "$d/paused" ]; then
        echo $(( $(date +%s) - $(cat "$d/paused") )) >> "$d/paused_total"; rm -f "$d/paused"
    fi
    sig CONT; echo running ;;
stop|kill)
    [ "$op" = stop ] && : > "$d/stop"
    sig TERM; sig CONT
    n=0
    while alive && [ "$n" -lt $((grace * 10)) ]; do sleep 0.1; n=$((n + 1)); done
    alive && sig KILL
    echo stopping ;;
*)
    if [ -e "$d/paused" ]; then echo "paused $(paused)"; else echo "running $(paused)"; fi ;;
esac
"""

# Keep key characters readable; a hash keeps keys unique whatever the id holds.
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")


def job_key(job_id: str) -> str:
    """A file-name-safe key for a job id, unique to it."""
    digest = hashlib.sha256(job_id.encode()).hexdigest()[:12]
    return f"{_UNSAFE.sub('-', job_id)[:80]}-{digest}"


def sh(script: str, *args: str) -> list[str]:
    return ["sh", "-c", script, "ccs", *args]


def run_argv(key: str, marker: str, suffix: str, account: str, env: dict[str, str],
             interpreter: str) -> list[str]:
    assignments = [f"{name}={value}" for name, value in env.items()]
    return sh(RUN, TMP, key, marker, suffix, account, *assignments, interpreter)


def control_argv(key: str, op: str, grace: float) -> list[str]:
    return sh(CONTROL, key, op, str(max(1, round(grace))), TMP)
