#!/usr/bin/env bash
# Pretend "hosts" on one Linux machine: network namespaces joined by a bridge, so Open MPI
# runs one rank per namespace over real TCP (scripts/netns-mpirun.sh uses this). As root:
#
#   scripts/netns-hosts.sh up N       N hosts twobp-h0..twobp-h<N-1> (removes leftovers first)
#   scripts/netns-hosts.sh down       removes every namespace of the harness, killing what runs in them
#   scripts/netns-hosts.sh cut H      pulls host H's cable: its bridge port goes down, packets vanish
#   scripts/netns-hosts.sh heal H     plugs it back in
#   scripts/netns-hosts.sh reachable A B   exit status 0 when host A reaches host B
#   scripts/netns-hosts.sh pids       what still runs inside the hosts ("pid namespace command", one a line)
#
# Host i is the namespace twobp-h<i> with one interface, eth0 = 10.213.0.<i+1>/24, whose other
# end is port<i> on bridge br0 inside the namespace twobp-net. Nothing is added to the root
# namespace: the addresses exist only inside the hosts, so no traffic reaches any other network.
# Each host sees the others by name through /etc/netns/<host>/hosts (which `ip netns exec`
# mounts over /etc/hosts). TWOBP_NETNS_PREFIX (default twobp) and TWOBP_NETNS_SUBNET
# (default 10.213.0) change the names and the addresses.
set -euo pipefail

prefix="${TWOBP_NETNS_PREFIX:-twobp}"
subnet="${TWOBP_NETNS_SUBNET:-10.213.0}"
bridge_namespace="$prefix-net"

fail() { echo "netns-hosts: $*" >&2; exit 1; }

host_name() { echo "$prefix-h$1"; }

harness_namespaces() {
    ip netns list | awk '{print $1}' | grep -E "^$prefix-(net|h[0-9]+)\$" || true
}

require_root() {
    [ "$(id -u)" = 0 ] || fail "needs root (network namespaces): run as root or with sudo"
}

down() {
    local namespace pid
    for namespace in $(harness_namespaces); do
        for pid in $(ip netns pids "$namespace" 2>/dev/null); do kill -KILL "$pid" 2>/dev/null || true; done
        ip netns del "$namespace" 2>/dev/null || true
        rm -rf "/etc/netns/$namespace"
    done
    [ -z "$(harness_namespaces)" ] || fail "could not remove namespaces: $(harness_namespaces | tr '\n' ' ')"
}

up() {
    local count="$1" i host
    [[ "$count" =~ ^[0-9]+$ ]] && [ "$count" -ge 1 ] && [ "$count" -le 64 ] || fail "up needs a host count from 1 to 64, got '$count'"
    down
    ip netns add "$bridge_namespace" || fail "cannot create network namespaces (ip netns add failed; needs root and CAP_SYS_ADMIN)"
    ip -n "$bridge_namespace" link add br0 type bridge
    ip -n "$bridge_namespace" link set br0 up
    local hosts_file="127.0.0.1 localhost"$'\n'
    for ((i = 0; i < count; i++)); do hosts_file+="$subnet.$((i + 1)) $(host_name "$i")"$'\n'; done
    for ((i = 0; i < count; i++)); do
        host="$(host_name "$i")"
        ip netns add "$host"
        ip -n "$bridge_namespace" link add "port$i" type veth peer name eth0 netns "$host"
        ip -n "$bridge_namespace" link set "port$i" master br0 up
        ip -n "$host" addr add "$subnet.$((i + 1))/24" dev eth0
        ip -n "$host" link set eth0 up
        ip -n "$host" link set lo up
        # Give up on a connection after about 12 s of unanswered retransmissions instead of
        # Linux's 15 minutes (tcp_retries2 is per namespace): with a link cut, Open MPI's daemons
        # learn that a peer is lost even while they have data in flight to it.
        ip netns exec "$host" sh -c "echo ${TWOBP_NETNS_TCP_RETRIES:-5} > /proc/sys/net/ipv4/tcp_retries2"
        mkdir -p "/etc/netns/$host"
        printf '%s' "$hosts_file" > "/etc/netns/$host/hosts"
    done
    # Host 0 must reach every other before MPI starts: a TCP connection to a closed port is
    # refused at once when the peer is reachable and hangs when it is not (no ping needed).
    for ((i = 1; i < count; i++)); do
        reachable "$(host_name 0)" "$subnet.$((i + 1))" || fail "host 0 cannot reach $(host_name "$i") at $subnet.$((i + 1))"
    done
}

reachable() {
    local output
    output="$(ip netns exec "$1" timeout 5 bash -c "exec 3<>/dev/tcp/$2/9" 2>&1)" && return 0
    [[ "$output" == *"Connection refused"* ]]
}

port_state() {
    local host="$1" state="$2"
    [[ "$host" =~ ^[0-9]+$ ]] || fail "$3 needs a host number, got '$host'"
    ip -n "$bridge_namespace" link set "port$host" "$state" || fail "no host $host (is the harness up?)"
}

pids() {
    local namespace pid
    for namespace in $(harness_namespaces); do
        for pid in $(ip netns pids "$namespace" 2>/dev/null); do
            echo "$pid $namespace $(tr '\0' ' ' < "/proc/$pid/cmdline" 2>/dev/null | cut -c1-200)"
        done
    done
}

require_root
case "${1:-}" in
    up) up "${2:-}" ;;
    down) down ;;
    cut) port_state "${2:-}" down cut ;;
    heal) port_state "${2:-}" up heal ;;
    pids) pids ;;
    reachable) reachable "$(host_name "${2:?reachable needs two host numbers}")" "$subnet.$((${3:?reachable needs two host numbers} + 1))" ;;
    *) fail "usage: netns-hosts.sh up N | down | cut H | heal H | reachable A B | pids" ;;
esac
