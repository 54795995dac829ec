//! The datapath's debug log (aya-log): every verdict is logged when the
//! datapath is loaded with `bpf_log`, and nothing at all otherwise (the log
//! calls are pruned by the verifier).

mod common;

use std::{
    net::Ipv4Addr,
    path::Path,
    sync::{Arc, Mutex},
};

use common::*;
use lb::datapath::LoadOptions;
use lb_common::{FE_KIND_NODE_PORT, FE_KIND_SHIFT, PROTO_TCP, SCOPE_EXTERNAL, reason::Reason};

const CLIENT: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 7);
const NODE: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 10);
const BACKEND: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 11);

/// Keeps every record's message.
struct Capture(Arc<Mutex<Vec<String>>>);

impl log::Log for Capture {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }
    fn log(&self, record: &log::Record<'_>) {
        self.0.lock().unwrap().push(record.args().to_string());
    }
    fn flush(&self) {}
}

/// Loads a datapath, installs one NodePort, runs a SYN and a packet for no
/// service through XDP, and returns what the log received.
fn logged(bpf_log: bool) -> Vec<String> {
    ensure_bpffs();
    let pin_dir = Path::new("/sys/fs/bpf").join(unique_name());
    let opts = LoadOptions {
        max_tables: 8,
        ct_entries: 4096,
        bpf_log,
        ..LoadOptions::default()
    };
    let mut t = TestDatapath::load_at_with(pin_dir, opts).expect("loading the datapath");
    let key = frontend_key(NODE, 30080, PROTO_TCP, SCOPE_EXTERNAL);
    let backends = [(1, backend(BACKEND, 8080, PROTO_TCP))];
    install_service(
        &mut t.maps,
        key,
        1,
        0,
        FE_KIND_NODE_PORT << FE_KIND_SHIFT,
        &backends,
    );

    let records = Arc::new(Mutex::new(Vec::new()));
    let mut logger = t.dp_mut().logger(Capture(records.clone())).expect("logger");
    t.run_xdp(&tcp_frame(CLIENT, 40000, NODE, 30080, true, b""));
    t.run_xdp(&tcp_frame(CLIENT, 40000, NODE, 22, true, b""));
    logger.flush();
    records.lock().unwrap().clone()
}

#[test]
fn with_bpf_log_every_verdict_is_logged() {
    let records = logged(true);
    let expect = |reason: Reason| format!("lb_xdp_ingress: reason {}", reason as u32);
    assert_eq!(records.len(), 2, "{records:?}");
    assert!(
        records[0].starts_with(&expect(Reason::DnatNew)),
        "{records:?}"
    );
    assert!(
        records[1].starts_with(&expect(Reason::PassNoService)),
        "{records:?}"
    );
}

#[test]
fn without_it_nothing_is_logged() {
    assert_eq!(logged(false), Vec::<String>::new());
}
