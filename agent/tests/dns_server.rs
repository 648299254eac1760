//! The DNS server's request path on loopback, over real sockets: the
//! answers a client sees (flags, rcodes, truncation and TCP), and a
//! bounded fuzz run of malformed packets after which it must still answer.
//!
//! The fuzz run lasts `HAWSER_DNS_FUZZ_SECONDS` (default 10) and prints its
//! seed; `HAWSER_DNS_FUZZ_SEED` replays one.

use hawser_agent::dns::handler::Handler;
use hawser_agent::dns::metrics::Metrics;
use hawser_agent::dns::upstream::Upstream;
use hawser_agent::dns::zone::Zone;
use hawser_runtime::ObjectKey;
use hickory_server::proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_server::proto::rr::{Name, RData, RecordType};
use hickory_server::proto::serialize::binary::BinDecodable;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use rand::{Rng, SeedableRng};
use serde_json::json;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

struct TestServer {
    udp: SocketAddr,
    tcp: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A server on 127.0.0.1 with `web` (ClusterIP, named port) and `many`
/// (headless, 100 ready endpoints: an answer too big for 512 bytes), and
/// no upstream servers.
async fn start() -> TestServer {
    let mut zone = Zone::new("cluster.local", 5).unwrap();
    let web: Service = serde_json::from_value(json!({"metadata": {"name": "web", "namespace": "default"},
        "spec": {"clusterIP": "10.96.3.4", "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]}}))
    .unwrap();
    zone.set_service(&ObjectKey::new("default", "web"), Some(&web), []);
    let many: Service = serde_json::from_value(json!({"metadata": {"name": "many", "namespace": "default"},
        "spec": {"clusterIP": "None", "ports": [{"name": "http", "port": 80}]}}))
    .unwrap();
    let endpoints: Vec<serde_json::Value> =
        (0..100).map(|i| json!({"addresses": [format!("10.244.{}.{}", i / 200, 1 + i % 200)], "conditions": {"ready": true}})).collect();
    let slice: EndpointSlice = serde_json::from_value(json!({"metadata": {"name": "many-1", "namespace": "default"},
        "addressType": "IPv4", "ports": [{"name": "http", "port": 8080}], "endpoints": endpoints}))
    .unwrap();
    zone.set_service(&ObjectKey::new("default", "many"), Some(&many), [&slice]);
    let metrics = Arc::new(Metrics::register(&mut Default::default()));
    let handler = Handler {
        zone: Arc::new(RwLock::new(zone)),
        zone_version: Default::default(),
        upstream: Arc::new(Upstream::new("", &[], metrics.clone())),
        metrics,
    };
    let server = hawser_agent::dns::listen(handler, &["127.0.0.1:0".parse().unwrap()]).await.unwrap();
    let address = server.addresses[0];
    let task = tokio::spawn(async move {
        let _ = server.run().await;
    });
    TestServer { udp: address, tcp: address, task }
}

fn query(id: u16, name: &str, qtype: RecordType, edns: bool) -> Vec<u8> {
    let mut message = Message::new(id, MessageType::Query, OpCode::Query);
    message.metadata.recursion_desired = true;
    message.add_query(Query::query(Name::from_ascii(name).unwrap(), qtype));
    if edns {
        let mut e = Edns::new();
        e.set_max_payload(4096);
        message.edns = Some(e);
    }
    message.to_vec().unwrap()
}

/// Sends `packet` and waits up to `wait` for the answer.
async fn exchange_udp(server: SocketAddr, packet: &[u8], wait: Duration) -> Option<Message> {
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    socket.send_to(packet, server).await.unwrap();
    let mut buf = vec![0u8; 65535];
    let n = tokio::time::timeout(wait, socket.recv(&mut buf)).await.ok()?.ok()?;
    Some(Message::from_bytes(&buf[..n]).expect("the server's answer parses"))
}

async fn exchange_tcp(server: SocketAddr, packet: &[u8]) -> Option<Message> {
    let mut stream = TcpStream::connect(server).await.unwrap();
    stream.write_all(&(packet.len() as u16).to_be_bytes()).await.unwrap();
    stream.write_all(packet).await.unwrap();
    let mut len = [0u8; 2];
    tokio::time::timeout(Duration::from_secs(2), stream.read_exact(&mut len)).await.ok()?.ok()?;
    let mut body = vec![0u8; u16::from_be_bytes(len) as usize];
    stream.read_exact(&mut body).await.ok()?;
    Some(Message::from_bytes(&body).expect("the server's answer parses"))
}

#[tokio::test]
async fn answers_carry_the_flags_and_codes_resolvers_expect() {
    let server = start().await;
    let answer = exchange_udp(server.udp, &query(7, "web.default.svc.cluster.local.", RecordType::A, false), Duration::from_secs(2))
        .await
        .expect("an answer");
    assert_eq!(answer.metadata.id, 7);
    assert_eq!(answer.metadata.response_code, ResponseCode::NoError);
    assert!(answer.metadata.authoritative, "cluster names are answered authoritatively");
    assert!(answer.metadata.recursion_available);
    assert_eq!(answer.answers.len(), 1);
    assert_eq!(answer.answers[0].data, RData::A("10.96.3.4".parse::<std::net::Ipv4Addr>().unwrap().into()));
    assert_eq!(answer.answers[0].ttl, 5);

    let missing =
        exchange_udp(server.udp, &query(8, "nope.default.svc.cluster.local.", RecordType::A, true), Duration::from_secs(2)).await.unwrap();
    assert_eq!(missing.metadata.response_code, ResponseCode::NXDomain);
    assert_eq!(missing.authorities.len(), 1, "negative answers carry the SOA, so resolvers cache them");
    assert!(missing.edns.is_some(), "an EDNS query gets an EDNS answer");

    let nodata = exchange_udp(server.udp, &query(9, "web.default.svc.cluster.local.", RecordType::TXT, false), Duration::from_secs(2))
        .await
        .unwrap();
    assert_eq!((nodata.metadata.response_code, nodata.answers.len()), (ResponseCode::NoError, 0));

    // Without upstream servers, other names fail rather than hang.
    let outside = exchange_udp(server.udp, &query(10, "example.test.", RecordType::A, false), Duration::from_secs(5)).await.unwrap();
    assert_eq!(outside.metadata.response_code, ResponseCode::ServFail);
}

#[tokio::test]
async fn a_big_answer_is_truncated_over_udp_and_whole_over_tcp() {
    let server = start().await;
    let name = "many.default.svc.cluster.local.";
    let udp = exchange_udp(server.udp, &query(1, name, RecordType::A, false), Duration::from_secs(2)).await.unwrap();
    assert!(udp.metadata.truncation, "100 addresses do not fit 512 bytes: TC set");
    let tcp = exchange_tcp(server.tcp, &query(2, name, RecordType::A, false)).await.expect("a TCP answer");
    assert!(!tcp.metadata.truncation);
    assert_eq!(tcp.answers.len(), 100);
}

#[tokio::test]
async fn malformed_queries_get_formerr_with_their_id() {
    let server = start().await;
    let valid = query(0x4242, "web.default.svc.cluster.local.", RecordType::A, false);
    let mut truncated = valid.clone();
    truncated.truncate(20);
    // The question's first label claims 80 bytes: not a length (> 63).
    let mut bad_label = valid.clone();
    bad_label[12] = 80;
    // A question name that is a compression pointer to itself.
    let mut header = valid[..12].to_vec();
    header.extend_from_slice(&[0xC0, 12, 0, 1, 0, 1]);
    for (what, packet) in [("truncated", truncated), ("bad label length", bad_label), ("compression loop", header)] {
        let answer = exchange_udp(server.udp, &packet, Duration::from_secs(2)).await.unwrap_or_else(|| panic!("{what}: no answer"));
        assert_eq!(answer.metadata.id, 0x4242, "{what}");
        assert_eq!(answer.metadata.response_code, ResponseCode::FormErr, "{what}");
    }
    // Shorter than a header: nothing to answer to.
    assert!(exchange_udp(server.udp, &[0x42, 0x42, 1], Duration::from_millis(300)).await.is_none());
}

/// Mutated and random packets, UDP and TCP, for a bounded time; after
/// every batch a valid query must still be answered correctly.
#[tokio::test]
async fn fuzzed_requests_never_stop_the_server() {
    let seconds: u64 = std::env::var("HAWSER_DNS_FUZZ_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(10);
    let seed: u64 = std::env::var("HAWSER_DNS_FUZZ_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(rand::random);
    eprintln!("fuzzing the DNS request path for {seconds} s, seed {seed} (HAWSER_DNS_FUZZ_SEED replays it)");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let server = start().await;
    let sender = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let seeds: Vec<Vec<u8>> = [
        ("web.default.svc.cluster.local.", RecordType::A),
        ("_http._tcp.web.default.svc.cluster.local.", RecordType::SRV),
        ("4.3.96.10.in-addr.arpa.", RecordType::PTR),
        ("many.default.svc.cluster.local.", RecordType::ANY),
    ]
    .iter()
    .flat_map(|(name, qtype)| [query(1, name, *qtype, false), query(2, name, *qtype, true)])
    .collect();
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let (mut sent, mut batches, mut retried) = (0u64, 0u64, 0u64);
    while Instant::now() < deadline {
        for _ in 0..200 {
            let original = &seeds[rng.random_range(0..seeds.len())];
            let packet = mutate(&mut rng, original);
            if rng.random_ratio(1, 20) {
                // Over TCP, with a length prefix that may lie.
                if let Ok(mut stream) = TcpStream::connect(server.tcp).await {
                    let len: u16 = if rng.random_ratio(1, 4) { rng.random() } else { packet.len() as u16 };
                    let _ = stream.write_all(&len.to_be_bytes()).await;
                    let _ = stream.write_all(&packet).await;
                }
            } else {
                sender.send_to(&packet, server.udp).await.unwrap();
            }
            sent += 1;
        }
        // Answers to garbage must themselves be well-formed messages.
        let mut buf = vec![0u8; 65535];
        while let Ok(n) = sender.try_recv(&mut buf) {
            if let Err(e) = Message::from_bytes(&buf[..n]) {
                panic!("seed {seed}: the server sent a malformed answer ({e}): {:02x?}", &buf[..n]);
            }
        }
        // As a resolver would, up to three tries: a burst may fill the
        // socket's receive buffer, and UDP drops what does not fit.
        let id = rng.random();
        let valid = query(id, "web.default.svc.cluster.local.", RecordType::A, false);
        let mut answer = None;
        for _ in 0..3 {
            answer = exchange_udp(server.udp, &valid, Duration::from_secs(1)).await;
            if answer.is_some() {
                break;
            }
            retried += 1;
        }
        let answer = answer.unwrap_or_else(|| panic!("seed {seed}: three tries of a valid query unanswered after {sent} fuzzed packets"));
        assert_eq!((answer.metadata.id, answer.answers.len()), (id, 1), "seed {seed}");
        batches += 1;
    }
    eprintln!("{sent} fuzzed packets in {batches} batches; the server answered after each ({retried} retries)");
    assert!(batches > 0);
}

/// One of: a truncation, byte flips, a lying header count, a label length
/// past 63, a compression pointer anywhere, or random bytes.
fn mutate(rng: &mut impl Rng, packet: &[u8]) -> Vec<u8> {
    let mut out = packet.to_vec();
    match rng.random_range(0..6) {
        0 => out.truncate(rng.random_range(0..packet.len())),
        1 => {
            for _ in 0..rng.random_range(1..6) {
                let at = rng.random_range(0..out.len());
                out[at] ^= 1 << rng.random_range(0..8);
            }
        }
        2 => {
            let at = 4 + 2 * rng.random_range(0..4);
            out[at..at + 2].copy_from_slice(&rng.random::<u16>().to_be_bytes());
        }
        3 => {
            let at = rng.random_range(12..out.len());
            out[at] = rng.random_range(64..=255);
        }
        4 => {
            let at = rng.random_range(12..out.len() - 1);
            let target: u16 = rng.random_range(0..out.len() as u16 + 4);
            out[at..at + 2].copy_from_slice(&(0xC000 | target).to_be_bytes());
        }
        _ => {
            out = (0..rng.random_range(0..600)).map(|_| rng.random()).collect();
        }
    }
    out
}
