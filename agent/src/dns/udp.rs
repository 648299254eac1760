//! DNS over UDP: one socket per core on each address (SO_REUSEPORT, so the
//! kernel spreads clients over them), each read by a thread of its own, in
//! front of an answer cache.
//!
//! Almost every query a node sees is one of a few names asked again and
//! again. The cache keeps the encoded answer to each cluster-zone question,
//! keyed by the query as sent (ID aside, name case-folded), and is dropped
//! whenever the zone changes. A hit is a hash lookup, two patched header
//! fields and a `sendto`. A miss goes through the hickory-server request
//! path: `Request::from_bytes` parses it, the [`Handler`] answers it, and
//! hickory's `MessageResponse` encodes it, with truncation to the client's
//! payload size. Answers that depend on upstream servers are never cached
//! here: their TTLs run down, and the upstream cache handles them.
//!
//! Anything hickory cannot parse is answered FORMERR with the query's ID,
//! as hickory-server's own UDP loop does; shorter than a header, or a
//! response, it is dropped.

use super::handler::Handler;
use super::names;
use futures::FutureExt;
use hickory_server::net::NetError;
use hickory_server::net::runtime::TokioTime;
use hickory_server::net::xfer::Protocol;
use hickory_server::proto::op::{Header, Message, MessageType, ResponseCode};
use hickory_server::proto::rr::Record;
use hickory_server::proto::serialize::binary::{BinDecodable, BinDecoder, BinEncoder};
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponse;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

/// Entries the answer cache holds before it starts afresh.
const MAX_ANSWERS: usize = 100_000;
/// The largest query we read; anything longer is not a DNS query over UDP.
const MAX_QUERY: usize = 4096;

/// Encoded answers to zone questions, valid for one zone version.
pub struct AnswerCache {
    inner: RwLock<Answers>,
    /// Bumped by every zone change (after the change is in).
    pub zone_version: Arc<AtomicU64>,
}

#[derive(Default)]
struct Answers {
    version: u64,
    /// The encoded answer and its rcode.
    by_query: HashMap<Vec<u8>, (Vec<u8>, ResponseCode)>,
}

impl AnswerCache {
    pub fn new(zone_version: Arc<AtomicU64>) -> Self {
        AnswerCache { inner: RwLock::default(), zone_version }
    }

    /// The answer to `query` with its ID and question spelling, if cached
    /// for the zone as it is now.
    fn get(&self, query: &[u8]) -> Option<(Vec<u8>, ResponseCode)> {
        let (key, question_len) = key(query)?;
        let answers = self.inner.read().unwrap();
        if answers.version != self.zone_version.load(Ordering::Acquire) {
            return None;
        }
        let (mut answer, rcode) = answers.by_query.get(&key)?.clone();
        // Same question length by construction: the ID and the question as
        // the client spelled it (resolvers may randomise its case).
        answer[..2].copy_from_slice(&query[..2]);
        let question = 12..12 + question_len;
        answer[question.clone()].copy_from_slice(&query[question]);
        Some((answer, rcode))
    }

    /// Keeps `answer` to `query`, computed against zone version `version`.
    fn put(&self, query: &[u8], answer: Vec<u8>, rcode: ResponseCode, version: u64) {
        let Some((key, _)) = key(query) else { return };
        let mut answers = self.inner.write().unwrap();
        if answers.version != version || answers.by_query.len() >= MAX_ANSWERS {
            if version < answers.version {
                return; // Computed before a change already seen.
            }
            *answers = Answers { version, by_query: HashMap::new() };
        }
        answers.by_query.insert(key, (answer, rcode));
    }
}

/// The cache key of a query (everything but its ID, the name lowercased)
/// and the length of its question (name, type, class). None unless it
/// has exactly one question whose name is written out in full (never cached).
fn key(query: &[u8]) -> Option<(Vec<u8>, usize)> {
    if query.len() < 12 || query[4..6] != [0, 1] {
        return None;
    }
    let name_len = names::written_len(&query[12..])?;
    let question_len = name_len + 4;
    if 12 + question_len > query.len() {
        return None;
    }
    let mut key = query[2..].to_vec();
    key[10..10 + name_len].make_ascii_lowercase();
    Some((key, question_len))
}

/// How often a reader looks up from a quiet socket to see whether it
/// should stop.
const READ_TIMEOUT: Duration = Duration::from_millis(200);

/// The reader threads of one address; they stop (within [`READ_TIMEOUT`])
/// once this is dropped.
pub struct Readers {
    stop: Arc<AtomicBool>,
}

impl Drop for Readers {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Binds `address` once per core and reads each socket on a thread of its
/// own with plain blocking calls: a hit costs two system calls and no
/// wake-ups, as in a single-threaded C server. Misses run on the caller's
/// tokio runtime.
pub fn serve(address: SocketAddr, handler: Arc<Handler>, cache: Arc<AnswerCache>) -> std::io::Result<Readers> {
    let runtime = tokio::runtime::Handle::current();
    let stop = Arc::new(AtomicBool::new(false));
    for _ in 0..std::thread::available_parallelism().map_or(1, |n| n.get()) {
        let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, Some(socket2::Protocol::UDP))?;
        socket.set_reuse_port(true)?;
        socket.bind(&address.into())?;
        socket.set_read_timeout(Some(READ_TIMEOUT))?;
        let socket = Arc::new(std::net::UdpSocket::from(socket));
        let (handler, cache, stop, runtime) = (handler.clone(), cache.clone(), stop.clone(), runtime.clone());
        std::thread::Builder::new().name("hawser-dns-udp".to_string()).spawn(move || {
            let _runtime = runtime.enter();
            read(&socket, &handler, &cache, &stop);
        })?;
    }
    Ok(Readers { stop })
}

