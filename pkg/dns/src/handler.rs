//! The hickory request handler: cluster names from the zone, everything else forwarded, and
//! a response for every query (SERVFAIL rather than silence when nothing can answer).

use std::sync::Arc;

use hickory_proto::op::{Edns, Message, Metadata, OpCode, Query, ResponseCode};
use hickory_proto::rr::{Name, Record, RecordType};
use hickory_server::net::runtime::Time;
use hickory_server::net::xfer::Protocol;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponseBuilder;

use crate::cache::ClusterCache;
use crate::forward::Forwarder;
use crate::zone::{Outcome, Zone};

/// How many ExternalName hops are followed inside the cluster domain.
const MAX_ALIAS_DEPTH: usize = 8;

pub(crate) struct DnsHandler {
    pub cache: Arc<ClusterCache>,
    pub zone: Zone,
    pub forwarder: Forwarder,
}

/// A response being put together: code, sections, and whether we are the authority.
struct Reply {
    code: ResponseCode,
    authoritative: bool,
    answers: Vec<Record>,
    authorities: Vec<Record>,
    additionals: Vec<Record>,
    /// Header flags from an upstream answer, relayed as they came.
    upstream: Option<Metadata>,
}

impl Reply {
    fn code(code: ResponseCode) -> Reply {
        Reply {
            code,
            authoritative: false,
            answers: Vec::new(),
            authorities: Vec::new(),
            additionals: Vec::new(),
            upstream: None,
        }
    }
}

impl DnsHandler {
    /// Resolves a name inside the zone, following ExternalName aliases (forwarding their
    /// targets when they leave the zone).
    async fn resolve(&self, name: &Name, qtype: RecordType, tcp: bool) -> Reply {
        let mut reply = Reply::code(ResponseCode::NoError);
        reply.authoritative = true;
        let mut name = name.clone();
        for _ in 0..MAX_ALIAS_DEPTH {
            match self.zone.resolve(&self.cache, &name, qtype) {
                Outcome::Answer {
                    answers,
                    additionals,
                } => {
                    reply.answers.extend(answers);
                    reply.additionals.extend(additionals);
                    return reply;
                }
                Outcome::NoData => {
                    reply.authorities.push(self.zone.soa().clone());
                    return reply;
                }
                Outcome::NxDomain => {
                    reply.code = ResponseCode::NXDomain;
                    reply.authorities.push(self.zone.soa().clone());
                    return reply;
                }
                Outcome::NotReady => return Reply::code(ResponseCode::ServFail),
                Outcome::Alias { cname, target } => {
                    reply.answers.push(*cname);
                    if qtype == RecordType::CNAME {
                        return reply;
                    }
                    name = target;
                }
                Outcome::Forward => {
                    // an ExternalName pointing outside: ask upstream for the target, keep
                    // the CNAME even when upstream cannot help
                    let mut query = Message::query();
                    query.metadata.recursion_desired = true;
                    query.add_query(Query::query(name.clone(), qtype));
                    if let Ok(bytes) = query.to_vec() {
                        if let Ok(answer) = self.forwarder.forward(&bytes, tcp).await {
                            if answer.metadata.response_code == ResponseCode::NXDomain {
                                reply.code = ResponseCode::NXDomain;
                            }
                            reply.answers.extend(answer.answers);
                        }
                    }
                    return reply;
                }
            }
        }
        reply
    }

    async fn answer(&self, request: &Request) -> Reply {
        if request.metadata.op_code != OpCode::Query {
            return Reply::code(ResponseCode::NotImp);
        }
        let Ok(info) = request.request_info() else {
            return Reply::code(ResponseCode::FormErr);
        };
        let name: Name = info.query.name().into();
        let qtype = info.query.query_type();
        let tcp = request.protocol() == Protocol::Tcp;
        if self.zone.contains(&name) {
            return self.resolve(info.query.original().name(), qtype, tcp).await;
        }
        match self.forwarder.forward(request.as_slice(), tcp).await {
            Ok(message) => Reply {
                code: message.metadata.response_code,
                authoritative: message.metadata.authoritative,
                upstream: Some(message.metadata),
                answers: message.answers,
                authorities: message.authorities,
                additionals: message.additionals,
            },
            Err(error) => {
                tracing::debug!(%error, %name, "dns: forwarding failed");
                Reply::code(ResponseCode::ServFail)
            }
        }
    }
}

#[async_trait::async_trait]
impl RequestHandler for DnsHandler {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        mut response_handle: R,
    ) -> ResponseInfo {
        let reply = self.answer(request).await;
        let mut metadata = Metadata::response_from_request(&request.metadata);
        metadata.response_code = reply.code;
        metadata.authoritative = reply.authoritative;
        metadata.recursion_available = true;
        if let Some(up) = reply.upstream {
            metadata.authentic_data = up.authentic_data;
            metadata.truncation = up.truncation;
        }
        // answer with EDNS only when asked with EDNS, within the size the client offered
        let edns = request.edns.as_ref().map(|theirs| {
            let mut ours = Edns::new();
            ours.set_max_payload(theirs.max_payload().clamp(512, 1232));
            ours.set_dnssec_ok(theirs.flags().dnssec_ok);
            ours
        });
        let mut builder = MessageResponseBuilder::from_message_request(request);
        if let Some(edns) = &edns {
            builder.edns(edns);
        }
        let response = builder.build(
            metadata,
            reply.answers.iter(),
            reply.authorities.iter(),
            std::iter::empty(),
            reply.additionals.iter(),
        );
        match response_handle.send_response(response).await {
            Ok(info) => info,
            Err(error) => {
                tracing::debug!(%error, "dns: sending a response failed");
                let mut metadata = Metadata::response_from_request(&request.metadata);
                metadata.response_code = ResponseCode::ServFail;
                ResponseInfo::from(hickory_proto::op::Header {
                    metadata,
                    counts: Default::default(),
                })
            }
        }
    }
}
