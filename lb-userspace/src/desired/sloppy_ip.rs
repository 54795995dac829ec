//! Addresses read as kube-proxy reads them: k8s.io/utils/net's
//! `ParseIPSloppy`, Go's `net.ParseIP` except that an IPv4 part may carry
//! leading zeros, read as plain decimal (`010.000.000.001` is 10.0.0.1,
//! never octal). Go accepted them before 1.17 and objects stored then still
//! hold them, so kube-proxy keeps accepting them; everything
//! `net.ParseIP` refuses after the zeros are stripped stays refused
//! (`256.1.1.1`, `0256.1.1.1`, `1.2.3`).

use std::net::IpAddr;

/// `ParseIPSloppy`: the strict parse, else the same text with each dotted
/// IPv4 group's leading zeros stripped (upstream's `matchZeros` regex: the
/// four groups end the text and follow its start or a colon, so
/// `::ffff:010.0.0.1` is stripped too).
pub(super) fn parse_ip_sloppy(text: &str) -> Option<IpAddr> {
    if let Ok(addr) = text.parse() {
        return Some(addr);
    }
    strip_zeros(text)?.parse().ok()
}

/// The text with the leading zeros of its trailing dotted quad removed;
/// `None` when it has no such quad (then there is nothing to strip).
fn strip_zeros(text: &str) -> Option<String> {
    let (prefix, quad) = match text.rfind(':') {
        Some(colon) => text.split_at(colon + 1),
        None => ("", text),
    };
    let groups: Vec<&str> = quad.split('.').collect();
    let digits = |g: &&str| !g.is_empty() && g.bytes().all(|b| b.is_ascii_digit());
    if groups.len() != 4 || !groups.iter().all(digits) {
        return None;
    }
    let stripped: Vec<&str> = groups
        .iter()
        .map(|g| match g.trim_start_matches('0') {
            "" => "0",
            rest => rest,
        })
        .collect();
    Some(format!("{prefix}{}", stripped.join(".")))
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use super::*;

    fn v4(text: &str) -> Option<Ipv4Addr> {
        match parse_ip_sloppy(text)? {
            IpAddr::V4(v4) => Some(v4),
            IpAddr::V6(_) => None,
        }
    }

    /// Upstream: `ParseIPSloppy` strips leading zeros of each IPv4 group
    /// and reads what is left as decimal, never octal.
    #[test]
    fn parse_ip_sloppy_reads_leading_zeros_as_decimal() {
        assert_eq!(v4("010.000.000.001"), Some(Ipv4Addr::new(10, 0, 0, 1)));
        assert_eq!(v4("1.2.3.04"), Some(Ipv4Addr::new(1, 2, 3, 4)));
        assert_eq!(v4("0010.096.0.010"), Some(Ipv4Addr::new(10, 96, 0, 10)));
        assert_eq!(v4("000.000.000.000"), Some(Ipv4Addr::UNSPECIFIED));
        assert_eq!(v4("192.168.1.10"), Some(Ipv4Addr::new(192, 168, 1, 10)));
    }

    /// Upstream: after stripping, `net.ParseIP` decides; what it refuses
    /// (a group over 255, too few or too many groups, empty groups, hex,
    /// a prefix length) `ParseIPSloppy` refuses too.
    #[test]
    fn parse_ip_sloppy_refuses_what_net_parse_ip_refuses() {
        for bad in [
            "256.1.1.1",
            "0256.1.1.1",
            "1.2.3.0256",
            "1.2.3",
            "1.2.3.4.5",
            "1..2.3",
            "0x1.2.3.4",
            "01.02.03.04/24",
            "",
            "010.0.0.1 ",
            "a.b.c.d",
        ] {
            assert_eq!(parse_ip_sloppy(bad), None, "{bad:?}");
        }
    }

    /// Upstream's `matchZeros` also matches after a colon: the IPv4 tail of
    /// an IPv6 text is stripped; IPv6 groups are hex and never touched.
    #[test]
    fn parse_ip_sloppy_strips_the_ipv4_tail_of_an_ipv6_text() {
        assert_eq!(
            parse_ip_sloppy("::ffff:010.000.000.001"),
            Some(IpAddr::V6(Ipv4Addr::new(10, 0, 0, 1).to_ipv6_mapped()))
        );
        assert_eq!(
            parse_ip_sloppy("fd00::0010"),
            Some(IpAddr::V6(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 0x10)))
        );
    }
}
