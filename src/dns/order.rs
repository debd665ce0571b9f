//! What RFC 3263 §4 looks up for a SIP URI, and the order of what it finds: pure, so every
//! rule is table-tested without a DNS server.

use std::net::SocketAddr;

use crate::sip::Transport;

use super::{Query, Usable};

/// What to look up for a query, in RFC 3263 §4's order of steps.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Plan {
    /// A numeric host (§4.1, §4.2): that address, nothing to look up.
    Address {
        transport: Transport,
        addr: SocketAddr,
    },
    /// An explicit port (§4.2), or a transport with no SRV name: A/AAAA of the host only.
    Addresses { transport: Transport, port: u16 },
    /// NAPTR of the host first (§4.1, no transport asked), then, when it gives nothing usable,
    /// the SRV names of `srv` as if asked.
    Naptr { srv: SrvPlan },
    /// SRV of the names, in order (§4.1 a transport asked, or no NAPTR).
    Srv(SrvPlan),
}

/// SRV names to look up in order, and the transport that A/AAAA of the host itself uses at its
/// default port when none of them has a record (§4.2).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SrvPlan {
    pub names: Vec<(String, Transport)>,
    pub fallback: Transport,
}

/// The first steps of RFC 3263 §4.1 and §4.2 for `query`: what its facts let be skipped.
/// `default` is the transport of a URI that asks for none (Roundabout's `-default-network`,
/// where §4.1 says UDP).
#[must_use]
pub fn plan(query: &Query, default: Transport, usable: Usable) -> Plan {
    let asked = query.asked_transport();
    let transport = asked.unwrap_or(default);
    let port = query.port.unwrap_or(transport.default_port());
    if let Some(ip) = crate::sip::uri::parse_host_ip(query.host.as_bytes()) {
        return Plan::Address {
            transport,
            addr: SocketAddr::new(ip, port),
        };
    }
    if query.port.is_some() {
        return Plan::Addresses { transport, port };
    }
    // The parameter, not the scheme, skips NAPTR: a SIPS URI still asks which TLS service.
    match query.transport {
        Some(_) => match srv_service(transport) {
            Some(service) => Plan::Srv(SrvPlan {
                names: vec![(format!("{service}.{}", query.host), transport)],
                fallback: transport,
            }),
            // RFC 7118 names NAPTR services for WebSocket but no SRV names: a `transport=ws`
            // URI without a port is the host at the transport's default port.
            None => Plan::Addresses { transport, port },
        },
        None => {
            // A SIPS URI is reached over TLS only (§4.1); a SIP URI over any transport
            // Roundabout can send on, the default first.
            let fallback = if query.secure {
                Transport::Tls
            } else {
                default
            };
            let mut order = vec![fallback];
            if !query.secure {
                order.extend(
                    [Transport::Udp, Transport::Tcp, Transport::Tls]
                        .into_iter()
                        .filter(|t| *t != fallback),
                );
            }
            let names = order
                .into_iter()
                .filter(|t| usable.has(*t))
                .filter_map(|t| Some((format!("{}.{}", srv_service(t)?, query.host), t)))
                .collect();
            Plan::Naptr {
                srv: SrvPlan { names, fallback },
            }
        }
    }
}

/// The SRV service and protocol labels of a transport (RFC 3263 §4.1); none for WebSocket.
fn srv_service(transport: Transport) -> Option<&'static str> {
    match transport {
        Transport::Udp => Some("_sip._udp"),
        Transport::Tcp => Some("_sip._tcp"),
        Transport::Tls => Some("_sips._tcp"),
        Transport::Ws | Transport::Wss => None,
    }
}

/// One NAPTR record's fields as RFC 3263 §4.1 reads them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Naptr<'a> {
    pub order: u16,
    pub preference: u16,
    pub flags: &'a [u8],
    pub services: &'a [u8],
    /// The SRV name the record points to.
    pub replacement: String,
}

