//! East-west: cgroup sock_addr hooks for the node's own processes and pods.
//! Translation happens once, at connect()/sendmsg() time, with no per-packet
//! cost; recvmsg()/getpeername() translate the backend back to the frontend
//! the application asked for.
//!
//! The decision ([`decide`]) is one function shared by `lb_connect4`,
//! `lb_sendmsg4` and `lb_trace_socket`, an XDP program that is never
//! attached: `lb trace` runs it with `BPF_PROG_TEST_RUN` on a packet whose
//! destination is what connect()/sendmsg() would be called with (the kernel
//! has no test run for sock_addr programs).

use aya_ebpf::{
    EbpfContext as _,
    bindings::{bpf_sock_addr, xdp_action},
    helpers::generated::{
        bpf_get_netns_cookie, bpf_get_socket_cookie, bpf_set_retval, bpf_xdp_get_buff_len,
    },
    macros::{cgroup_sock_addr, xdp},
    programs::{SockAddrContext, XdpContext},
};
use lb_common::{
    AFFINITY_CLIENT_NETNS, Endpoint4, PROTO_SCTP, PROTO_TCP, PROTO_UDP, SCOPE_INTERNAL,
    SockRevNat4Key, SockRevNat4Value, flow_hash::socket_hash, reason::Reason,
};

use crate::{
    affinity,
    maps::{SOCK_REVNAT4, TRACE_REQUEST},
    nat, parse, readers, select, service_cidr,
    source_ranges::{self, SocketCheck},
    stats, trace,
};

const ECONNREFUSED: i32 = 111;
/// Let the syscall proceed.
const ALLOW: i32 = 1;
/// Fail the syscall (with `EPERM`, or the errno set by `bpf_set_retval`).
const DENY: i32 = 0;

#[cgroup_sock_addr(connect4)]
pub fn lb_connect4(ctx: SockAddrContext) -> i32 {
    translate(&ctx, Reason::SockConnect)
}

#[cgroup_sock_addr(sendmsg4)]
pub fn lb_sendmsg4(ctx: SockAddrContext) -> i32 {
    translate(&ctx, Reason::SockSendmsg)
}

#[cgroup_sock_addr(recvmsg4)]
pub fn lb_recvmsg4(ctx: SockAddrContext) -> i32 {
    reverse(&ctx, Reason::SockRecvmsgRevnat)
}

#[cgroup_sock_addr(getpeername4)]
pub fn lb_getpeername4(ctx: SockAddrContext) -> i32 {
    reverse(&ctx, Reason::SockGetpeernameRevnat)
}

/// The context fields, read and written as the 32-bit accesses the verifier
/// requires.
struct Addr {
    sa: *mut bpf_sock_addr,
}

impl Addr {
    #[inline(always)]
    fn new(ctx: &SockAddrContext) -> Self {
        Self { sa: ctx.sock_addr }
    }
    /// The address and port, in network order (the kernel keeps the port
    /// in the low 16 bits).
    #[inline(always)]
    fn endpoint(&self) -> Endpoint4 {
        // SAFETY: the context the kernel passed us.
        unsafe {
            Endpoint4::new(
                core::ptr::read_volatile(&raw const (*self.sa).user_ip4),
                core::ptr::read_volatile(&raw const (*self.sa).user_port) as u16,
            )
        }
    }
    /// The address the socket is bound to (network order), 0 when it is
    /// not bound yet: the kernel picks an unbound socket's source after
    /// this hook, by route.
    #[inline(always)]
    fn bound_source(&self) -> u32 {
        // SAFETY: as above; `sk` is the hook's socket, never null here.
        unsafe {
            let sk = core::ptr::read_volatile(&raw const (*self.sa).__bindgen_anon_1.sk);
            core::ptr::read_volatile(&raw const (*sk).src_ip4)
        }
    }
    #[inline(always)]
    fn protocol(&self) -> u32 {
        // SAFETY: as above.
        unsafe { core::ptr::read_volatile(&raw const (*self.sa).protocol) }
    }
    #[inline(always)]
    fn set(&self, to: Endpoint4) {
        // SAFETY: as above; both fields are writable for these hooks.
        unsafe {
            core::ptr::write_volatile(&raw mut (*self.sa).user_ip4, to.addr_be);
            core::ptr::write_volatile(&raw mut (*self.sa).user_port, to.port_be as u32);
        }
    }
}

#[inline(always)]
fn proto(addr: &Addr) -> Option<u8> {
    match addr.protocol() {
        p if p == PROTO_TCP as u32 => Some(PROTO_TCP),
        p if p == PROTO_UDP as u32 => Some(PROTO_UDP),
        // SCTP sockets are translated as TCP's are, where the kernel runs
        // these hooks for them (unproven here: this machine's kernel has
        // no SCTP sockets).
        p if p == PROTO_SCTP as u32 => Some(PROTO_SCTP),
        _ => None,
    }
}

