//! TLS to a plugin reached over TCP, as a `.json` spec's `TLSConfig` asks (dockerd's
//! `pkg/plugins`): `CAFile` is the authority the plugin's certificate must chain to
//! (without it, the host's bundle), `CertFile` and `KeyFile` the client certificate a
//! plugin may demand, and `InsecureSkipVerify` takes any certificate, as Go's option of
//! that name does.
//!
//! Design note. The files are read on every call, as the connection itself is made per
//! call (client.rs): a plugin whose certificates were rotated is reached with the new
//! ones, and a file that went missing fails that call naming the file, never ferryd's
//! start. rustls with the ring provider, the one the etcd client already brings.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use serde::Deserialize;

/// Where the host keeps its trusted authorities (Debian's `ca-certificates`).
const HOST_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// A spec's `TLSConfig`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct TlsFiles {
    #[serde(rename = "InsecureSkipVerify", default)]
    pub insecure_skip_verify: bool,
    #[serde(rename = "CAFile", default)]
    pub ca_file: Option<PathBuf>,
    #[serde(rename = "CertFile", default)]
    pub cert_file: Option<PathBuf>,
    #[serde(rename = "KeyFile", default)]
    pub key_file: Option<PathBuf>,
}

impl TlsFiles {
    /// A certificate without its key (or the reverse) is a mistake in the spec.
    pub fn check(&self) -> Result<(), String> {
        match (&self.cert_file, &self.key_file) {
            (Some(_), None) => Err("TLSConfig has a CertFile but no KeyFile".into()),
            (None, Some(_)) => Err("TLSConfig has a KeyFile but no CertFile".into()),
            _ => Ok(()),
        }
    }

    /// The client side of a connection to the plugin, from the files as they are now.
    pub fn connector(&self) -> Result<tokio_rustls::TlsConnector, String> {
        let provider = Arc::new(ring_provider());
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?;
        let builder = if self.insecure_skip_verify {
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
        } else {
            builder.with_root_certificates(self.roots()?)
        };
        let config = match (&self.cert_file, &self.key_file) {
            (Some(cert), Some(key)) => builder
                .with_client_auth_cert(certs(cert)?, private_key(key)?)
                .map_err(|e| format!("CertFile {}: {e}", cert.display()))?,
            _ => builder.with_no_client_auth(),
        };
        Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
    }

    fn roots(&self) -> Result<RootCertStore, String> {
        let bundle = self.ca_file.as_deref().unwrap_or(Path::new(HOST_BUNDLE));
        let mut roots = RootCertStore::empty();
        for c in certs(bundle)? {
            roots
                .add(c)
                .map_err(|e| format!("CAFile {}: {e}", bundle.display()))?;
        }
        Ok(roots)
    }
}

/// rustls's ring provider, which the etcd client already builds (aws-lc-rs, rustls's
/// default, would need a C toolchain and cmake at build time). rustls deprecates it for
/// lacking post-quantum key exchange; plugins are local services, and dockerd's Go TLS
/// to them has none either.
#[allow(deprecated)]
pub(crate) fn ring_provider() -> rustls::crypto::CryptoProvider {
    rustls::crypto::ring::default_provider()
}

/// The name the plugin's certificate must carry: the host of `HOST:PORT`.
pub fn server_name(host_port: &str) -> Result<ServerName<'static>, String> {
    let host = host_port
        .rsplit_once(':')
        .map_or(host_port, |(h, _)| h)
        .trim_start_matches('[')
        .trim_end_matches(']');
    ServerName::try_from(host.to_string()).map_err(|e| format!("server name {host:?}: {e}"))
}

fn certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let read =
        CertificateDer::pem_file_iter(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let certs: Vec<_> = read
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{}: no PEM certificate in it", path.display()));
    }
    Ok(certs)
}

fn private_key(path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| format!("KeyFile {}: {e}", path.display()))
}

/// `InsecureSkipVerify`: any certificate, any name; signatures are still checked, so
/// the handshake itself is sound.
#[derive(Debug)]
struct AnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let algs = &self.0.signature_verification_algorithms;
        rustls::crypto::verify_tls12_signature(message, cert, dss, algs)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let algs = &self.0.signature_verification_algorithms;
        rustls::crypto::verify_tls13_signature(message, cert, dss, algs)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
