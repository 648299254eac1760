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

/// The length in bytes (root label included) of the name at the start of
/// `wire`, if it is written out in full: None when it is compressed (a
/// pointer), has a label longer than 63 bytes, or is cut short.
pub fn written_len(wire: &[u8]) -> Option<usize> {
    let mut at = 0;
    loop {
        let len = usize::from(*wire.get(at)?);
        if len == 0 {
            return Some(at + 1);
        }
        if len > 63 {
            return None;
        }
        at += len + 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_names_written_out_in_full_have_a_length() {
        assert_eq!(written_len(b"\x03web\x07default\x00\x00\x01"), Some(13));
        assert_eq!(written_len(b"\x03web\xc0\x0c"), None, "compressed");
        assert_eq!(written_len(b"\x50web"), None, "a label length past 63");
        assert_eq!(written_len(b"\x03web\x07def"), None, "cut short");
    }
}
