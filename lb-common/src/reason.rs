//! Stable verdict and drop reasons: the index of each per-CPU counter in the
//! stats map. Numbers never change meaning; new reasons go at the end.

macro_rules! reasons {
    ($($(#[doc = $doc:literal])* $variant:ident = $value:literal, $name:literal;)*) => {
        #[repr(u32)]
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum Reason {
            $($(#[doc = $doc])* $variant = $value,)*
        }

        impl Reason {
            /// Every reason, in counter order.
            pub const ALL: &'static [Reason] = &[$(Reason::$variant,)*];

            /// A stable, machine-friendly name (`lb stats`, metrics labels).
            pub const fn name(self) -> &'static str {
                match self {
                    $(Reason::$variant => $name,)*
                }
            }

            pub const fn from_index(index: u32) -> Option<Reason> {
                match index {
                    $($value => Some(Reason::$variant),)*
                    _ => None,
                }
            }
        }
    };
}

reasons! {
    /// Not IPv4 (ARP, IPv6, ...): passed to the stack untouched.
    PassNotIpv4 = 0, "pass_not_ipv4";
    /// Too short for the headers it claims, or a bad IPv4 header: passed
    /// untouched so the kernel's own checks count and drop it.
    PassMalformed = 1, "pass_malformed";
    /// An IPv4 fragment left untranslated: a later fragment of a datagram
    /// no hook translates (found by its first: no frontend or flow), or
    /// one whose first was not seen, to an address other than the node's;
    /// any fragment of SCTP or another protocol.
    PassFragment = 2, "pass_fragment";
    /// Not TCP, UDP or SCTP.
    PassOtherProtocol = 3, "pass_other_protocol";
    /// No frontend at this destination.
    PassNoService = 4, "pass_no_service";
    /// A new flow translated to a backend chosen by the Maglev table.
    DnatNew = 5, "dnat_new";
    /// A packet of a known flow translated by its connection-table entry.
    DnatEstablished = 6, "dnat_established";
    /// A reply translated back to the frontend address.
    ReverseNat = 7, "reverse_nat";
    /// The Service has endpoints, but none this traffic may use (policy
    /// Local without a local endpoint): dropped, as kube-proxy does.
    DropNoLocalEndpoint = 8, "drop_no_local_endpoint";
    /// The Service has no endpoints at all: rejected.
    RejectNoEndpoints = 9, "reject_no_endpoints";
    /// The Maglev table pointed at a backend id that does not exist (an
    /// agent bug or a torn update): dropped, never forwarded blindly.
    DropBackendMissing = 10, "drop_backend_missing";
    /// Rewriting the packet failed (checksum helper error).
    DropRewriteFailed = 11, "drop_rewrite_failed";
    /// Socket hook: connect() to a frontend redirected to a backend.
    SockConnect = 12, "sock_connect";
    /// Socket hook: sendmsg() to a frontend redirected to a backend.
    SockSendmsg = 13, "sock_sendmsg";
    /// Socket hook: recvmsg() source restored to the frontend.
    SockRecvmsgRevnat = 14, "sock_recvmsg_revnat";
    /// Socket hook: getpeername() answered with the frontend.
    SockGetpeernameRevnat = 15, "sock_getpeername_revnat";
    /// Reply path: a packet with no connection-table entry, passed untouched.
    PassNoConnection = 16, "pass_no_connection";
    // connection table (issue 11)
    /// A TCP packet of an unknown flow that does not open one (no SYN, or
    /// SYN+ACK): passed untranslated and nothing created, so the kernel's
    /// own conntrack keeps translating connections set up before lb (by
    /// kube-proxy's rules), where kube-proxy drops what its conntrack calls
    /// invalid.
    PassCtNotOpening = 17, "pass_ct_not_opening";
    /// A new flow whose reply entry's key is held by another flow (the
    /// same client port reaching the same backend through another
    /// frontend): refused, never overwriting the first flow's entry.
    DropCtReplyClash = 18, "drop_ct_reply_clash";
    /// A new flow whose entries could not be inserted (the kernel refused
    /// the memory): dropped, the client retries.
    DropCtInsertFailed = 19, "drop_ct_insert_failed";
    /// A packet of a known flow whose frontend belongs to another Service
    /// now (or a masqueraded flow whose port another flow claimed), and
    /// that is not a SYN that may choose again: dropped (a flow whose
    /// backend is gone is `drop_ct_backend_gone`).
    DropCtStale = 20, "drop_ct_stale";
    /// An ICMP reject over the per-CPU rate limit: dropped instead.
    DropRejectRateLimited = 21, "drop_reject_rate_limited";
    /// Event (counted besides the packet's verdict): a flow's missing reply
    /// entry was restored from its original entry.
    CtReplyRestored = 22, "ct_reply_restored";
    /// Event: a flow's missing original entry was restored from its reply entry.
    CtOriginalRestored = 23, "ct_original_restored";
    /// Event: a flow became assured and moved to the established table.
    CtPromoted = 24, "ct_promoted";
    /// Event: a SYN of a stale flow chose a backend again.
    CtReselected = 25, "ct_reselected";
    // source ranges
    /// A new connection to a LoadBalancer IP from a source outside the
    /// Service's loadBalancerSourceRanges: dropped, as kube-proxy's
    /// firewall chain drops it.
    DropSourceRange = 26, "drop_source_range";
    // connection table, continued
    /// Event: a new flow took over the reply key of a closed (or expired)
    /// flow through another frontend, whose entries both went.
    CtReplyTakenOver = 27, "ct_reply_taken_over";
    // sctp and service CIDRs
    /// A new connection to an address inside a `--service-cidr` that is no
    /// allocated ClusterIP: dropped, as kube-proxy's nftables rule "Drop
    /// traffic to unallocated ClusterIPs" drops it.
    DropUnallocatedClusterIp = 28, "drop_unallocated_cluster_ip";
    /// A new connection to an allocated ClusterIP on a port or protocol
    /// its Service does not expose: rejected (ICMP port unreachable, or
    /// `ECONNREFUSED` from the socket hooks), as kube-proxy's nftables
    /// rule "Reject traffic to invalid ports of ClusterIPs" rejects it.
    RejectClusterIpPort = 29, "reject_cluster_ip_port";
    // snat
    /// A new masqueraded flow found no free source port toward its backend
    /// within its tries (`snat::SNAT_PORT_TRIES`): dropped, never sharing
    /// another flow's translated tuple (the client retries).
    DropSnatPortExhausted = 30, "drop_snat_port_exhausted";
    /// A reply to a masqueraded flow (backend -> node address and SNAT
    /// port) translated back at ingress: destination the client, source
    /// the frontend.
    ReverseSnat = 31, "reverse_snat";
    /// Event: kube-proxy would masquerade this new flow, but its backend is
    /// on this node, whose pods' replies no hook translates back yet: the
    /// client's address is kept (README, "Not built yet").
    SnatSkippedLocalBackend = 32, "snat_skipped_local_backend";
    /// Event: a masqueraded flow's reply entry was evicted and another
    /// flow claimed its port since: the flow's original entry goes (a SYN
    /// or datagram claims a new port, anything else is `drop_ct_stale`),
    /// so no two flows share a translated tuple.
    SnatPortLost = 33, "snat_port_lost";
    // icmp errors and fragments
    /// A later IPv4 fragment (no ports) addressed to the node's address
    /// whose datagram's first fragment this hook has not seen (not yet,
    /// or its entry was evicted): dropped, as Cilium drops it
    /// (`DROP_FRAG_NOT_FOUND`), since it cannot be translated as its
    /// datagram is. Fragments to other addresses pass (`pass_fragment`).
    DropFragUnseen = 34, "drop_frag_unseen";
    /// Event: a first fragment's ports could not be remembered (the kernel
    /// refused the memory): it is translated, its later fragments will be
    /// `drop_frag_unseen`.
    FragRememberFailed = 35, "frag_remember_failed";
    /// An ICMP error from the client's side about a reply of a translated
    /// flow (destination unreachable, time exceeded), sent on to the
    /// backend as the error about its own packet (a frag-needed lowers
    /// the pod's path MTU).
    IcmpErrorToBackend = 36, "icmp_error_to_backend";
    /// An ICMP error from a backend (or a router before it) about a
    /// request of a translated flow, sent on to the client from the
    /// frontend, quoting the client's packet (no pod address leaks).
    IcmpErrorToClient = 37, "icmp_error_to_client";
    // listed backends
    /// A packet of an established TCP connection (or SCTP association)
    /// whose backend no Service port lists any more (its pod is gone), or
    /// whose backend id names another address now: dropped, never sent to
    /// an address that may be someone else's pod now. A SYN (an INIT)
    /// chooses again (`ct_reselected`); a backend still listed
    /// (terminating, not ready) keeps its flows.
    DropCtBackendGone = 38, "drop_ct_backend_gone";
}

/// Number of counters in the stats map.
pub const REASON_COUNT: u32 = 39;

const _: () = assert!(Reason::ALL.len() as u32 == REASON_COUNT);
