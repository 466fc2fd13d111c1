//! TLS to a plugin, against an in-process TLS server on 127.0.0.1 with certificates made
//! here (rcgen): the right authority, a wrong one, `InsecureSkipVerify`, a plugin that
//! demands a client certificate, a file that is not there.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use rcgen::{BasicConstraints, Certificate, CertificateParams, IsCa, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::client::{post, Addr, Failure, Reply};
use super::tls::{ring_provider, TlsFiles};

struct Issued {
    cert: Certificate,
    key: KeyPair,
}

fn ca(name: &str) -> Issued {
    let key = KeyPair::generate().unwrap();
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.distinguished_name.push(rcgen::DnType::CommonName, name);
    let cert = p.self_signed(&key).unwrap();
    Issued { cert, key }
}

fn issue(by: &Issued, names: &[&str]) -> Issued {
    let key = KeyPair::generate().unwrap();
    let p =
        CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap();
    let cert = p.signed_by(&key, &by.cert, &by.key).unwrap();
    Issued { cert, key }
}

/// The files a spec names, written under a temporary directory.
struct Pki {
    dir: tempfile::TempDir,
    ca: Issued,
    server: Issued,
}

impl Pki {
    fn new() -> Pki {
        let ca = ca("plugin ca");
        let server = issue(&ca, &["127.0.0.1", "localhost"]);
        Pki {
            dir: tempfile::tempdir().unwrap(),
            ca,
            server,
        }
    }

    fn write(&self, name: &str, pem: String) -> PathBuf {
        let p = self.dir.path().join(name);
        std::fs::write(&p, pem).unwrap();
        p
    }

    /// A plugin answering `Plugin.Activate` over TLS; with `clients`, it demands a
    /// certificate that authority signed.
    async fn serve(&self, clients: Option<&Issued>) -> String {
        let provider = Arc::new(ring_provider());
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .unwrap();
        let builder = match clients {
            Some(ca) => {
                let mut roots = rustls::RootCertStore::empty();
                roots.add(ca.cert.der().clone()).unwrap();
                let v = rustls::server::WebPkiClientVerifier::builder_with_provider(
                    Arc::new(roots),
                    provider,
                )
                .build()
                .unwrap();
                builder.with_client_cert_verifier(v)
            }
            None => builder.with_no_client_auth(),
        };
        let chain: Vec<CertificateDer<'static>> = vec![self.server.cert.der().clone()];
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.server.key.serialize_der()));
        let config = builder.with_single_cert(chain, key).unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            while let Ok((s, _)) = listener.accept().await {
                let Ok(mut s) = acceptor.accept(s).await else {
                    continue;
                };
                let mut buf = vec![0u8; 4096];
                let _ = s.read(&mut buf).await;
                let body = r#"{"Implements": ["NetworkDriver"]}"#;
                let reply = format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = s.write_all(reply.as_bytes()).await;
                let _ = s.shutdown().await;
            }
        });
        addr
    }
}

async fn activate(addr: &str, tls: TlsFiles) -> Result<Reply, Failure> {
    let a = Addr::TcpTls(addr.to_string(), tls);
    post(&a, "Plugin.Activate", None, Duration::from_secs(5)).await
}

fn broken(r: Result<Reply, Failure>) -> String {
    match r {
        Err(Failure::Broken(why)) => why,
        Err(e) => panic!("not a broken exchange: {e:?}"),
        Ok(r) => panic!("answered {}", r.status),
    }
}

#[tokio::test]
async fn a_plugin_over_tls_is_reached_only_with_the_authority_its_certificate_has() {
    let pki = Pki::new();
    let addr = pki.serve(None).await;
    let ca_file = Some(pki.write("ca.pem", pki.ca.cert.pem()));
    let ok = activate(
        &addr,
        TlsFiles {
            ca_file: ca_file.clone(),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(ok.status, 200);
    assert!(String::from_utf8_lossy(&ok.body).contains("NetworkDriver"));

    let other = ca("another ca");
    let wrong = Some(pki.write("other.pem", other.cert.pem()));
    let why = broken(
        activate(
            &addr,
            TlsFiles {
                ca_file: wrong,
                ..Default::default()
            },
        )
        .await,
    );
    assert!(
        why.starts_with("TLS: ") && why.contains("certificate"),
        "{why}"
    );

    // InsecureSkipVerify: no authority needed.
    let any = TlsFiles {
        insecure_skip_verify: true,
        ..Default::default()
    };
    assert_eq!(activate(&addr, any).await.unwrap().status, 200);

    // A CAFile that is not there is named.
    let gone = Some(pki.dir.path().join("missing.pem"));
    let why = broken(
        activate(
            &addr,
            TlsFiles {
                ca_file: gone,
                ..Default::default()
            },
        )
        .await,
    );
    assert!(why.contains("missing.pem"), "{why}");
}

#[tokio::test]
async fn a_plugin_that_demands_a_client_certificate_gets_the_one_the_spec_names() {
    let pki = Pki::new();
    let addr = pki.serve(Some(&pki.ca)).await;
    let ca_file = Some(pki.write("ca.pem", pki.ca.cert.pem()));
    let without = TlsFiles {
        ca_file: ca_file.clone(),
        ..Default::default()
    };
    assert!(
        activate(&addr, without).await.is_err(),
        "a plugin that demands a client certificate answered without one"
    );
    let client = issue(&pki.ca, &["ferryd"]);
    let with = TlsFiles {
        ca_file,
        cert_file: Some(pki.write("client.pem", client.cert.pem())),
        key_file: Some(pki.write("client-key.pem", client.key.serialize_pem())),
        ..Default::default()
    };
    assert_eq!(activate(&addr, with).await.unwrap().status, 200);
}

#[test]
fn a_certificate_without_its_key_is_a_mistake_in_the_spec() {
    let half = TlsFiles {
        cert_file: Some("/c.pem".into()),
        ..Default::default()
    };
    assert!(half.check().unwrap_err().contains("KeyFile"));
    assert!(TlsFiles::default().check().is_ok());
}
