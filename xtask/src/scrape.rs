//! An agent's HTTP endpoints (`/healthz`, `/livez`, `/metrics`) for the
//! watch tests and the bench: a free loopback address to serve them on
//! (and the test API server's ports), and reading them the way a probe or
//! Prometheus does.

use std::{
    io::{Read, Write},
    net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream},
    time::Duration,
};

use anyhow::{Context, Result};

/// A loopback address no one listens on now (the kernel's pick), so that
/// parallel agents and servers never fight over their default ports.
pub fn free_loopback_address() -> Result<SocketAddr> {
    let listener =
        TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).context("binding a loopback port")?;
    Ok(listener.local_addr()?)
}

/// `GET path`: the status code and the body; `None` while nothing listens
/// (the agent is starting).
pub fn http_get(address: SocketAddr, path: &str) -> Result<Option<(u16, String)>> {
    let Ok(mut stream) = TcpStream::connect_timeout(&address, Duration::from_secs(2)) else {
        return Ok(None);
    };
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    // HTTP/1.0: the answer comes whole, never chunked.
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {address}\r\n\r\n")?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer)?;
    let status = answer
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or(0);
    let body = answer
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .unwrap_or_default();
    Ok(Some((status, body)))
}

/// The value of the first sample `name` (whatever its labels) in
/// Prometheus text.
pub fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .find_map(|line| {
            let rest = line.strip_prefix(name)?;
            let value = match rest.strip_prefix('{') {
                Some(labelled) => labelled.split_once("} ")?.1,
                None => rest.strip_prefix(' ')?,
            };
            value.trim().parse().ok()
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_are_found_with_or_without_labels() {
        let text = "# HELP a_total x\n# TYPE a_total counter\na_total 3\n\
                    b_count{ip_family=\"IPv4\"} 7\nb_count_other 1\n";
        assert_eq!(metric(text, "a_total"), Some(3.0));
        assert_eq!(metric(text, "b_count"), Some(7.0));
        assert_eq!(metric(text, "b"), None);
        assert_eq!(metric(text, "missing"), None);
    }
}
