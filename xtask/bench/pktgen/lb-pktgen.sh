#!/usr/bin/env bash
# Drive the kernel's pktgen from a traffic machine at a Service frontend of
# an lb node (a NodePort or a LoadBalancer IP), in one of two shapes:
#
#   new          every packet a new 5-tuple (random source port and address
#                in a range): the connection table's insert path, what a
#                SYN flood or a DNS storm costs the node.
#   established  a fixed set of flows (FLOWS of them, FLOWLEN packets each
#                before moving on): the lookup path of long-lived traffic.
#
# Run it as root on the SENDER, not on the lb node. It needs the pktgen
# module (modprobe pktgen) and a NIC wired to the node. It sends UDP (pktgen
# has no TCP), so point it at a UDP Service port.
#
# Example: 60 s of new flows at the NodePort 30053 of node 192.0.2.1, whose
# MAC on this link is aa:bb:cc:dd:ee:ff, from eth1 with 2 threads:
#
#   ./lb-pktgen.sh -i eth1 -d 192.0.2.1 -m aa:bb:cc:dd:ee:ff -p 30053 \
#       -s new -t 2 -D 60
#
# Then read `lb stats` on the node (new and established translations, drops
# by reason) and the receive rate at the backends; run the same command
# against the same node under kube-proxy to compare. See README.md here.
set -euo pipefail

usage() {
	cat <<USAGE
usage: $0 -i DEV -d DST_IP -m DST_MAC -p DST_PORT [-s new|established]
          [-t THREADS] [-D SECONDS] [-z PKT_SIZE] [-S SRC_RANGE_START]
          [-N SRC_ADDRESSES] [-F FLOWS] [-L FLOWLEN] [-r RATE_PPS]
USAGE
	exit 2
}

DEV="" DST_IP="" DST_MAC="" DST_PORT=""
SHAPE="new" THREADS=1 DURATION=30 PKT_SIZE=64
SRC_START="198.18.0.1" SRC_COUNT=256 FLOWS=1024 FLOWLEN=8 RATE=0

while getopts "i:d:m:p:s:t:D:z:S:N:F:L:r:h" opt; do
	case "$opt" in
	i) DEV="$OPTARG" ;;
	d) DST_IP="$OPTARG" ;;
	m) DST_MAC="$OPTARG" ;;
	p) DST_PORT="$OPTARG" ;;
	s) SHAPE="$OPTARG" ;;
	t) THREADS="$OPTARG" ;;
	D) DURATION="$OPTARG" ;;
	z) PKT_SIZE="$OPTARG" ;;
	S) SRC_START="$OPTARG" ;;
	N) SRC_COUNT="$OPTARG" ;;
	F) FLOWS="$OPTARG" ;;
	L) FLOWLEN="$OPTARG" ;;
	r) RATE="$OPTARG" ;;
	*) usage ;;
	esac
done
[[ -n "$DEV" && -n "$DST_IP" && -n "$DST_MAC" && -n "$DST_PORT" ]] || usage
[[ "$SHAPE" == new || "$SHAPE" == established ]] || usage
[[ $EUID -eq 0 ]] || { echo "run as root (pktgen is configured through /proc/net/pktgen)" >&2; exit 1; }

if [[ ! -d /proc/net/pktgen ]]; then
	modprobe pktgen 2>/dev/null || {
		echo "no pktgen here: load the module (modprobe pktgen; CONFIG_NET_PKTGEN)" >&2
		exit 1
	}
fi

# The last address of the source range, for src_max.
src_end() {
	local a b c d n
	IFS=. read -r a b c d <<<"$1"
	n=$(((a << 24) + (b << 16) + (c << 8) + d + $2 - 1))
	echo "$(((n >> 24) & 255)).$(((n >> 16) & 255)).$(((n >> 8) & 255)).$((n & 255))"
}

pg() {
	# pktgen answers every write with a "Result:" line in the file itself.
	local file="$1"
	shift
	echo "$*" >"$file"
	if ! grep -q "Result: OK" "$file" 2>/dev/null && [[ "$file" != */pgctrl ]]; then
		echo "pktgen refused '$*' on $file: $(grep Result: "$file")" >&2
		exit 1
	fi
}

stop_all() { echo stop >/proc/net/pktgen/pgctrl 2>/dev/null || true; }
trap stop_all EXIT INT TERM

count=0 # 0: run until stopped
for ((t = 0; t < THREADS; t++)); do
	thread="/proc/net/pktgen/kpktgend_$t"
	dev="$DEV@$t"
	pg "$thread" "rem_device_all"
	pg "$thread" "add_device $dev"
	file="/proc/net/pktgen/$dev"
	pg "$file" "count $count"
	pg "$file" "pkt_size $PKT_SIZE"
	pg "$file" "clone_skb 0"
	pg "$file" "burst 32"
	pg "$file" "queue_map_min $t"
	pg "$file" "queue_map_max $t"
	pg "$file" "dst_mac $DST_MAC"
	pg "$file" "dst $DST_IP"
	pg "$file" "udp_dst_min $DST_PORT"
	pg "$file" "udp_dst_max $DST_PORT"
	pg "$file" "src_min $SRC_START"
	pg "$file" "src_max $(src_end "$SRC_START" "$SRC_COUNT")"
	if [[ "$RATE" != 0 ]]; then
		pg "$file" "ratep $((RATE / THREADS))"
	fi
	# A random source address and port: with nothing else, (almost)
	# every packet opens a flow the node has not seen.
	pg "$file" "flag IPSRC_RND"
	pg "$file" "flag UDPSRC_RND"
	pg "$file" "udp_src_min 1024"
	pg "$file" "udp_src_max 65535"
	if [[ "$SHAPE" == established ]]; then
		# FLOWS flows of FLOWLEN packets each, revisited in turn: every
		# packet after a flow's first meets an established entry.
		pg "$file" "flows $FLOWS"
		pg "$file" "flowlen $FLOWLEN"
		pg "$file" "flag FLOW_SEQ"
	fi
done

echo "pktgen: $SHAPE flows to $DST_IP:$DST_PORT from $DEV, $THREADS thread(s), ${DURATION}s"
echo start >/proc/net/pktgen/pgctrl &
sleep "$DURATION"
stop_all
wait || true

total=0
for ((t = 0; t < THREADS; t++)); do
	line=$(grep -A2 "Result:" "/proc/net/pktgen/$DEV@$t" | tr '\n' ' ')
	echo "thread $t: $line"
	pps=$(grep -o '[0-9]*pps' "/proc/net/pktgen/$DEV@$t" | head -1 | sed 's/pps$//')
	total=$((total + ${pps:-0}))
done
echo "sent: $total packets/s in total (compare with the rate the backends receive)"
