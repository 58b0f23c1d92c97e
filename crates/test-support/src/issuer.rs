//! A stand-in OIDC issuer, for invoice-app's API tokens and for the Kubernetes API server's
//! ServiceAccount tokens that payment-provider takes: a real HTTP server serving discovery
//! and a JWKS of keys the test generates (it may hang, and counts what it is asked), and
//! tokens signed with them. The signing uses aws-lc-rs directly, not the verifiers' JWT
//! library, so the two sides cannot share a mistake.

use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::KeySize;
use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair, RSA_PKCS1_SHA256, RSA_PKCS1_SHA384,
    RSA_PSS_SHA256, RsaEncoding, RsaKeyPair,
};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use serde_json::{Value, json};

pub const JWKS_PATH: &str = "/openid/v1/jwks";

pub fn b64(bytes: impl AsRef<[u8]>) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

enum Pair {
    Rsa(RsaKeyPair),
    Ec(EcdsaKeyPair),
}

/// A signing key the test made, with its public JWK (which a test may alter before
/// publishing it).
pub struct SigningKey {
    pub kid: String,
    pub jwk: Value,
    pair: Pair,
}

impl SigningKey {
    pub fn rsa(kid: &str) -> Self {
        let pair = RsaKeyPair::generate(KeySize::Rsa2048).expect("RSA key generated");
        let jwk = json!({
            "kty": "RSA", "use": "sig", "alg": "RS256", "kid": kid,
            "n": b64(pair.public_key().modulus().big_endian_without_leading_zero()),
            "e": b64(pair.public_key().exponent().big_endian_without_leading_zero()),
        });
        SigningKey {
            kid: kid.to_owned(),
            jwk,
            pair: Pair::Rsa(pair),
        }
    }

    pub fn ec(kid: &str) -> Self {
        let pair =
            EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).expect("EC key generated");
        // Uncompressed point: 0x04 || x || y.
        let point = pair.public_key().as_ref();
        let jwk = json!({
            "kty": "EC", "use": "sig", "alg": "ES256", "kid": kid, "crv": "P-256",
            "x": b64(&point[1..33]), "y": b64(&point[33..65]),
        });
        SigningKey {
            kid: kid.to_owned(),
            jwk,
            pair: Pair::Ec(pair),
        }
    }

    /// An RSA key whose JWK publishes only the first `bits` of its modulus: a key too weak
    /// to trust, as an issuer might still list one. aws-lc-rs makes no RSA key under 2048
    /// bits and verifies with none, so its tokens never verify: a verifier that kept the
    /// key answers them 401, one that does not keep it finds no usable key.
    pub fn rsa_cut_to(kid: &str, bits: usize) -> Self {
        let key = SigningKey::rsa(kid);
        let Pair::Rsa(pair) = &key.pair else {
            unreachable!("an RSA key");
        };
        let modulus = pair
            .public_key()
            .modulus()
            .big_endian_without_leading_zero();
        let n = b64(&modulus[..bits / 8]);
        key.published_with("n", json!(n))
    }

    /// The same key, its JWK publishing `member` as `value` (e.g. `use` or `key_ops`).
    pub fn published_with(mut self, member: &str, value: Value) -> Self {
        self.jwk[member] = value;
        self
    }

    pub fn alg(&self) -> &'static str {
        match self.pair {
            Pair::Rsa(_) => "RS256",
            Pair::Ec(_) => "ES256",
        }
    }

    /// The public key as the PEM (64-column lines) an attacker would download and use as an
    /// HMAC secret.
    pub fn public_pem(&self) -> String {
        let der = self.public_der();
        let body = STANDARD.encode(&der);
        let lines: Vec<&str> = body
            .as_bytes()
            .chunks(64)
            .map(|c| std::str::from_utf8(c).expect("base64 is ASCII"))
            .collect();
        format!(
            "-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n",
            lines.join("\n")
        )
    }

    fn public_der(&self) -> Vec<u8> {
        let Pair::Rsa(pair) = &self.pair else {
            panic!("an RSA key");
        };
        pair.public_key()
            .as_der()
            .expect("public key DER")
            .as_ref()
            .to_vec()
    }

    /// The RSA public key's bytes as a verifier might hold them: X.509 DER and PEM.
    pub fn public_key_forms(&self) -> Vec<Vec<u8>> {
        let Pair::Rsa(pair) = &self.pair else {
            panic!("an RSA key");
        };
        let der = self.public_der();
        let pem = format!(
            "-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n",
            STANDARD.encode(&der)
        );
        vec![der, pem.into_bytes(), pair.public_key().as_ref().to_vec()]
    }

    /// A JWS signed with this key, its header naming its algorithm and key id.
    pub fn sign(&self, claims: &Value) -> String {
        let header = json!({"alg": self.alg(), "kid": self.kid, "typ": "JWT"});
        self.sign_with_header(&header, claims)
    }

    /// A JWS under another key id or algorithm name, as a forger would make one.
    pub fn sign_as(&self, alg: &str, kid: &str, claims: &Value) -> String {
        self.sign_with_header(&json!({"alg": alg, "typ": "JWT", "kid": kid}), claims)
    }

    /// Signed under `header` as given. An RSA key signs with the padding the header's `alg`
    /// names (RS256 for a name it does not know, as a forger would).
    pub fn sign_with_header(&self, header: &Value, claims: &Value) -> String {
        let input = signing_input(header, claims);
        let rng = SystemRandom::new();
        let signature = match &self.pair {
            Pair::Rsa(pair) => {
                let padding: &'static dyn RsaEncoding = match header["alg"].as_str() {
                    Some("RS384") => &RSA_PKCS1_SHA384,
                    Some("PS256") => &RSA_PSS_SHA256,
                    _ => &RSA_PKCS1_SHA256,
                };
                let mut sig = vec![0; pair.public_modulus_len()];
                pair.sign(padding, &rng, input.as_bytes(), &mut sig)
                    .expect("signed");
                sig
            }
            Pair::Ec(pair) => pair
                .sign(&rng, input.as_bytes())
                .expect("signed")
                .as_ref()
                .to_vec(),
        };
        format!("{input}.{}", b64(&signature))
    }
}

