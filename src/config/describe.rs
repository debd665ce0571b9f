//! The configuration as the start-up log and `--check-config` print it.

use std::fmt;

use super::Config;
use crate::sip::Transport;

impl Config {
    /// One line per switch group, trusted server and client range, for the start-up log and
    /// `--check-config`. Never includes the token key.
    #[must_use]
    pub fn describe(&self) -> Vec<String> {
        let Config {
            local_ip,
            local_fqdn,
            bind_ip,
            strict_host,
            strict_client,
            ack_ruri,
            contact_header_fqdn,
            trusted_servers,
            trusted_clients,
            proxy_protocol_from,
            default_sip_server,
            default_network,
            ports,
            tls,
            tls_ca,
            mutual_tls,
            ws_path,
            token_key: _,
            limits,
            sip_timers,
            transaction_limits,
            drain_timeout,
            metrics_addr,
            hep,
            rtpengine,
            dns_server,
            udp_mtu,
        } = self;
        let port = |transport| match ports.get(transport) {
            Some(port) => port.to_string(),
            None => "off".to_owned(),
        };
        let default_server = default_sip_server
            .and_then(|index| Some((index + 1, trusted_servers.servers.get(index)?)))
            .map_or("-".to_owned(), |(number, server)| {
                format!("{} (trusted-server {number})", server.ip)
            });
        let client_identity = mutual_tls.client_identity.as_ref().or(tls.as_ref());
        let mut lines = vec![
            format!(
                "local-ip={local_ip} local-fqdn={} bind-ip={bind_ip}",
                local_fqdn.as_deref().unwrap_or("-")
            ),
            format!(
                "strict-host={strict_host} strict-client={strict_client} ack-ruri={ack_ruri} \
                 contact-header-fqdn={contact_header_fqdn}"
            ),
            format!("default-sip-server={default_server} default-network={default_network}"),
            format!("drain-timeout={}s", drain_timeout.as_secs()),
            format!(
                "ports udp={} tcp={} tls={} ws={} wss={}",
                port(Transport::Udp),
                port(Transport::Tcp),
                port(Transport::Tls),
                port(Transport::Ws),
                port(Transport::Wss)
            ),
            format!(
                "tls cert={} key={} ca={}",
                tls.as_ref()
                    .map_or("-".into(), |t| t.cert.display().to_string()),
                tls.as_ref()
                    .map_or("-".into(), |t| t.key.display().to_string()),
                tls_ca
                    .as_ref()
                    .map_or("-".into(), |ca| ca.display().to_string()),
            ),
            format!(
                // What is presented when dialling: -tls-client-cert, else -tls-cert.
                "mutual-tls client-cert={} client-key={} verify-client={}",
                client_identity.map_or("-".into(), |t| t.cert.display().to_string()),
                client_identity.map_or("-".into(), |t| t.key.display().to_string()),
                mutual_tls.verify_client.as_str(),
            ),
            format!("ws-path={}", ws_path.as_deref().unwrap_or("any")),
            format!(
                "metrics-addr={}",
                metrics_addr.map_or("off".to_owned(), |addr| addr.to_string())
            ),
            match hep {
                Some(hep) => format!("hep-addr={} hep-id={}", hep.addr, hep.agent_id),
                None => "hep-addr=off".to_owned(),
            },
            if rtpengine.is_empty() {
                "rtpengine=off".to_owned()
            } else {
                let addrs: Vec<String> = rtpengine.iter().map(ToString::to_string).collect();
                format!("rtpengine={}", addrs.join(","))
            },
            format!(
                "dns-server={}",
                dns_server.map_or("system".to_owned(), |addr| addr.to_string())
            ),
            format!(
                "udp-mtu={}",
                udp_mtu.map_or("off".to_owned(), |bytes| bytes.to_string())
            ),
            format!(
                "limits max-message-size={} max-connections={} max-connections-per-ip={} \
                 idle-timeout={}s handshake-timeout={}s read-timeout={}s write-timeout={}s \
                 ws-ping-interval={}s client-cache-size={} send-queue={} send-queue-bytes={} \
                 send-buffer-total={} rate-limit={} max-new-requests={}",
                limits.max_message,
                limits.max_connections,
                limits.max_connections_per_ip,
                limits.idle_timeout.as_secs(),
                limits.handshake_timeout.as_secs(),
                limits.read_timeout.as_secs(),
                limits.write_timeout.as_secs(),
                limits.ws_ping_interval.as_secs(),
                limits.client_cache_size,
                limits.send_queue,
                limits.send_queue_bytes,
                limits.send_buffer_total,
                limits.rate_limit,
                limits.max_new_requests,
            ),
            format!(
                "transactions sip-t1={}ms sip-t2={}ms max-transactions={} \
                 max-transaction-bytes={}",
                sip_timers.t1.as_millis(),
                sip_timers.t2.as_millis(),
                transaction_limits.max,
                transaction_limits.max_bytes,
            ),
        ];
        for (index, server) in trusted_servers.servers.iter().enumerate() {
            lines.push(format!(
                "trusted-server {} ip={} fqdns={} port={} transport={} routes={}",
                index + 1,
                server.ip,
                join_or_dash(&server.fqdns),
                server.port,
                server.transport,
                join_or_dash(&server.routes),
            ));
        }
        if trusted_servers.servers.is_empty() {
            lines.push("trusted-servers none".to_owned());
        }
        for range in &trusted_clients.ranges {
            lines.push(format!("trusted-client-range {range}"));
        }
        if trusted_clients.ranges.is_empty() {
            lines.push("trusted-client-ranges none".to_owned());
        }
        for balancer in &proxy_protocol_from.ranges {
            lines.push(format!("proxy-protocol-from {balancer}"));
        }
        lines
    }
}

fn join_or_dash<T: fmt::Display>(items: &[T]) -> String {
    if items.is_empty() {
        return "-".to_owned();
    }
    items
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("/")
}