fn read(socket: &Arc<std::net::UdpSocket>, handler: &Arc<Handler>, cache: &Arc<AnswerCache>, stop: &AtomicBool) {
    let mut buf = vec![0u8; MAX_QUERY];
    while !stop.load(Ordering::Relaxed) {
        let (n, client) = match socket.recv_from(&mut buf) {
            Ok(received) => received,
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => continue,
            Err(e) => {
                tracing::debug!(error = %e, "receiving a DNS query");
                continue;
            }
        };
        let query = &buf[..n];
        if let Some((answer, rcode)) = cache.get(query) {
            handler.metrics.request(false);
            handler.metrics.cache_answer(rcode);
            let _ = socket.send_to(&answer, client);
            continue;
        }
        // Zone answers are ready at once and are sent from here; one that
        // waits for an upstream server continues on a runtime task.
        let mut answering = Box::pin(answer(query.to_vec(), client, handler.clone(), cache.clone(), socket.clone()));
        if (&mut answering).now_or_never().is_none() {
            tokio::spawn(answering);
        }
    }
}

async fn answer(query: Vec<u8>, client: SocketAddr, handler: Arc<Handler>, cache: Arc<AnswerCache>, socket: Arc<std::net::UdpSocket>) {
    let version = cache.zone_version.load(Ordering::Acquire);
    let request = match Request::from_bytes(query.clone(), client, Protocol::Udp) {
        Ok(request) => request,
        Err(_) => {
            if let Some(formerr) = format_error(&query) {
                let _ = socket.send_to(&formerr, client);
            }
            return;
        }
    };
    if request.metadata.message_type == MessageType::Response {
        return; // Never answer answers (reflection).
    }
    let encoded = Encoded::default();
    let info = handler.handle_request::<_, TokioTime>(&request, encoded.clone()).await;
    let Some(answer) = encoded.0.lock().unwrap().take() else { return };
    if info.authoritative && !info.truncation {
        cache.put(&query, answer.clone(), info.response_code, version);
    }
    let _ = socket.send_to(&answer, client);
}

/// FORMERR for a query whose header parses.
fn format_error(query: &[u8]) -> Option<Vec<u8>> {
    let header = Header::read(&mut BinDecoder::new(query)).ok()?;
    if header.metadata.message_type == MessageType::Response {
        return None;
    }
    let mut message = Message::new(header.metadata.id, MessageType::Response, header.metadata.op_code);
    message.metadata.recursion_desired = header.metadata.recursion_desired;
    message.metadata.response_code = ResponseCode::FormErr;
    message.to_vec().ok()
}

/// A response handler that keeps the encoded answer, limited to what the
/// client can take over UDP (its EDNS payload size, else 512 bytes).
#[derive(Clone, Default)]
struct Encoded(Arc<Mutex<Option<Vec<u8>>>>);

#[async_trait::async_trait]
impl ResponseHandler for Encoded {
    async fn send_response<'a>(
        &mut self,
        response: MessageResponse<
            '_,
            'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
        >,
    ) -> Result<ResponseInfo, NetError> {
        let mut bytes = Vec::with_capacity(512);
        let mut encoder = BinEncoder::new(&mut bytes);
        encoder.set_max_size(response.edns().map_or(512, |e| e.max_payload()));
        let info = response.destructive_emit(&mut encoder)?;
        *self.0.lock().unwrap() = Some(bytes);
        Ok(info)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(id: u16, name: &str) -> Vec<u8> {
        let mut q = vec![(id >> 8) as u8, id as u8, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0];
        for label in name.split('.') {
            q.push(label.len() as u8);
            q.extend_from_slice(label.as_bytes());
        }
        q.extend_from_slice(&[0, 0, 1, 0, 1]);
        q
    }

    #[test]
    fn the_key_ignores_the_id_and_the_name_s_case() {
        assert_eq!(key(&query(1, "Web.default")), key(&query(2, "web.DEFAULT")));
        assert_ne!(key(&query(1, "web.default")), key(&query(1, "web.other")));
        let mut compressed = query(1, "a");
        compressed[12] = 0xC0;
        assert_eq!(key(&compressed), None);
        assert_eq!(key(&query(1, "web")[..15]), None, "cut short");
    }

    #[test]
    fn a_hit_carries_the_query_s_id_and_spelling_until_the_zone_changes() {
        let version = Arc::new(AtomicU64::new(1));
        let cache = AnswerCache::new(version.clone());
        let mut answer = query(1, "web.default");
        answer[2] |= 0x80;
        answer.extend_from_slice(&[0xAA; 16]);
        cache.put(&query(1, "web.default"), answer.clone(), ResponseCode::NoError, 1);
        let (hit, _) = cache.get(&query(0x1234, "WEB.default")).expect("a hit");
        assert_eq!(&hit[..2], &[0x12, 0x34]);
        assert_eq!(&hit[13..16], b"WEB");
        assert_eq!(&hit[16..], &answer[16..]);
        version.store(2, Ordering::Release);
        assert_eq!(cache.get(&query(1, "web.default")), None, "the zone changed");
        cache.put(&query(1, "web.default"), answer, ResponseCode::NoError, 1);
        assert_eq!(cache.get(&query(1, "web.default")), None, "an answer from before the change is not kept");
    }
}