/// What a socket hook does with a connect()/sendmsg() destination.
pub enum Decision {
    /// Not a frontend: the syscall proceeds untouched.
    Pass,
    /// Translate the destination to `backend`; `check_source`: the socket
    /// is unbound and the frontend has source ranges, so its first packet
    /// is checked once the kernel has chosen its source.
    Translate {
        service_id: u32,
        backend: Endpoint4,
        cookie: u64,
        check_source: bool,
        /// The selection window, left once the socket's translation is
        /// written (or the decision dropped).
        reading: readers::Reading,
    },
    /// Refuse the syscall (`ECONNREFUSED`): the frontend has no endpoint
    /// this traffic may use (`reason` says which case).
    Refuse { service_id: u32, reason: Reason },
    /// Fail the syscall with `EPERM`: the source is outside the Service's
    /// loadBalancerSourceRanges (kube-proxy drops these packets; a
    /// netfilter drop of a local sender's packet is `EPERM` too, and no
    /// hook can make a connect() time out).
    Forbid { service_id: u32, reason: Reason },
    /// The Maglev table named a backend that does not exist.
    Fail(Reason),
    /// No frontend, and `--service-cidr`'s rules turn the destination
    /// away (`service_cidr`): a ClusterIP's unexposed port is refused
    /// (`ECONNREFUSED`, as the ICMP port unreachable of kube-proxy's
    /// reject), another address of a service CIDR fails with `EPERM` (a
    /// netfilter drop of a local sender's packet).
    Unallocated(Reason),
}

/// The socket hooks' decision for a destination: the internal-scope
/// frontend, then the backend the socket's cookie hashes to. `cookie` is
/// only asked for when a backend is selected (a helper call the hooks skip
/// for non-service traffic), `netns` (the client, for session affinity)
/// only when the frontend has affinity, `source` (the client's address)
/// only when it has source ranges.
#[inline(always)]
pub fn decide(
    dst: Endpoint4,
    proto: u8,
    cookie: impl FnOnce() -> u64,
    netns: impl FnOnce() -> u64,
    source: impl FnOnce() -> u32,
) -> Decision {
    let Some(fe) = select::frontend(dst, proto, SCOPE_INTERNAL) else {
        return match service_cidr::unmatched(dst.addr_be) {
            Some(reason) => Decision::Unallocated(reason),
            None => Decision::Pass,
        };
    };
    let check_source = match source_ranges::check_socket(&fe, source) {
        Ok(SocketCheck::Passed) => false,
        Ok(SocketCheck::AtFirstPacket) => true,
        Err(reason) => {
            return Decision::Forbid {
                service_id: fe.service_id,
                reason,
            };
        }
    };
    if fe.backend_count == 0 {
        return Decision::Refuse {
            service_id: fe.service_id,
            reason: select::empty_reason(&fe),
        };
    }
    // Inside the selection window until the caller has written the
    // translation (`Decision::Translate` carries it), or at once.
    let reading = readers::enter();
    let cookie = cookie();
    trace::socket_hash();
    let pick = || select::backend(&fe, socket_hash(cookie, dst.addr_be, dst.port_be));
    let client = if fe.affinity_timeout_s() != 0 {
        netns()
    } else {
        0
    };
    match affinity::select(&fe, AFFINITY_CLIENT_NETNS, client, pick) {
        Ok((_, backend)) => {
            let backend = backend.endpoint();
            trace::backend(backend);
            Decision::Translate {
                service_id: fe.service_id,
                backend,
                cookie,
                check_source,
                reading,
            }
        }
        Err(reason) => Decision::Fail(reason),
    }
}

