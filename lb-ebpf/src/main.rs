#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]

#[cfg(target_arch = "bpf")]
mod probe {
    use aya_ebpf::{bindings::xdp_action, macros::xdp, programs::XdpContext};
    #[xdp]
    pub fn lb_xdp(_ctx: XdpContext) -> u32 {
        xdp_action::XDP_PASS
    }
}

#[cfg(target_arch = "bpf")]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[cfg(not(target_arch = "bpf"))]
fn main() {}
