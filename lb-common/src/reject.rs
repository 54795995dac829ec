//! The rate limit of ICMP rejects: a token bucket per CPU, so a flood of
//! spoofed packets to a Service without endpoints cannot turn the node
//! into an ICMP cannon. The figures are the kernel's own limit on the ICMP
//! errors it sends (`net.ipv4.icmp_msgs_per_sec` 1,000 and
//! `net.ipv4.icmp_msgs_burst` 50, per CPU here where the kernel's is
//! global: a per-CPU bucket needs no atomics on the packet path).

use bytemuck::{Pod, Zeroable};

/// The per-CPU bucket (per-CPU array of one), private to each load.
pub const REJECT_TOKENS: &str = "lb_reject_tokens";

/// Rejects per second per CPU once the burst is spent.
pub const REJECT_RATE_PER_S: u64 = 1_000;
/// Rejects sent back to back before the rate applies.
pub const REJECT_BURST: u64 = 50;
const NS_PER_TOKEN: u64 = 1_000_000_000 / REJECT_RATE_PER_S;

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct RejectBucket {
    pub tokens: u64,
    /// The clock (`bpf_ktime_get_ns`) up to which tokens were added.
    pub refilled_ns: u64,
}

impl RejectBucket {
    /// Takes a token at `now_ns` if there is one (refilling first).
    #[inline(always)]
    pub fn take(&mut self, now_ns: u64) -> bool {
        let earned = now_ns.saturating_sub(self.refilled_ns) / NS_PER_TOKEN;
        if earned > 0 {
            if self.tokens + earned >= REJECT_BURST {
                self.tokens = REJECT_BURST;
                self.refilled_ns = now_ns;
            } else {
                self.tokens += earned;
                self.refilled_ns += earned * NS_PER_TOKEN;
            }
        }
        if self.tokens == 0 {
            return false;
        }
        self.tokens -= 1;
        true
    }
}

#[cfg(feature = "user")]
// SAFETY: repr(C), bytemuck Pod: what aya::Pod requires.
unsafe impl aya::Pod for RejectBucket {}

const _: () = assert!(size_of::<RejectBucket>() == 16);

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    #[test]
    fn a_burst_then_the_rate() {
        let mut bucket = RejectBucket::default();
        let start = 10_000 * MS;
        let sent = (0..200).filter(|_| bucket.take(start)).count();
        assert_eq!(sent as u64, REJECT_BURST, "a fresh bucket holds one burst");
        // One token per millisecond afterwards (1,000/s).
        let sent = (1..=100).filter(|ms| bucket.take(start + ms * MS)).count();
        assert_eq!(sent, 100);
        assert!(!bucket.take(start + 100 * MS));
        // Idle for long: never more than a burst.
        let later = start + 60_000 * MS;
        let sent = (0..200).filter(|_| bucket.take(later)).count();
        assert_eq!(sent as u64, REJECT_BURST);
    }

    #[test]
    fn a_second_of_flood_sends_about_the_rate() {
        let mut bucket = RejectBucket::default();
        let start = 5_000 * MS;
        // 200,000 packets over one second.
        let sent = (0..200_000u64)
            .filter(|i| bucket.take(start + i * 5_000))
            .count() as u64;
        assert!(
            (REJECT_RATE_PER_S..=REJECT_RATE_PER_S + REJECT_BURST).contains(&sent),
            "{sent}"
        );
    }
}