/// connect4 / sendmsg4: a frontend destination becomes a backend.
#[inline(always)]
fn translate(ctx: &SockAddrContext, counted: Reason) -> i32 {
    let addr = Addr::new(ctx);
    let Some(proto) = proto(&addr) else {
        return ALLOW;
    };
    let frontend = addr.endpoint();
    // SAFETY: a plain helper call on our context.
    let cookie = || unsafe { bpf_get_socket_cookie(ctx.as_ptr()) };
    // SAFETY: as above.
    let netns = || unsafe { bpf_get_netns_cookie(ctx.as_ptr()) };
    let source = || addr.bound_source();
    let (service_id, backend, cookie, reading) =
        match decide(frontend, proto, cookie, netns, source) {
            Decision::Pass => return ALLOW,
            Decision::Translate {
                service_id,
                backend,
                cookie,
                check_source,
                reading,
            } => {
                if check_source
                    && let Err(reason) =
                        source_ranges::check_at_first_packet(ctx, service_id, backend, proto)
                {
                    stats::count(reason);
                    stats::count_service(service_id, reason);
                    return DENY;
                }
                (service_id, backend, cookie, reading)
            }
            Decision::Refuse { service_id, reason } => {
                stats::count(reason);
                stats::count_service(service_id, reason);
                // SAFETY: a plain helper call; connect4/sendmsg4 may set the errno.
                unsafe { bpf_set_retval(-ECONNREFUSED) };
                return DENY;
            }
            Decision::Forbid { service_id, reason } => {
                stats::count(reason);
                stats::count_service(service_id, reason);
                // DENY's own errno: EPERM.
                return DENY;
            }
            Decision::Fail(reason) => {
                stats::count(reason);
                return DENY;
            }
            Decision::Unallocated(reason) => {
                stats::count(reason);
                if reason == Reason::RejectClusterIpPort {
                    // SAFETY: a plain helper call; connect4/sendmsg4 may set the errno.
                    unsafe { bpf_set_retval(-ECONNREFUSED) };
                }
                return DENY;
            }
        };
    let key = SockRevNat4Key::new(cookie, backend);
    let value = SockRevNat4Value::new(frontend, service_id);
    // Written only when it changes: an unconnected UDP socket passes here
    // at every sendmsg() to the same frontend, and a write to the shared
    // LRU costs more than the lookup (which also keeps the entry recent).
    // On failure (memory pressure) the socket still reaches the backend;
    // only getpeername()/recvmsg() would show the backend's address.
    // SAFETY: copied out at once.
    if unsafe { SOCK_REVNAT4.get(&key).copied() } != Some(value) {
        let _ = SOCK_REVNAT4.insert(&key, &value, 0);
    }
    drop(reading);
    addr.set(backend);
    stats::count(counted);
    stats::count_service(service_id, counted);
    if crate::debug::enabled() {
        aya_log_ebpf::debug!(
            ctx,
            "socket hook: reason {} service {}",
            counted as u32,
            service_id
        );
    }
    ALLOW
}

/// `lb trace` for traffic from the node's own processes and pods: the
/// packet's destination and protocol are what connect()/sendmsg() would be
/// called with, `TRACE_REQUEST[0].cookie` the socket's cookie. Runs
/// [`decide`] exactly as the hooks do; records, writes no reverse
/// translation and counts nothing. A translated packet leaves with the
/// backend as its destination (what the socket would send); refused ones
/// are dropped.
#[xdp]
pub fn lb_trace_socket(ctx: XdpContext) -> u32 {
    let (action, reason) = trace_socket(&ctx);
    trace::finish(reason);
    action
}

#[inline(always)]
fn trace_socket(ctx: &XdpContext) -> (u32, Reason) {
    // SAFETY: a plain helper call on our context.
    let buff_len = || unsafe { bpf_xdp_get_buff_len(ctx.ctx) } as usize;
    let pkt = match parse::xdp_ipv4(ctx.data(), ctx.data_end(), buff_len) {
        Ok(pkt) => pkt,
        Err(reason) => return (xdp_action::XDP_PASS, reason),
    };
    let frontend = pkt.flow().dst;
    let cookie = TRACE_REQUEST.get(0).map_or(0, |req| req.cookie);
    let netns = TRACE_REQUEST.get(0).map_or(0, |req| req.netns_cookie);
    // The packet's source stands for the socket's: the address it is bound
    // to, or the one the kernel routes it from (checked at its first packet).
    let source = pkt.flow().src.addr_be;
    match decide(frontend, pkt.proto, || cookie, || netns, || source) {
        Decision::Pass => (xdp_action::XDP_PASS, Reason::PassNoService),
        Decision::Translate { backend, .. } => {
            crate::masquerade_rules::trace_socket(source, backend.addr_be);
            nat::rewrite_xdp_destination(&pkt, frontend, backend);
            // A stream socket (TCP, SCTP) is translated at connect(), a
            // datagram socket (unless connected) at each sendmsg().
            let reason = if pkt.proto != PROTO_UDP {
                Reason::SockConnect
            } else {
                Reason::SockSendmsg
            };
            (xdp_action::XDP_PASS, reason)
        }
        Decision::Refuse { reason, .. }
        | Decision::Forbid { reason, .. }
        | Decision::Fail(reason)
        | Decision::Unallocated(reason) => (xdp_action::XDP_DROP, reason),
    }
}

/// recvmsg4 / getpeername4: a backend source becomes the frontend again.
#[inline(always)]
fn reverse(ctx: &SockAddrContext, counted: Reason) -> i32 {
    let addr = Addr::new(ctx);
    // SAFETY: a plain helper call on our context.
    let cookie = unsafe { bpf_get_socket_cookie(ctx.as_ptr()) };
    let key = SockRevNat4Key::new(cookie, addr.endpoint());
    // SAFETY: copied out at once.
    if let Some(value) = unsafe { SOCK_REVNAT4.get(&key).copied() } {
        addr.set(value.frontend());
        stats::count(counted);
    }
    ALLOW
}