/// `base64url(header).base64url(claims)`.
pub fn signing_input(header: &Value, claims: &Value) -> String {
    format!("{}.{}", b64(header.to_string()), b64(claims.to_string()))
}

/// HS256 over the token, keyed with `secret`: the algorithm-confusion forgery.
pub fn hs256(header: &Value, claims: &Value, secret: &[u8]) -> String {
    let input = signing_input(header, claims);
    let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, secret);
    let tag = aws_lc_rs::hmac::sign(&key, input.as_bytes());
    format!("{input}.{}", b64(tag.as_ref()))
}

pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs()
}

#[derive(Default)]
struct Published {
    keys: Mutex<Vec<Value>>,
    jwks_fetches: AtomicUsize,
    /// The Authorization header of every request, in order.
    authorizations: Mutex<Vec<Option<String>>>,
    url: Mutex<String>,
    /// Accept requests and answer none until released (an API server that hangs).
    hanging: AtomicBool,
    released: tokio::sync::Notify,
}

/// The issuer, serving until dropped.
pub struct Issuer {
    /// The issuer URL: tokens' `iss`, and where discovery starts.
    pub url: String,
    published: Arc<Published>,
    handle: actix_web::dev::ServerHandle,
}

impl Issuer {
    /// Serves `keys` on a free loopback port, from the test's runtime.
    pub fn start(keys: &[&SigningKey]) -> Issuer {
        let published = Arc::new(Published::default());
        let listener = TcpListener::bind("127.0.0.1:0").expect("free port");
        let url = format!(
            "http://127.0.0.1:{}",
            listener.local_addr().expect("addr").port()
        );
        *published.url.lock().expect("lock") = url.clone();
        let data = web::Data::from(published.clone());
        let server = HttpServer::new(move || {
            App::new()
                .app_data(data.clone())
                .route(
                    "/.well-known/openid-configuration",
                    web::get().to(discovery),
                )
                .route(JWKS_PATH, web::get().to(jwks))
        })
        .workers(1)
        .disable_signals()
        .listen(listener)
        .expect("listening")
        .run();
        let handle = server.handle();
        tokio::spawn(server);
        let issuer = Issuer {
            url,
            published,
            handle,
        };
        issuer.publish(keys);
        issuer
    }

    /// Replaces the published key set (a key rotation at the API server).
    pub fn publish(&self, keys: &[&SigningKey]) {
        *self.published.keys.lock().expect("lock") = keys.iter().map(|k| k.jwk.clone()).collect();
    }

    /// While hanging, discovery and JWKS requests are accepted and not answered; those
    /// waiting are answered once it stops.
    pub fn hang(&self, hanging: bool) {
        self.published.hanging.store(hanging, Ordering::SeqCst);
        if !hanging {
            self.published.released.notify_waiters();
        }
    }

    pub fn jwks_fetches(&self) -> usize {
        self.published.jwks_fetches.load(Ordering::SeqCst)
    }

    /// The plain HTTP address, for a TLS front.
    pub fn addr(&self) -> std::net::SocketAddr {
        let url = self.published.url.lock().expect("lock").clone();
        url.trim_start_matches("http://")
            .parse()
            .expect("host:port")
    }

