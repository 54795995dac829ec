//! East-west: cgroup sock_addr hooks for the node's own processes and pods.
//! Translation happens once, at connect()/sendmsg() time, with no per-packet
//! cost; recvmsg()/getpeername() translate the backend back to the frontend
//! the application asked for.

use aya_ebpf::{
    EbpfContext as _,
    bindings::bpf_sock_addr,
    helpers::generated::{bpf_get_socket_cookie, bpf_set_retval},
    macros::cgroup_sock_addr,
    programs::SockAddrContext,
};
use lb_common::{
    PROTO_TCP, PROTO_UDP, SCOPE_INTERNAL, SockRevNat4Key, SockRevNat4Value, flow_hash::socket_hash,
    reason::Reason,
};

use crate::{maps::SOCK_REVNAT4, select, stats};

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
    #[inline(always)]
    fn ip4(&self) -> u32 {
        // SAFETY: the context the kernel passed us.
        unsafe { core::ptr::read_volatile(&raw const (*self.sa).user_ip4) }
    }
    /// The port in network order (the kernel keeps it in the low 16 bits).
    #[inline(always)]
    fn port(&self) -> u16 {
        // SAFETY: as above.
        unsafe { core::ptr::read_volatile(&raw const (*self.sa).user_port) as u16 }
    }
    #[inline(always)]
    fn protocol(&self) -> u32 {
        // SAFETY: as above.
        unsafe { core::ptr::read_volatile(&raw const (*self.sa).protocol) }
    }
    #[inline(always)]
    fn set(&self, addr_be: u32, port_be: u16) {
        // SAFETY: as above; both fields are writable for these hooks.
        unsafe {
            core::ptr::write_volatile(&raw mut (*self.sa).user_ip4, addr_be);
            core::ptr::write_volatile(&raw mut (*self.sa).user_port, port_be as u32);
        }
    }
}

#[inline(always)]
fn proto(addr: &Addr) -> Option<u8> {
    match addr.protocol() {
        p if p == PROTO_TCP as u32 => Some(PROTO_TCP),
        p if p == PROTO_UDP as u32 => Some(PROTO_UDP),
        _ => None,
    }
}

/// connect4 / sendmsg4: a frontend destination becomes a backend.
#[inline(always)]
fn translate(ctx: &SockAddrContext, counted: Reason) -> i32 {
    let addr = Addr::new(ctx);
    let Some(proto) = proto(&addr) else {
        return ALLOW;
    };
    let (fe_addr, fe_port) = (addr.ip4(), addr.port());
    let Some(fe) = select::frontend(fe_addr, fe_port, proto, SCOPE_INTERNAL) else {
        return ALLOW;
    };
    if fe.backend_count == 0 {
        stats::count(select::empty_reason(&fe));
        // SAFETY: a plain helper call; connect4/sendmsg4 may set the errno.
        unsafe { bpf_set_retval(-ECONNREFUSED) };
        return DENY;
    }
    // SAFETY: a plain helper call on our context.
    let cookie = unsafe { bpf_get_socket_cookie(ctx.as_ptr()) };
    let backend = match select::backend(&fe, socket_hash(cookie, fe_addr, fe_port)) {
        Ok((_, backend)) => backend,
        Err(reason) => {
            stats::count(reason);
            return DENY;
        }
    };
    let key = SockRevNat4Key {
        cookie,
        backend_addr_be: backend.addr_be,
        backend_port_be: backend.port_be,
        _pad: 0,
    };
    let value = SockRevNat4Value {
        frontend_addr_be: fe_addr,
        frontend_port_be: fe_port,
        _pad: 0,
        service_id: fe.service_id,
    };
    // On failure (memory pressure) the socket still reaches the backend;
    // only getpeername()/recvmsg() would show the backend's address.
    let _ = SOCK_REVNAT4.insert(&key, &value, 0);
    addr.set(backend.addr_be, backend.port_be);
    stats::count(counted);
    ALLOW
}

/// recvmsg4 / getpeername4: a backend source becomes the frontend again.
#[inline(always)]
fn reverse(ctx: &SockAddrContext, counted: Reason) -> i32 {
    let addr = Addr::new(ctx);
    // SAFETY: a plain helper call on our context.
    let cookie = unsafe { bpf_get_socket_cookie(ctx.as_ptr()) };
    let key = SockRevNat4Key {
        cookie,
        backend_addr_be: addr.ip4(),
        backend_port_be: addr.port(),
        _pad: 0,
    };
    // SAFETY: copied out at once.
    if let Some(value) = unsafe { SOCK_REVNAT4.get(&key).copied() } {
        addr.set(value.frontend_addr_be, value.frontend_port_be);
        stats::count(counted);
    }
    ALLOW
}
