//! What routing decides: the actions the router returns and the handler carries out, and what
//! a forwarded request needs to be rewritten. Types only, so that routing and rewriting both
//! use them without either needing the other.

use crate::config::RouteHop;
use crate::dns::Query;
use crate::transport::{Destination, FlowKey};

use super::status::Status;

/// How the Request-URI changes on the way out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NewRequestUri {
    /// Restored from a contact token or a client binding.
    Replace(Vec<u8>),
    /// `-default-sip-server`: host and port become the server's (its first FQDN, else its
    /// address); user and parameters stay.
    ServerHost { host: String, port: u16 },
}

/// Where a forwarded request goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NextHop {
    Flow(Destination),
    /// A host name that is not a trusted server (only without `-strict-host`).
    Resolve(Lookup),
}

/// A host name to resolve (RFC 3263: the URI's facts decide what is looked up).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lookup {
    pub query: Query,
    /// The port routing reads the URI as naming (its own, else the default transport's): the
    /// key under which a name found to be Roundabout's is remembered.
    pub port: u16,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Forward {
    pub next: NextHop,
    /// Used when `next` is a stream flow that is gone and may not be dialled again.
    pub fallback: Option<Destination>,
    pub request_uri: Option<NewRequestUri>,
    /// How many Routes on top name Roundabout (RFC 3261 §16.4): they are removed.
    pub pop_routes: usize,
    /// A trusted server's route-list, pushed as Route headers in this order (empty: none).
    pub push_routes: Vec<RouteHop>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RequestAction {
    Forward(Forward),
    Reply(Status),
    Drop(&'static str),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ResponseAction {
    Forward(Destination),
    /// Not for Roundabout, or nowhere to go.
    Drop(&'static str),
    /// Claims to answer a request of Roundabout's but does not: a forged or misdirected
    /// response, counted and warned about.
    Forged(&'static str),
}

/// Where answers to what came in on `flow` go: that flow, never dialled (RFC 3261 §18.2.2:
/// a response goes back where its request came from).
#[must_use]
pub fn answer_destination(flow: FlowKey) -> Destination {
    Destination {
        flow,
        connection: None,
        server_name: None,
        may_connect: false,
    }
}