/// The transport a NAPTR service field names (RFC 3263 §4.1, RFC 7118 §11.5 for WebSocket),
/// and whether it is a SIPS service.
fn naptr_transport(services: &[u8]) -> Option<(Transport, bool)> {
    const SERVICES: [(&[u8], Transport, bool); 5] = [
        (b"SIP+D2U", Transport::Udp, false),
        (b"SIP+D2T", Transport::Tcp, false),
        (b"SIPS+D2T", Transport::Tls, true),
        (b"SIP+D2W", Transport::Ws, false),
        (b"SIPS+D2W", Transport::Wss, true),
    ];
    SERVICES
        .iter()
        .find(|(name, ..)| services.eq_ignore_ascii_case(name))
        .map(|&(_, transport, secure)| (transport, secure))
}

/// The SRV names the NAPTR records of a domain lead to, best first (RFC 3263 §4.1): records
/// with the `s` flag and a SIP service Roundabout can use (only SIPS services for a SIPS URI),
/// by order, then preference (RFC 3403 §4.1).
#[must_use]
pub fn naptr_targets(
    mut records: Vec<Naptr<'_>>,
    secure: bool,
    usable: Usable,
) -> Vec<(String, Transport)> {
    records.retain(|r| r.flags.eq_ignore_ascii_case(b"s"));
    records.sort_by_key(|r| (r.order, r.preference));
    records
        .into_iter()
        .filter_map(|r| {
            let (transport, sips) = naptr_transport(r.services)?;
            (usable.has(transport) && (sips || !secure)).then_some((r.replacement, transport))
        })
        .collect()
}

/// One SRV record's fields (RFC 2782).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Srv {
    pub priority: u16,
    pub weight: u16,
    pub port: u16,
    pub target: String,
}

/// Uniform random numbers for RFC 2782's weighted choice; a trait so tests can seed it.
pub trait Pick {
    /// A number from 0 to `max`, both included, each as likely.
    fn up_to(&mut self, max: u32) -> u32;
}

/// xorshift64*: plenty for spreading load over servers, and seedable.
#[derive(Clone, Debug)]
pub struct XorShift(u64);

impl XorShift {
    #[must_use]
    pub fn new(seed: u64) -> XorShift {
        // Zero is xorshift's one fixed point.
        XorShift(seed | 1)
    }
}

impl Pick for XorShift {
    fn up_to(&mut self, max: u32) -> u32 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        let n = self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 32;
        // 32 random bits reduced to at most 2^16 · 2^16 values: the bias is below 2^-16.
        u32::try_from(n % (u64::from(max) + 1)).unwrap_or(0)
    }
}

