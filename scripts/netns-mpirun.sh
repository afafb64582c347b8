#!/usr/bin/env bash
# mpirun across pretend hosts on one machine: one rank per network namespace, TCP only.
#
#   scripts/netns-mpirun.sh N PROGRAM [ARGUMENTS...]      (as root)
#   scripts/netns-mpirun.sh 2 .build/debug/twobp verify --transport mpi --stages 2 --schedule zb-v
#
# Creates N hosts with scripts/netns-hosts.sh (removing leftovers of an earlier run first), runs
# mpirun in host 0 with a hostfile of one slot per host, so rank i runs on host i, and removes
# the hosts again however it ends (exit, Ctrl-C, SIGTERM). Ranks reach each other only through
# the hosts' veth interfaces (--mca btl tcp,self: no shared memory) and are started the way a
# cluster starts them, through an rsh agent (scripts/netns-rsh-agent.sh instead of ssh).
# Daemons report straight to mpirun (no tree spawn, direct routing), and their connections to
# mpirun send TCP keepalives after TWOBP_NETNS_KEEPALIVE seconds of silence (default 5), so a
# host whose link is cut is declared lost within about twice that.
#
# Exits with mpirun's status. When processes still run inside the hosts TWOBP_NETNS_GRACE
# seconds (default 30) after mpirun exited, it prints "netns-mpirun: left behind: ..." for each
# and kills them; its status is then 125 if mpirun's was 0. Set TWOBP_NETNS_MPIRUN_ARGS for more mpirun options (e.g. "-x VAR").
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
count="${1:?usage: netns-mpirun.sh N PROGRAM [ARGUMENTS...]}"
shift
[ "$#" -ge 1 ] || { echo "usage: netns-mpirun.sh N PROGRAM [ARGUMENTS...]" >&2; exit 2; }
prefix="${TWOBP_NETNS_PREFIX:-twobp}"
subnet="${TWOBP_NETNS_SUBNET:-10.213.0}"
keepalive="${TWOBP_NETNS_KEEPALIVE:-5}"

# One harness at a time on this machine: the namespace names are fixed.
exec 9>"/run/lock/$prefix-netns.lock"
flock -n 9 || { echo "netns-mpirun: another run holds /run/lock/$prefix-netns.lock" >&2; exit 1; }

cleanup() { "$here/netns-hosts.sh" down || true; }
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
"$here/netns-hosts.sh" up "$count"

hostfile="$(mktemp "/tmp/$prefix-hostfile.XXXXXX")"
trap 'rm -f "$hostfile"; cleanup' EXIT
for ((i = 0; i < count; i++)); do echo "$prefix-h$i slots=1" >> "$hostfile"; done

program="$1"
shift
if [[ "$program" == */* ]]; then program="$(cd "$(dirname "$program")" && pwd)/$(basename "$program")"; fi

# Extra options are split on spaces on purpose.
# shellcheck disable=SC2206
extra=(${TWOBP_NETNS_MPIRUN_ARGS:-})
status=0
ip netns exec "$prefix-h0" unshare --uts sh -c 'hostname "$1" && shift && exec "$@"' netns-mpirun "$prefix-h0" \
    mpirun --allow-run-as-root --hostfile "$hostfile" -np "$count" --map-by node \
    --mca plm_rsh_agent "$here/netns-rsh-agent.sh" --mca plm_rsh_no_tree_spawn 1 --mca routed direct \
    --mca pml ob1 --mca btl tcp,self --mca btl_tcp_if_include "$subnet.0/24" --mca oob_tcp_if_include "$subnet.0/24" \
    --mca oob_tcp_keepalive_time "$keepalive" --mca oob_tcp_keepalive_intvl 1 --mca oob_tcp_keepalive_probes 3 \
    -x OPENBLAS_NUM_THREADS="${OPENBLAS_NUM_THREADS:-1}" "${extra[@]}" \
    "$program" "$@" </dev/null || status=$?

# A daemon on a host cut off from mpirun ends by itself once its connection times out. What
# still runs TWOBP_NETNS_GRACE seconds (default 30) after mpirun was left behind: say so, then
# the trap removes it with the hosts.
grace="${TWOBP_NETNS_GRACE:-30}"
ended=$SECONDS
while left="$("$here/netns-hosts.sh" pids)" && [ -n "$left" ] && [ $((SECONDS - ended)) -lt "$grace" ]; do sleep 0.2; done
if [ -z "$left" ] && [ $((SECONDS - ended)) -ge 1 ]; then
    echo "netns-mpirun: the last process in the hosts ended $((SECONDS - ended)) s after mpirun" >&2
fi
if [ -n "$left" ]; then
    while IFS= read -r line; do echo "netns-mpirun: left behind: $line" >&2; done <<< "$left"
    [ "$status" != 0 ] || status=125
fi
exit "$status"
