//! The host-wide listing (`socksec::list`, what `socksec ls` prints) against single
//! queries (host tier): for every connection the test made, the answer built from sock_diag
//! facts must equal the answer `socksec::query` gives on the descriptor itself, including
//! port-specific policies that cover some connections and not others.

mod common;

use std::net::{TcpListener, TcpStream, UdpSocket};

use common::{Pair, ip, require_root};
use socksec::ColdSources;
use socksec::QueryTemplate;
use socksec::flow::Transport;

const TCP_EACH: usize = 20;
const UDP: usize = 5;

#[test]
fn listing_answers_equal_single_queries() {
    if !require_root("listing_answers_equal_single_queries") {
        return;
    }
    let pair = Pair::new();
    let b = pair.b.clone();
    let listeners = pair.run_in(&b, || {
        ["10.99.0.2:5100", "10.99.0.2:5101", "[fd99::2]:5102"]
            .map(|a| TcpListener::bind(a).unwrap())
    });
    let a = pair.a.clone();
    let (tcp, udp) = pair.run_in(&a, || {
        let mut tcp = Vec::new();
        for (port, n) in [
            ("10.99.0.2:5100", TCP_EACH),
            ("10.99.0.2:5101", TCP_EACH),
            ("[fd99::2]:5102", TCP_EACH / 2),
        ] {
            for _ in 0..n {
                tcp.push(TcpStream::connect(port).unwrap());
            }
        }
        let udp: Vec<UdpSocket> = (0..UDP)
            .map(|i| {
                let s = UdpSocket::bind("10.99.0.1:0").unwrap();
                s.connect(format!("10.99.0.2:{}", 5200 + i)).unwrap();
                s
            })
            .collect();
        (tcp, udp)
    });
    // Installed after the connections exist: a required ESP template without SA for port
    // 5101 only, both directions.
    for line in [
        "add src 10.99.0.1/32 dst 10.99.0.2/32 proto tcp dport 5101 dir out \
         tmpl proto esp mode transport reqid 7",
        "add src 10.99.0.2/32 dst 10.99.0.1/32 proto tcp sport 5101 dir in \
         tmpl proto esp mode transport reqid 7",
    ] {
        let mut args = vec!["-n", a.as_str(), "xfrm", "policy"];
        args.extend(line.split_whitespace());
        ip(&args);
    }

    let template = socksec::listing_template();
    let (listed, direct) = pair.run_in(&a, move || {
        let listed =
            socksec::list_with(&[Transport::Tcp, Transport::Udp], |_| true, &ColdSources).unwrap();
        let mut direct = Vec::new();
        for s in &tcp {
            let info = socksec::query(s, &template).unwrap();
            direct.push((s.local_addr().unwrap(), s.peer_addr().unwrap(), info));
        }
        for s in &udp {
            let peer = s.peer_addr().unwrap();
            let t = QueryTemplate {
                peer: Some(peer),
                ..template.clone()
            };
            let info = socksec::query(s, &t).unwrap();
            direct.push((s.local_addr().unwrap(), peer, info));
        }
        drop((tcp, udp));
        (listed, direct)
    });
    drop(listeners);

    // Namespace a holds exactly the test's sockets.
    assert_eq!(listed.len(), 2 * TCP_EACH + TCP_EACH / 2 + UDP);
    let me = std::process::id();
    let mut covered = 0;
    for (local, peer, info) in &direct {
        let entry = listed
            .iter()
            .find(|h| h.socket.local == *local && h.socket.peer() == Some(*peer))
            .unwrap_or_else(|| panic!("{local} -> {peer} is not listed"));
        assert_eq!(entry.owners.first().map(|o| o.pid), Some(me));
        let answer = entry.answer.as_ref().expect("a connection is answered");
        assert_eq!(
            serde_json::to_value(answer).unwrap(),
            serde_json::to_value(info).unwrap(),
            "listing and query disagree on {local} -> {peer}"
        );
        assert!(!answer.is_secured());
        let kinds: Vec<String> = serde_json::to_value(&answer.reasons)
            .unwrap()
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["kind"].as_str().unwrap().to_string())
            .collect();
        if peer.port() == 5101 {
            covered += 1;
            assert!(kinds.iter().all(|k| k == "sa_missing"), "{kinds:?}");
        } else {
            assert!(kinds.iter().all(|k| k == "no_policy"), "{kinds:?}");
        }
    }
    assert_eq!(covered, TCP_EACH);
    let peerless = listed.iter().filter(|h| h.answer.is_err()).count();
    assert_eq!(peerless, 0, "every socket in a has a peer");
}
