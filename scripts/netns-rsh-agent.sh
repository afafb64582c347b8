#!/usr/bin/env bash
# Open MPI's "ssh" into a host of scripts/netns-hosts.sh (mpirun --mca plm_rsh_agent this-script):
# mpirun calls it as `netns-rsh-agent.sh HOST orted ...`, exactly as it would call ssh. It enters
# HOST's network namespace and a UTS namespace of its own named HOST (so MPI_Get_processor_name
# and mpirun's messages name the host), and runs the command through a shell, as sshd would:
# mpirun quotes its arguments for a remote shell.
set -euo pipefail
host="${1:?usage: netns-rsh-agent.sh HOST COMMAND...}"
shift
exec ip netns exec "$host" unshare --uts sh -c 'hostname "$1" && shift && exec sh -c "$*"' netns-rsh-agent "$host" "$@"
