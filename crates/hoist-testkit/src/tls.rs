//! A throwaway certificate authority for TLS tests: a CA, a server
//! certificate for `127.0.0.1` and `localhost`, and a client certificate,
//! all written as PEM files into a temp dir.

use std::path::{Path, PathBuf};

use rcgen::{BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, SanType};

/// A generated CA with one server and one client certificate.
#[derive(Debug)]
pub struct TestCa {
    dir: tempfile::TempDir,
}

impl TestCa {
    pub fn generate() -> Self {
        let dir = tempfile::tempdir().expect("temp dir for certificates");
        let ca_key = KeyPair::generate().expect("CA key");
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca_params.distinguished_name.push(DnType::CommonName, "hoist test CA");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca_cert = ca_params.self_signed(&ca_key).expect("self-sign the CA");
        let issuer = Issuer::new(ca_params, ca_key);

        let server_key = KeyPair::generate().expect("server key");
        let mut server_params = CertificateParams::new(vec!["localhost".to_owned()]).expect("server params");
        server_params.subject_alt_names.push(SanType::IpAddress(std::net::Ipv4Addr::LOCALHOST.into()));
        server_params.distinguished_name.push(DnType::CommonName, "127.0.0.1");
        server_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let server_cert = server_params.signed_by(&server_key, &issuer).expect("sign the server certificate");

        let client_key = KeyPair::generate().expect("client key");
        let mut client_params = CertificateParams::new(Vec::<String>::new()).expect("client params");
        client_params.distinguished_name.push(DnType::CommonName, "hoist test client");
        client_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let client_cert = client_params.signed_by(&client_key, &issuer).expect("sign the client certificate");

        let write = |name: &str, pem: String| std::fs::write(dir.path().join(name), pem).expect("write PEM");
        write("ca.crt", ca_cert.pem());
        write("server.crt", server_cert.pem());
        write("server.key", server_key.serialize_pem());
        write("client.cert", client_cert.pem());
        write("client.key", client_key.serialize_pem());
        Self { dir }
    }

    /// The CA certificate (PEM): what clients must trust.
    pub fn ca_cert(&self) -> PathBuf {
        self.dir.path().join("ca.crt")
    }

    pub fn server_cert(&self) -> PathBuf {
        self.dir.path().join("server.crt")
    }

    pub fn server_key(&self) -> PathBuf {
        self.dir.path().join("server.key")
    }

    pub fn client_cert(&self) -> PathBuf {
        self.dir.path().join("client.cert")
    }

    pub fn client_key(&self) -> PathBuf {
        self.dir.path().join("client.key")
    }

    /// Lays out docker's `certs.d` under `root` for `host` (`host:port`):
    /// the CA as `ca.crt`, and with `client` the client certificate too.
    pub fn write_certs_d(&self, root: &Path, host: &str, client: bool) {
        let dir = root.join(host);
        std::fs::create_dir_all(&dir).expect("certs.d dir");
        std::fs::copy(self.ca_cert(), dir.join("ca.crt")).expect("copy CA");
        if client {
            std::fs::copy(self.client_cert(), dir.join("client.cert")).expect("copy client cert");
            std::fs::copy(self.client_key(), dir.join("client.key")).expect("copy client key");
        }
    }
}