    /// Serves discovery as the issuer at `url` (e.g. behind TLS): tokens' `iss` and the
    /// `jwks_uri` follow it.
    pub fn serve_as(&mut self, url: &str) {
        *self.published.url.lock().expect("lock") = url.to_owned();
        self.url = url.to_owned();
    }

    pub fn authorizations(&self) -> Vec<Option<String>> {
        self.published.authorizations.lock().expect("lock").clone()
    }

    /// Claims of an access token for `audience`, as an OIDC provider issues them to `sub`
    /// with `scope`, valid for 5 minutes.
    pub fn access_claims(&self, audience: &str, sub: &str, scope: &str) -> Value {
        let now = now();
        json!({
            "iss": self.url, "aud": audience, "sub": sub, "scope": scope,
            "iat": now, "exp": now + 300,
        })
    }

    /// Claims as a projected token for `namespace`/`name` carries them, valid for 10 minutes.
    pub fn service_account_claims(&self, namespace: &str, name: &str) -> Value {
        let now = now();
        json!({
            "aud": ["payment-provider"],
            "exp": now + 600,
            "iat": now,
            "nbf": now,
            "iss": self.url,
            "sub": format!("system:serviceaccount:{namespace}:{name}"),
            "jti": uuid::Uuid::new_v4().to_string(),
            "kubernetes.io": {
                "namespace": namespace,
                "serviceaccount": {"name": name, "uid": uuid::Uuid::new_v4().to_string()},
                "pod": {"name": format!("{name}-7d9f8-abcde"), "uid": uuid::Uuid::new_v4().to_string()},
            },
        })
    }
}

impl Drop for Issuer {
    fn drop(&mut self) {
        let handle = self.handle.clone();
        tokio::spawn(async move { handle.stop(false).await });
    }
}

fn record(published: &Published, req: &HttpRequest) {
    let authorization = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    published
        .authorizations
        .lock()
        .expect("lock")
        .push(authorization);
}

/// Waits as long as the issuer hangs.
async fn hang_if_asked(published: &Published) {
    loop {
        // Registered before the check, so a release in between is not missed.
        let released = published.released.notified();
        if !published.hanging.load(Ordering::SeqCst) {
            return;
        }
        released.await;
    }
}

async fn discovery(published: web::Data<Published>, req: HttpRequest) -> HttpResponse {
    record(&published, &req);
    hang_if_asked(&published).await;
    let url = published.url.lock().expect("lock").clone();
    HttpResponse::Ok().json(json!({
        "issuer": url,
        "jwks_uri": format!("{url}{JWKS_PATH}"),
        "response_types_supported": ["id_token"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["RS256", "ES256"],
    }))
}

async fn jwks(published: web::Data<Published>, req: HttpRequest) -> HttpResponse {
    record(&published, &req);
    published.jwks_fetches.fetch_add(1, Ordering::SeqCst);
    hang_if_asked(&published).await;
    let keys = published.keys.lock().expect("lock").clone();
    HttpResponse::Ok().json(json!({ "keys": keys }))
}

/// TLS in front of a plain server, with a certificate for 127.0.0.1 from a CA the test
/// makes: the issuer as a pod reaches the API server, trusting the cluster's CA bundle.
pub struct TlsFront {
    pub port: u16,
    /// The CA's certificate, PEM: what `SA_JWKS_CA_FILE` would hold.
    pub ca_pem: String,
    task: tokio::task::JoinHandle<()>,
}

impl TlsFront {
    pub async fn start(target: std::net::SocketAddr) -> TlsFront {
        use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
        use tokio_rustls::rustls::{self, pki_types::PrivateKeyDer};

        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("params");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "test cluster CA");
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().expect("key"))
            .expect("CA certificate");
        let server_key = KeyPair::generate().expect("key");
        let server_cert = CertificateParams::new(vec!["127.0.0.1".to_owned()])
            .expect("params")
            .signed_by(&server_key, &ca)
            .expect("server certificate");
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("protocol versions")
            .with_no_client_auth()
            .with_single_cert(
                vec![server_cert.der().clone()],
                PrivateKeyDer::Pkcs8(server_key.serialize_der().into()),
            )
            .expect("server config");
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("free port");
        let port = listener.local_addr().expect("addr").port();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    // A client that refuses our certificate simply ends the connection.
                    let Ok(mut tls) = acceptor.accept(stream).await else {
                        return;
                    };
                    if let Ok(mut plain) = tokio::net::TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
                    }
                });
            }
        });
        TlsFront {
            port,
            ca_pem: ca.pem(),
            task,
        }
    }
}

impl Drop for TlsFront {
    fn drop(&mut self) {
        self.task.abort();
    }
}
