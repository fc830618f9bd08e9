"""The shell side of an SSH job: POSIX sh scripts run on the host, and their command lines.

A job lives in a private directory `/tmp/ccs-<job key>.XXXXXXXX` (mktemp -d: mode 0700, owned by
the job's account) holding the plugin, its parameters and `pgid`, the id of the process group
(and session) the plugin runs in. Whoever holds the job id can find that directory again from
another connection (a control worker, the sitter) to pause, resume or stop the group.
"""

import hashlib
import re

TMP = "/tmp"

# Run "$@" in the background (so that it is not a process group leader and setsid makes it one
# without forking) and wait for it: its exit status becomes ours, 128+N if signal N killed it.
# The shell's own notices ("Terminated") go to /dev/null, the job's stderr to the channel.
LAUNCH = 'exec 3>&2 2>/dev/null; "$@" 2>&3 3>&- & wait $!'

# In its own session and process group (pgid = $$, recorded), in its directory, with a clean
# environment: HOME, USER and LOGNAME of the account, then the variables and command given.
WRAPPER = """
d=$1; shift
cd "$d" || exit 125
echo $$ > pgid || exit 125
u=$(id -un); h=$(getent passwd "$u" | cut -d: -f6)
exec env -i HOME="${h:-/}" USER="$u" LOGNAME="$u" "$@" < params.json
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

# The job's private directory, unless a stop came first: then "stopped" (and the mark goes).
MKDIR = """
mark="$1/ccs-$2.stop"
if [ -d "$mark" ] && [ ! -L "$mark" ] && [ -O "$mark" ]; then
    rmdir "$mark"; echo stopped; exit 0
fi
mktemp -d "$1/ccs-$2.XXXXXXXX"
"""

# At the end of a job: was it stopped by an operator? Then remove its directory.
FINISH = '[ -e "$1/stop" ] && echo stopped; rm -rf -- "$1"'

# Keep key characters readable; a hash keeps keys unique whatever the id holds.
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")


def job_key(job_id: str) -> str:
    """A file-name-safe key for a job id, unique to it."""
    digest = hashlib.sha256(job_id.encode()).hexdigest()[:12]
    return f"{_UNSAFE.sub('-', job_id)[:80]}-{digest}"


def sh(script: str, *args: str) -> list[str]:
    return ["sh", "-c", script, "ccs", *args]


def mkdir_argv(key: str) -> list[str]:
    return sh(MKDIR, TMP, key)


def write_argv(path: str) -> list[str]:
    return sh('umask 077 && cat > "$1"', path)


def run_argv(workdir: str, env: dict[str, str], interpreter: str, script: str) -> list[str]:
    assignments = [f"{name}={value}" for name, value in env.items()]
    wrapped = ["setsid", "-w", *sh(WRAPPER, workdir, *assignments, interpreter, script)]
    return sh(LAUNCH, *wrapped)


def control_argv(key: str, op: str, grace: float) -> list[str]:
    return sh(CONTROL, key, op, str(max(1, round(grace))), TMP)


def finish_argv(workdir: str) -> list[str]:
    return sh(FINISH, workdir)
