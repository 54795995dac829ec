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
    /// A non-first IPv4 fragment: no ports to match on.
    PassFragment = 2, "pass_fragment";
    /// Not TCP or UDP.
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
}

/// Number of counters in the stats map.
pub const REASON_COUNT: u32 = 17;

const _: () = assert!(Reason::ALL.len() as u32 == REASON_COUNT);
