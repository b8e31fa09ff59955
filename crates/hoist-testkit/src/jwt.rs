//! ES256 JWTs signed with a generated key whose self-signed certificate
//! rides in the `x5c` header, as distribution's token auth verifies them:
//! shared by the token issuer and the Harbor stand-in.

use base64::Engine as _;
use ring::rand::SecureRandom as _;
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair};

/// A signing key and its certificate.
pub(crate) struct Signer {
    key: EcdsaKeyPair,
    cert_der: Vec<u8>,
    cert_pem: String,
    rng: ring::rand::SystemRandom,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Signer")
    }
}

impl Signer {
    pub(crate) fn new(common_name: &str) -> Self {
        let key_pair = rcgen::KeyPair::generate().expect("signing key");
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("cert params");
        params.distinguished_name.push(rcgen::DnType::CommonName, common_name);
        let cert = params.self_signed(&key_pair).expect("self-sign the token certificate");
        let rng = ring::rand::SystemRandom::new();
        let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &key_pair.serialize_der(), &rng)
            .expect("load the signing key");
        Self { key, cert_der: cert.der().to_vec(), cert_pem: cert.pem(), rng }
    }

    /// The certificate a registry trusts for these signatures (its `rootcertbundle`).
    pub(crate) fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// `claims` as a signed JWT.
    pub(crate) fn sign(&self, claims: &serde_json::Value) -> String {
        let header = serde_json::json!({
            "typ": "JWT",
            "alg": "ES256",
            "x5c": [base64::engine::general_purpose::STANDARD.encode(&self.cert_der)],
        });
        let signing_input =
            format!("{}.{}", b64url(header.to_string().as_bytes()), b64url(claims.to_string().as_bytes()));
        let signature = self.key.sign(&self.rng, signing_input.as_bytes()).expect("sign the token");
        format!("{signing_input}.{}", b64url(signature.as_ref()))
    }

    /// `n` random bytes, hex.
    pub(crate) fn random_hex(&self, n: usize) -> String {
        hex::encode(self.random_bytes(n))
    }

    pub(crate) fn random_bytes(&self, n: usize) -> Vec<u8> {
        let mut bytes = vec![0u8; n];
        self.rng.fill(&mut bytes).expect("random bytes");
        bytes
    }
}

fn b64url(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}