/// RFC 2782's order of SRV records: priority ascending; within a priority, records drawn one
/// by one with a chance proportional to their weight (zero-weight records first in the list,
/// so they are drawn only now and then). A single record with the target `.` means that the
/// service is not offered: no records at all.
#[must_use]
pub fn order_srv(mut records: Vec<Srv>, pick: &mut impl Pick) -> Vec<Srv> {
    records.retain(|r| !r.target.is_empty() && r.target != ".");
    records.sort_by_key(|r| (r.priority, r.weight != 0));
    let mut ordered = Vec::with_capacity(records.len());
    let mut rest = records.as_slice();
    while let Some(first) = rest.first() {
        let same = rest
            .iter()
            .take_while(|r| r.priority == first.priority)
            .count();
        let (group, after) = rest.split_at(same);
        let mut group = group.to_vec();
        while !group.is_empty() {
            let total: u32 = group.iter().map(|r| u32::from(r.weight)).sum();
            let chosen = pick.up_to(total);
            let mut running = 0;
            let index = group
                .iter()
                .position(|r| {
                    running += u32::from(r.weight);
                    running >= chosen
                })
                .unwrap_or(0);
            ordered.push(group.remove(index));
        }
        rest = after;
    }
    ordered
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: Usable = Usable { udp: true };

    fn query(host: &str, port: Option<u16>, transport: Option<Transport>, secure: bool) -> Query {
        Query {
            host: host.into(),
            port,
            transport,
            secure,
        }
    }

    fn names(list: &[(&str, Transport)]) -> Vec<(String, Transport)> {
        list.iter().map(|(n, t)| ((*n).to_owned(), *t)).collect()
    }

    #[test]
    fn what_the_uri_lets_be_skipped() {
        use Transport::{Tcp, Tls, Udp, Wss};
        let udp_off = Usable { udp: false };
        let cases: [(Query, Transport, Usable, Plan); 10] = [
            (
                query("192.0.2.7", None, None, false),
                Tcp,
                ALL,
                Plan::Address {
                    transport: Tcp,
                    addr: "192.0.2.7:5060".parse().unwrap(),
                },
            ),
            (
                query("[2001:db8::7]", Some(5070), Some(Udp), false),
                Tcp,
                ALL,
                Plan::Address {
                    transport: Udp,
                    addr: "[2001:db8::7]:5070".parse().unwrap(),
                },
            ),
            (
                query("192.0.2.7", None, None, true),
                Udp,
                ALL,
                Plan::Address {
                    transport: Tls,
                    addr: "192.0.2.7:5061".parse().unwrap(),
                },
            ),
            // An explicit port: A/AAAA only, the URI's transport or the default.
            (
                query("example.com", Some(5080), None, false),
                Udp,
                ALL,
                Plan::Addresses {
                    transport: Udp,
                    port: 5080,
                },
            ),
            (
                query("example.com", Some(5080), Some(Tcp), false),
                Udp,
                ALL,
                Plan::Addresses {
                    transport: Tcp,
                    port: 5080,
                },
            ),
            // A transport asked without a port: its SRV name only.
            (
                query("example.com", None, Some(Udp), false),
                Tcp,
                ALL,
                Plan::Srv(SrvPlan {
                    names: names(&[("_sip._udp.example.com", Udp)]),
                    fallback: Udp,
                }),
            ),
            (
                query("example.com", None, Some(Tls), false),
                Tcp,
                ALL,
                Plan::Srv(SrvPlan {
                    names: names(&[("_sips._tcp.example.com", Tls)]),
                    fallback: Tls,
                }),
            ),
            // WebSocket has no SRV name: the host at the transport's default port.
            (
                query("example.com", None, Some(Transport::Ws), true),
                Tcp,
                ALL,
                Plan::Addresses {
                    transport: Wss,
                    port: 443,
                },
            ),
            // Nothing asked: NAPTR, then every SRV name Roundabout could use, the default
            // first; UDP only while Roundabout has a UDP socket.
            (
                query("example.com", None, None, false),
                Tcp,
                udp_off,
                Plan::Naptr {
                    srv: SrvPlan {
                        names: names(&[
                            ("_sip._tcp.example.com", Tcp),
                            ("_sips._tcp.example.com", Tls),
                        ]),
                        fallback: Tcp,
                    },
                },
            ),
            // A SIPS URI: TLS only.
            (
                query("example.com", None, None, true),
                Udp,
                ALL,
                Plan::Naptr {
                    srv: SrvPlan {
                        names: names(&[("_sips._tcp.example.com", Tls)]),
                        fallback: Tls,
                    },
                },
            ),
        ];
        for (query, default, usable, expected) in cases {
            assert_eq!(plan(&query, default, usable), expected, "{query:?}");
        }
        assert_eq!(
            plan(&query("example.com", None, None, false), Udp, ALL),
            Plan::Naptr {
                srv: SrvPlan {
                    names: names(&[
                        ("_sip._udp.example.com", Udp),
                        ("_sip._tcp.example.com", Tcp),
                        ("_sips._tcp.example.com", Tls),
                    ]),
                    fallback: Udp,
                },
            }
        );
    }

    fn naptr<'a>(order: u16, preference: u16, flags: &'a str, services: &'a str) -> Naptr<'a> {
        Naptr {
            order,
            preference,
            flags: flags.as_bytes(),
            services: services.as_bytes(),
            replacement: format!("{services}.{order}.{preference}"),
        }
    }

    #[test]
    fn naptr_services_map_to_transports_by_order_then_preference() {
        use Transport::{Tcp, Tls, Udp, Ws, Wss};
        let records = || {
            vec![
                naptr(20, 10, "s", "SIP+D2U"),
                naptr(10, 20, "S", "sip+d2t"),
                naptr(10, 10, "s", "SIPS+D2T"),
                naptr(30, 10, "s", "SIP+D2W"),
                naptr(30, 20, "s", "SIPS+D2W"),
                // Not SIP, not a terminal SRV step, or a transport SIP has no word for here.
                naptr(1, 1, "s", "E2U+sip"),
                naptr(1, 1, "u", "SIP+D2U"),
                naptr(1, 1, "s", "SIP+D2S"),
            ]
        };
        let expect = |list: &[(&str, Transport)]| names(list);
        assert_eq!(
            naptr_targets(records(), false, ALL),
            expect(&[
                ("SIPS+D2T.10.10", Tls),
                ("sip+d2t.10.20", Tcp),
                ("SIP+D2U.20.10", Udp),
                ("SIP+D2W.30.10", Ws),
                ("SIPS+D2W.30.20", Wss),
            ])
        );
        // A SIPS URI takes the SIPS services only; without a UDP socket, no D2U.
        assert_eq!(
            naptr_targets(records(), true, ALL),
            expect(&[("SIPS+D2T.10.10", Tls), ("SIPS+D2W.30.20", Wss)])
        );
        assert_eq!(
            naptr_targets(records(), false, Usable { udp: false })
                .iter()
                .map(|(_, t)| *t)
                .collect::<Vec<_>>(),
            [Tls, Tcp, Ws, Wss]
        );
    }

    fn srv(priority: u16, weight: u16, target: &str) -> Srv {
        Srv {
            priority,
            weight,
            port: 5060,
            target: target.into(),
        }
    }

    #[test]
    fn srv_records_go_by_priority_and_every_record_is_kept() {
        let mut pick = XorShift::new(7);
        for _ in 0..100 {
            let ordered = order_srv(
                vec![
                    srv(20, 5, "c"),
                    srv(10, 0, "b"),
                    srv(10, 60, "a"),
                    srv(30, 0, "d"),
                ],
                &mut pick,
            );
            let targets: Vec<&str> = ordered.iter().map(|r| r.target.as_str()).collect();
            assert!(
                targets == ["a", "b", "c", "d"] || targets == ["b", "a", "c", "d"],
                "{targets:?}"
            );
        }
        // RFC 2782: a lone "." target is "decidedly not available".
        assert_eq!(order_srv(vec![srv(0, 0, ".")], &mut pick), []);
    }

    /// RFC 2782's weights: over 10 000 draws the first of a priority is each record about as
    /// often as its share of the weight (within 4 standard deviations of a binomial), and a
    /// zero-weight record is first only now and then.
    #[test]
    fn weights_share_the_first_place_in_proportion() {
        let mut pick = XorShift::new(0x5eed);
        let draws = 10_000u32;
        let mut first = [0u32; 4];
        for _ in 0..draws {
            let ordered = order_srv(
                vec![
                    srv(1, 10, "a"),
                    srv(1, 30, "b"),
                    srv(1, 60, "c"),
                    srv(1, 0, "z"),
                ],
                &mut pick,
            );
            let at = ["a", "b", "c", "z"]
                .iter()
                .position(|t| *t == ordered[0].target)
                .unwrap();
            first[at] += 1;
        }
        for (count, share) in first.iter().zip([0.10, 0.30, 0.60]) {
            let n = f64::from(draws);
            let expected = n * share;
            let sd = (n * share * (1.0 - share)).sqrt();
            assert!(
                (f64::from(*count) - expected).abs() < 4.0 * sd,
                "{first:?}: {count} where {expected} was expected"
            );
        }
        // Drawn first only when the number drawn is 0: about 1 in 101.
        assert!(first[3] < draws / 50, "{first:?}");
    }

    #[test]
    fn the_seeded_pick_is_uniform_and_in_range() {
        let mut pick = XorShift::new(1);
        let mut seen = [0u32; 5];
        for _ in 0..5_000 {
            let n = pick.up_to(4);
            seen[usize::try_from(n).unwrap()] += 1;
        }
        assert!(seen.iter().all(|&c| (800..1200).contains(&c)), "{seen:?}");
        assert_eq!(pick.up_to(0), 0);
    }
}
