//! The cluster CA and the API server's certificate, generated on first start
//! and kept under `<data-dir>/pki/`, so clients keep trusting the same CA
//! across restarts.

use anyhow::Context;
use rcgen::{BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub struct Pki {
    dir: PathBuf,
}

impl Pki {
    pub fn new(data_dir: &Path) -> Self {
        Self { dir: data_dir.join("pki") }
    }

    pub fn ca_cert_path(&self) -> PathBuf {
        self.dir.join("ca.crt")
    }

    /// Creates the CA and the server certificate when missing. The server
    /// certificate names `localhost`, the loopback addresses, the
    /// `kubernetes` Service's names and address, and `extra_ips`.
    pub fn ensure(&self, service_ip: IpAddr, extra_ips: &[IpAddr]) -> anyhow::Result<()> {
        std::fs::create_dir_all(&self.dir).with_context(|| format!("creating {}", self.dir.display()))?;
        let (ca_crt, ca_key, crt, key) =
            (self.ca_cert_path(), self.dir.join("ca.key"), self.dir.join("server.crt"), self.dir.join("server.key"));
        if !ca_crt.exists() || !ca_key.exists() {
            let params = ca_params()?;
            let key_pair = KeyPair::generate()?;
            let cert = params.self_signed(&key_pair)?;
            write_private(&ca_key, &key_pair.serialize_pem())?;
            std::fs::write(&ca_crt, cert.pem())?;
            // A new CA invalidates any server certificate signed by an old one.
            let _ = std::fs::remove_file(&crt);
        }
        if !crt.exists() || !key.exists() {
            let ca_key_pair = KeyPair::from_pem(&std::fs::read_to_string(&ca_key)?).context("reading the CA key")?;
            // The issuer needs only the CA's name and key; its parameters are fixed.
            let issuer = Issuer::new(ca_params()?, ca_key_pair);
            let names = ["localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc.cluster.local"];
            let mut params = CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())?;
            if let Ok(host) = std::fs::read_to_string("/etc/hostname") {
                let host = host.trim();
                if !host.is_empty() {
                    params.subject_alt_names.push(SanType::DnsName(host.try_into()?));
                }
            }
            let mut ips: Vec<IpAddr> = vec!["127.0.0.1".parse()?, "::1".parse()?, service_ip];
            ips.extend(extra_ips.iter().filter(|ip| !ip.is_unspecified()));
            ips.dedup();
            params.subject_alt_names.extend(ips.into_iter().map(SanType::IpAddress));
            params.distinguished_name.push(DnType::CommonName, "kube-apiserver");
            params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
            let key_pair = KeyPair::generate()?;
            let cert = params.signed_by(&key_pair, &issuer)?;
            write_private(&key, &key_pair.serialize_pem())?;
            std::fs::write(&crt, cert.pem())?;
        }
        Ok(())
    }

    /// The rustls configuration serving the server certificate over HTTP/2 and HTTP/1.1.
    pub fn server_config(&self) -> anyhow::Result<Arc<rustls::ServerConfig>> {
        let certs = rustls_pemfile::certs(&mut std::fs::read(self.dir.join("server.crt"))?.as_slice()).collect::<Result<Vec<_>, _>>()?;
        let key = rustls_pemfile::private_key(&mut std::fs::read(self.dir.join("server.key"))?.as_slice())?
            .context("server.key holds no private key")?;
        let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(certs, key)?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }
}

fn ca_params() -> anyhow::Result<CertificateParams> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.distinguished_name.push(DnType::CommonName, "hawser-ca");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    Ok(params)
}

fn write_private(path: &Path, contents: &str) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new().create(true).write(true).truncate(true).mode(0o600).open(path)?;
    f.write_all(contents.as_bytes())?;
    Ok(())
}
