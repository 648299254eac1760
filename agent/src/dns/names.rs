//! Building DNS names from Kubernetes names and addresses.

use hickory_server::proto::ProtoError;
use hickory_server::proto::rr::Name;
use std::net::Ipv4Addr;

/// `text` as a fully qualified name (a trailing dot is implied).
pub fn fqdn(text: &str) -> Result<Name, ProtoError> {
    let mut name = Name::from_ascii(text)?;
    name.set_fqdn(true);
    Ok(name)
}

/// `labels` (leftmost first) prepended to `domain`: `child(cluster.local,
/// ["web", "default", "svc"])` is `web.default.svc.cluster.local.`.
pub fn child(domain: &Name, labels: &[&str]) -> Result<Name, String> {
    let mut name = domain.clone();
    for label in labels.iter().rev() {
        name = name.prepend_label(*label).map_err(|e| format!("{label:?} is not a DNS label: {e}"))?;
    }
    Ok(name)
}

/// The PTR owner of `ip`: `d.c.b.a.in-addr.arpa.`.
pub fn reverse(ip: Ipv4Addr) -> Name {
    let [a, b, c, d] = ip.octets();
    fqdn(&format!("{d}.{c}.{b}.{a}.in-addr.arpa")).expect("an address's reverse name is valid")
}
