//! One query in, one answer out: the cluster zone answers its names
//! (authoritatively), everything else goes to the upstream servers.
//! Malformed messages never reach this far: hickory-server drops those
//! without a readable header and answers FORMERR to the rest.

use super::metrics::Metrics;
use super::names;
use super::upstream::Upstream;
use super::zone::{Answer, Zone};
use hickory_server::net::runtime::Time;
use hickory_server::proto::op::{Edns, Header, HeaderCounts, Metadata, OpCode, ResponseCode};
use hickory_server::proto::rr::{DNSClass, LowerName, Record, RecordType};
use hickory_server::proto::serialize::binary::{BinDecoder, BinEncodable, BinEncoder};
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::{MessageResponseBuilder, Queries};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, RwLock};

/// The largest UDP answer we send to a client that allows more (the DNS
/// flag day 2020 value, below common path MTUs).
const MAX_UDP_PAYLOAD: u16 = 1232;

/// Cheap to clone: every part is shared.
#[derive(Clone)]
pub struct Handler {
    pub zone: Arc<RwLock<Zone>>,
    /// Bumped after every change to the zone (answers cached before it are stale).
    pub zone_version: Arc<AtomicU64>,
    pub upstream: Arc<Upstream>,
    pub metrics: Arc<Metrics>,
}

/// What goes into a response, owned.
struct Reply {
    rcode: ResponseCode,
    authoritative: bool,
    answers: Vec<Record>,
    authorities: Vec<Record>,
    additionals: Vec<Record>,
}

impl Reply {
    fn error(rcode: ResponseCode) -> Self {
        Reply { rcode, authoritative: false, answers: Vec::new(), authorities: Vec::new(), additionals: Vec::new() }
    }
}

impl Handler {
    async fn answer(&self, name: &LowerName, qtype: RecordType) -> Reply {
        // One read of the zone: a negative answer's SOA comes with it.
        let (answer, soa) = {
            let zone = self.zone.read().unwrap();
            let answer = zone.lookup(name, qtype);
            let soa = matches!(answer, Answer::NoData | Answer::NxDomain).then(|| zone.soa().clone());
            (answer, soa)
        };
        let soa = || soa.into_iter().collect::<Vec<_>>();
        match answer {
            Answer::Records { answers, additionals } => {
                Reply { rcode: ResponseCode::NoError, authoritative: true, answers, authorities: Vec::new(), additionals }
            }
            Answer::NoData => Reply { authorities: soa(), authoritative: true, ..Reply::error(ResponseCode::NoError) },
            Answer::NxDomain => Reply { authorities: soa(), authoritative: true, ..Reply::error(ResponseCode::NXDomain) },
            Answer::Alias { cname, target } => {
                let forwarded = self.upstream.resolve(&LowerName::new(&target), qtype).await;
                let mut answers = vec![*cname];
                answers.extend(forwarded.answers);
                // Not authoritative: the rest is upstream data.
                Reply { rcode: forwarded.rcode, authoritative: false, answers, authorities: forwarded.authorities, additionals: Vec::new() }
            }
            Answer::NotOurs => {
                let forwarded = self.upstream.resolve(name, qtype).await;
                Reply {
                    rcode: forwarded.rcode,
                    authoritative: false,
                    answers: forwarded.answers,
                    authorities: forwarded.authorities,
                    additionals: Vec::new(),
                }
            }
        }
    }
}

/// The questions encoded without compression.
fn rewrite(queries: &Queries) -> Option<Queries> {
    let mut bytes = Vec::new();
    let mut encoder = BinEncoder::new(&mut bytes);
    for query in queries.queries() {
        query.original().emit(&mut encoder).ok()?;
    }
    Queries::read(&mut BinDecoder::new(&bytes), queries.len()).ok()
}

#[async_trait::async_trait]
impl RequestHandler for Handler {
    async fn handle_request<R: ResponseHandler, T: Time>(&self, request: &Request, mut response: R) -> ResponseInfo {
        self.metrics.request(request.protocol() == hickory_server::net::xfer::Protocol::Tcp);
        let queries = request.queries.queries();
        let reply = if request.metadata.op_code != OpCode::Query {
            Reply::error(ResponseCode::NotImp)
        } else if queries.len() != 1 {
            Reply::error(ResponseCode::FormErr)
        } else if queries[0].query_class() != DNSClass::IN {
            Reply::error(ResponseCode::NotImp)
        } else {
            self.answer(queries[0].name(), queries[0].query_type()).await
        };
        let mut metadata = Metadata::response_from_request(&request.metadata);
        metadata.response_code = reply.rcode;
        metadata.authoritative = reply.authoritative;
        metadata.recursion_available = true;
        let edns = request.edns.as_ref().map(|asked| {
            let mut edns = Edns::new();
            edns.set_max_payload(asked.max_payload().clamp(512, MAX_UDP_PAYLOAD));
            edns
        });
        // hickory-server echoes the question as the client wrote it; a name
        // compressed by a pointer into the header would point at other bytes
        // in the answer (found by the fuzz test), so such a question is
        // written out afresh.
        let rewritten = names::written_len(request.queries.as_bytes()).is_none().then(|| rewrite(&request.queries));
        let queries = match &rewritten {
            Some(Some(queries)) => queries,
            _ => &request.queries,
        };
        let mut builder = MessageResponseBuilder::new(queries, None);
        if let Some(edns) = &edns {
            builder.edns(edns);
        }
        self.metrics.response(reply.rcode);
        let message = builder.build(metadata, &reply.answers, &reply.authorities, [], &reply.additionals);
        match response.send_response(message).await {
            Ok(info) => info,
            Err(e) => {
                tracing::debug!(error = %e, "sending a DNS response");
                metadata.response_code = ResponseCode::ServFail;
                ResponseInfo::from(Header { metadata, counts: HeaderCounts::default() })
            }
        }
    }
}
