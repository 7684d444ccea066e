//! Where and how the worker reaches an MQTT broker: the host and port of
//! its URL, and the transport, plain TCP or TLS (`mqtts://`) with the
//! pipeline's CA and client certificate.

use std::sync::Arc;

use millrace_config::TlsFiles;
use rumqttc::{MqttOptions, TlsConfiguration, Transport};

use crate::tls::TlsError;

/// Splits `mqtt://host:port` (port 1883 by default) or `mqtts://host:port`
/// (port 8883 by default) into host and port; `tcp://` and `ssl://` are the
/// same two.
pub fn broker_address(url: &str) -> Result<(String, u16), String> {
    let (rest, default_port) = [("mqtt://", 1883), ("tcp://", 1883), ("mqtts://", 8883), ("ssl://", 8883)]
        .into_iter()
        .find_map(|(scheme, port)| url.strip_prefix(scheme).map(|rest| (rest, port)))
        .ok_or_else(|| format!("mqtt.url {url:?}: expected mqtt://host:port or mqtts://host:port"))?;
    let rest = rest.trim_end_matches('/');
    // An IPv6 address is bracketed: its colons are not the port's.
    let (host, port) = match rest.strip_prefix('[').and_then(|r| r.split_once(']')) {
        Some((host, after)) => (host, after.strip_prefix(':')),
        None => match rest.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (rest, None),
        },
    };
    let port = match port {
        Some(port) => port.parse().map_err(|_| format!("mqtt.url {url:?}: bad port {port:?}"))?,
        None => default_port,
    };
    Ok((host.to_string(), port))
}

/// The transport for `url`: TLS built from `tls` (read now, so that a
/// reconnect after a certificate rotation reads the new files), or TCP.
pub fn transport(url: &str, tls: Option<&TlsFiles>) -> Result<Transport, TlsError> {
    if !millrace_config::mqtt_url_uses_tls(url) {
        return Ok(Transport::Tcp);
    }
    let config = crate::tls::client_config(tls)?;
    Ok(Transport::tls_with_config(TlsConfiguration::Rustls(Arc::new(config))))
}

/// Options for a client `client_id` of the broker at `url`; what an error
/// says names the URL.
pub fn options(client_id: &str, url: &str, tls: Option<&TlsFiles>) -> anyhow::Result<MqttOptions> {
    let (host, port) = broker_address(url).map_err(anyhow::Error::msg)?;
    let mut options = MqttOptions::new(client_id, host, port);
    options.set_transport(transport(url, tls).map_err(|e| anyhow::anyhow!("MQTT broker {url}: {e}"))?);
    Ok(options)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broker_urls() {
        assert_eq!(broker_address("mqtt://mosquitto:1884").unwrap(), ("mosquitto".into(), 1884));
        assert_eq!(broker_address("mqtt://m").unwrap(), ("m".into(), 1883));
        assert_eq!(broker_address("mqtts://m").unwrap(), ("m".into(), 8883));
        assert_eq!(broker_address("ssl://m:9883/").unwrap(), ("m".into(), 9883));
        assert_eq!(broker_address("mqtt://[::1]:1884").unwrap(), ("::1".into(), 1884));
        assert_eq!(broker_address("mqtt://[::1]").unwrap(), ("::1".into(), 1883));
        assert!(broker_address("http://m").unwrap_err().contains("mqtt.url"));
    }

    #[test]
    fn tls_only_for_mqtts_and_its_errors_name_the_broker() {
        assert!(matches!(transport("mqtt://m", None).unwrap(), Transport::Tcp));
        let missing = TlsFiles { ca_file: Some("/nonexistent/ca.crt".into()), ..Default::default() };
        let e = options("c", "mqtts://broker:8883", Some(&missing)).unwrap_err().to_string();
        assert!(e.starts_with("MQTT broker mqtts://broker:8883: CA file /nonexistent/ca.crt"), "{e}");
    }
}
