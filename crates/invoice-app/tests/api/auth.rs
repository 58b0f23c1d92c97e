//! Every API call is authenticated and authorised, through the real application on both
//! backends. A stand-in OIDC issuer (discovery document and JWKS, over HTTP) publishes keys
//! generated here, and the tokens are real JWTs signed with them; API keys are configured as
//! digests; the development key works only where neither is configured, on loopback.

use std::net::TcpListener;
use std::time::{Duration, Instant};

use invoice_app::auth::{ApiKeys, DEV_API_KEY, JwtSettings, TokenTypes};
use invoice_app::config::Config;
use invoice_app::startup::Application;
use jsonwebtoken::Algorithm;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::helpers::{Backend, Builder, TestApp, assert_problem, spawn_app};
use test_support::both_backends;
use test_support::issuer::{Issuer, SigningKey, b64, hs256};

const AUDIENCE: &str = "invoice-app";
/// Client `ci` holds two read keys at once (a rotation in progress).
const CI_KEY_OLD: &str = "ci-key-old-6f1c2a9e4b7d0358";
const CI_KEY_NEW: &str = "ci-key-new-0d8e5b3a7c1f9246";
/// Client `billing` may create invoices and pay, but not read.
const BILLING_KEY: &str = "billing-key-93a7e1c5d2b4f608";

const REALM: &str = r#"Bearer realm="invoice-app""#;
const INVALID_TOKEN: &str = r#"Bearer realm="invoice-app", error="invalid_token""#;

fn insufficient(scope: &str) -> String {
    format!(r#"Bearer realm="invoice-app", error="insufficient_scope", scope="{scope}""#)
}

fn api_keys() -> ApiKeys {
    let entry = |client: &str, scopes: Value, key: &str| json!({"client": client, "scopes": scopes, "sha256": hex::encode(Sha256::digest(key))});
    let json = json!([
        entry("ci", json!(["invoices:read"]), CI_KEY_OLD),
        entry("ci", json!(["invoices:read"]), CI_KEY_NEW),
        entry(
            "billing",
            json!(["invoices:write", "invoices:pay"]),
            BILLING_KEY
        ),
    ]);
    ApiKeys::parse(&json.to_string()).expect("valid API keys")
}

/// invoice-app taking tokens of `issuer` (RS256, PS256 and ES256 allowed) and the API keys
/// above, with no provider: these tests start pay runs only where they need one.
async fn spawn_secured(
    backend: Backend,
    issuer: &str,
    tune: impl FnOnce(&mut JwtSettings),
) -> TestApp {
    secured(backend, issuer, tune).spawn().await
}

/// [`spawn_secured`] with a provider, for the tests that start pay runs.
async fn spawn_secured_paying(backend: Backend, issuer: &str) -> TestApp {
    secured(backend, issuer, |_| {})
        .provider(|_| {})
        .spawn()
        .await
}

fn secured<'a>(backend: Backend, issuer: &str, tune: impl FnOnce(&mut JwtSettings)) -> Builder<'a> {
    let mut settings = JwtSettings::new(
        issuer,
        AUDIENCE,
        vec![Algorithm::RS256, Algorithm::PS256, Algorithm::ES256],
    );
    settings.refresh_cooldown = Duration::from_millis(300);
    tune(&mut settings);
    TestApp::builder(backend).configure(move |c| {
        c.auth.jwt = Some(settings);
        c.auth.api_keys = Some(api_keys());
    })
}

/// A request with exactly the credential given (the helpers' client would add the
/// development key).
async fn call(app: &TestApp, method: &str, path: &str, token: Option<&str>) -> reqwest::Response {
    let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
    let mut request = reqwest::Client::new().request(method.clone(), app.url(path));
    if method == reqwest::Method::POST && path == "/invoices" {
        request = request.json(
            &json!({"customer_id": "C001", "amount": {"minor_units": 100, "currency": "EUR"}}),
        );
    }
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    request.send().await.expect("sent")
}

fn challenge(response: &reqwest::Response) -> String {
    response
        .headers()
        .get("www-authenticate")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

async fn assert_refused(response: reqwest::Response, expected_challenge: &str, what: &str) {
    assert_eq!(response.status().as_u16(), 401, "{what}");
    assert_eq!(challenge(&response), expected_challenge, "{what}");
    assert_problem(response, 401, "unauthorized").await;
}

async fn assert_forbidden(response: reqwest::Response, scope: &str, what: &str) {
    assert_eq!(response.status().as_u16(), 403, "{what}");
    assert_eq!(challenge(&response), insufficient(scope), "{what}");
    assert_problem(response, 403, "insufficient_scope").await;
}

async fn json_of(response: reqwest::Response, status: u16, what: &str) -> Value {
    assert_eq!(response.status().as_u16(), status, "{what}");
    response.json().await.expect("JSON body")
}

/// Polls a pay run with `token` until it has finished.
async fn finished_run(app: &TestApp, location: &str, token: &str) -> Value {
    for _ in 0..300 {
        let run = json_of(call(app, "GET", location, Some(token)).await, 200, location).await;
        if run["status"] != "running" {
            return run;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("pay run {location} did not finish");
}

async fn without_a_credential_every_api_route_answers_401(backend: Backend) {
    let key = SigningKey::rsa("rsa-1");
    let issuer = Issuer::start(&[&key]);
    let app = spawn_secured_paying(backend, &issuer.url).await;
    let created = json_of(
        call(&app, "POST", "/invoices", Some(BILLING_KEY)).await,
        201,
        "create",
    )
    .await;
    let invoice = format!("/invoices/{}", created["id"].as_str().expect("id"));
    let started = call(&app, "POST", "/pay-runs", Some(BILLING_KEY)).await;
    let run = started
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .expect("Location")
        .to_owned();
    assert_eq!(started.status().as_u16(), 202);
    finished_run(&app, &run, CI_KEY_OLD).await;

    // Every scoped route of the table, by each method a client may send it with, its `{id}`
    // naming the invoice or the run made above.
    let concrete = |path: &str| {
        let id = if path.starts_with("/pay-runs/") {
            &run["/pay-runs/".len()..]
        } else {
            &invoice["/invoices/".len()..]
        };
        path.replace("{id}", id)
    };
    let attempts = format!("{invoice}/attempts");
    let actions = format!("{invoice}/actions");
    let (void, retry, resolve) = (
        format!("{invoice}/void"),
        format!("{invoice}/retry"),
        format!("{invoice}/resolve"),
    );
    let routes: Vec<(&str, String)> = invoice_app::http::ROUTES
        .iter()
        .filter(|r| r.scope().is_some())
        .flat_map(|r| r.method.sent_as().iter().map(|m| (*m, concrete(r.path))))
        .collect();
    for (method, path) in [
        ("GET", "/invoices"),
        ("HEAD", "/invoices"),
        ("POST", "/invoices"),
        ("GET", invoice.as_str()),
        ("HEAD", invoice.as_str()),
        ("GET", attempts.as_str()),
        ("HEAD", attempts.as_str()),
        ("GET", actions.as_str()),
        ("HEAD", actions.as_str()),
        ("POST", void.as_str()),
        ("POST", retry.as_str()),
        ("POST", resolve.as_str()),
        ("POST", "/invoices/pay"),
        ("POST", "/pay-runs"),
        ("GET", run.as_str()),
    ] {
        assert!(
            routes.iter().any(|(m, p)| *m == method && p == path),
            "{method} {path} is no scoped route of the table"
        );
    }
    for (method, path) in &routes {
        let (method, path) = (*method, path.as_str());
        let what = format!("{method} {path}");
        let response = call(&app, method, path, None).await;
        if method == "HEAD" {
            assert_eq!(response.status().as_u16(), 401, "{what}");
            assert_eq!(challenge(&response), REALM, "{what}");
        } else {
            assert_refused(response, REALM, &what).await;
        }
        for wrong in ["not-a-key-at-all", DEV_API_KEY, "eyJh.eyJz.c2ln"] {
            let response = call(&app, method, path, Some(wrong)).await;
            assert_eq!(response.status().as_u16(), 401, "{what} with {wrong}");
            assert_eq!(challenge(&response), INVALID_TOKEN, "{what} with {wrong}");
        }
    }

    // Another scheme is no bearer credential; two credentials are a malformed request.
    let basic = reqwest::Client::new()
        .get(app.url("/invoices"))
        .header("authorization", "Basic Y2k6Y2kta2V5")
        .send()
        .await
        .expect("sent");
    assert_refused(basic, REALM, "Basic").await;
    let twice = reqwest::Client::new()
        .get(app.url("/invoices"))
        .header("authorization", format!("Bearer {CI_KEY_OLD}"))
        .header("authorization", format!("Bearer {CI_KEY_NEW}"))
        .send()
        .await
        .expect("sent");
    assert_refused(
        twice,
        r#"Bearer realm="invoice-app", error="invalid_request""#,
        "two credentials",
    )
    .await;

    // The credential is checked before the body is read: neither a malformed nor an
    // oversized body gets the answer it would get from the body's checks (400, 413).
    for body in [b"{".to_vec(), vec![b'x'; 100 * 1024]] {
        let response = reqwest::Client::new()
            .post(app.url("/invoices"))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .expect("sent");
        assert_refused(response, REALM, "unauthenticated body").await;
    }

    // Health, readiness and the API's description stay open: the table's open routes.
    let open: Vec<&str> = invoice_app::http::ROUTES
        .iter()
        .filter(|r| r.scope().is_none())
        .map(|r| r.path)
        .collect();
    for path in ["/healthz", "/readyz", "/openapi.json"] {
        assert!(open.contains(&path), "{path} is no open route of the table");
    }
    for path in open {
        assert_eq!(
            call(&app, "GET", path, None).await.status().as_u16(),
            200,
            "{path}"
        );
    }
    let page = json_of(
        call(&app, "GET", "/invoices", Some(CI_KEY_NEW)).await,
        200,
        "list",
    )
    .await;
    assert_eq!(
        page["items"].as_array().map(Vec::len),
        Some(1),
        "refused requests created nothing"
    );
}

/// Every scoped route of the table refuses a token holding every scope but its own (403,
/// naming the scope it needs), before its body is read or anything is done: the operator
/// actions admit `invoices:manage` only, and it admits nothing else.
async fn every_route_refuses_a_token_without_its_scope(backend: Backend) {
    let rsa = SigningKey::rsa("rsa-1");
    let issuer = Issuer::start(&[&rsa]);
    let app = spawn_secured(backend, &issuer.url, |_| {}).await;
    let created = json_of(
        call(&app, "POST", "/invoices", Some(BILLING_KEY)).await,
        201,
        "create",
    )
    .await;
    let id = created["id"].as_str().expect("id").to_owned();
    let all = [
        "invoices:read",
        "invoices:write",
        "invoices:pay",
        "invoices:manage",
    ];
    let mut manage_routes = 0;
    for route in invoice_app::http::ROUTES {
        let Some(scope) = route.scope() else { continue };
        assert!(
            all.contains(&scope.as_str()),
            "{scope} is not among {all:?}"
        );
        let others: Vec<&str> = all
            .iter()
            .copied()
            .filter(|s| *s != scope.as_str())
            .collect();
        let token = rsa.sign(&issuer.access_claims(AUDIENCE, "ops", &others.join(" ")));
        let path = route.path.replace("{id}", &id);
        for method in route.method.sent_as() {
            let what = format!("{method} {path} with {others:?}");
            let response = call(&app, method, &path, Some(&token)).await;
            if *method == "HEAD" {
                assert_eq!(response.status().as_u16(), 403, "{what}");
                assert_eq!(challenge(&response), insufficient(scope.as_str()), "{what}");
            } else {
                assert_forbidden(response, scope.as_str(), &what).await;
            }
        }
        if scope.as_str() == "invoices:manage" {
            manage_routes += 1;
        }
    }
    assert_eq!(manage_routes, 3, "void, retry and resolve");
    // Nothing was done: the invoice is as created, with no action on record.
    let reader = rsa.sign(&issuer.access_claims(AUDIENCE, "ops", "invoices:read"));
    let stored = json_of(
        call(&app, "GET", &format!("/invoices/{id}"), Some(&reader)).await,
        200,
        "read",
    )
    .await;
    assert_eq!(stored["status"], "pending", "{stored}");
    let actions = json_of(
        call(
            &app,
            "GET",
            &format!("/invoices/{id}/actions"),
            Some(&reader),
        )
        .await,
        200,
        "actions",
    )
    .await;
    assert_eq!(actions["items"], json!([]), "{actions}");
    // The scope alone admits an action: a void by a manage-only token works.
    let manager = rsa.sign(&issuer.access_claims(AUDIENCE, "ops", "invoices:manage"));
    let voided = reqwest::Client::new()
        .post(app.url(&format!("/invoices/{id}/void")))
        .bearer_auth(&manager)
        .json(&json!({"reason": "duplicate of another invoice"}))
        .send()
        .await
        .expect("sent");
    let voided = json_of(voided, 200, "void").await;
    assert_eq!(voided["status"], "void", "{voided}");
    let actions = json_of(
        call(
            &app,
            "GET",
            &format!("/invoices/{id}/actions"),
            Some(&reader),
        )
        .await,
        200,
        "actions",
    )
    .await;
    assert_eq!(actions["items"][0]["actor"], "jwt:ops", "{actions}");
}

async fn a_token_may_do_what_its_scopes_allow(backend: Backend) {
    let rsa = SigningKey::rsa("rsa-1");
    let ec = SigningKey::ec("ec-1");
    let mut ec_without_alg = SigningKey::ec("ec-2");
    ec_without_alg
        .jwk
        .as_object_mut()
        .expect("object")
        .remove("alg");
    let issuer = Issuer::start(&[&rsa, &ec, &ec_without_alg]);
    let app = spawn_secured_paying(backend, &issuer.url).await;

    let reader = rsa.sign(&issuer.access_claims(AUDIENCE, "carol", "openid invoices:read"));
    assert_eq!(
        call(&app, "GET", "/invoices", Some(&reader)).await.status(),
        200
    );
    assert_forbidden(
        call(&app, "POST", "/invoices", Some(&reader)).await,
        "invoices:write",
        "read token creates",
    )
    .await;
    assert_forbidden(
        call(&app, "POST", "/invoices/pay", Some(&reader)).await,
        "invoices:pay",
        "read token pays",
    )
    .await;
    assert_forbidden(
        call(&app, "POST", "/pay-runs", Some(&reader)).await,
        "invoices:pay",
        "read token starts a run",
    )
    .await;

    // `scp` as a space-separated string, signed with ES256.
    let mut claims = issuer.access_claims(AUDIENCE, "alice", "");
    claims["scp"] = json!("invoices:write");
    let writer = ec.sign(&claims);
    let created = json_of(
        call(&app, "POST", "/invoices", Some(&writer)).await,
        201,
        "write token creates",
    )
    .await;
    assert_eq!(created["created_by"], "jwt:alice", "{created}");
    let invoice = format!("/invoices/{}", created["id"].as_str().expect("id"));
    assert_forbidden(
        call(&app, "GET", &invoice, Some(&writer)).await,
        "invoices:read",
        "write token reads",
    )
    .await;
    let read_back = json_of(
        call(&app, "GET", &invoice, Some(&reader)).await,
        200,
        "read",
    )
    .await;
    assert_eq!(read_back["created_by"], "jwt:alice");

    // Paying moves money but reads nothing: the answer holds the run and its counts, never
    // the invoices (descriptions, customers, amounts, creators) it settled.
    let mut claims = issuer.access_claims(AUDIENCE, "dave", "");
    claims["scp"] = json!("invoices:pay");
    let pay_only = rsa.sign(&claims);
    let report = json_of(
        call(&app, "POST", "/invoices/pay", Some(&pay_only)).await,
        200,
        "pay-only token pays",
    )
    .await;
    let settled = |r: &Value| {
        ["paid", "failed"]
            .iter()
            .map(|k| r["summary"][k].as_u64().unwrap_or_default())
            .sum::<u64>()
    };
    assert!(settled(&report) >= 1, "{report}");
    let text = report.to_string();
    for leak in [
        "paid\":[",
        "failed\":[",
        "retry_later\":[",
        "jwt:alice",
        "customer_id",
    ] {
        assert!(!text.contains(leak), "pay-only answer shows {leak}: {text}");
    }
    assert!(
        !text.contains(created["id"].as_str().expect("id")),
        "{text}"
    );
    // Its attempts are read with `invoices:read`, and say who started the run.
    let attempts = format!("{invoice}/attempts");
    for token in [&writer, &pay_only] {
        assert_forbidden(
            call(&app, "GET", &attempts, Some(token)).await,
            "invoices:read",
            "attempts without the read scope",
        )
        .await;
    }
    let tried = json_of(
        call(&app, "GET", &attempts, Some(&reader)).await,
        200,
        "attempts",
    )
    .await;
    assert_eq!(tried["items"][0]["started_by"], "jwt:dave", "{tried}");
    assert_eq!(tried["items"][0]["trigger"], "api", "{tried}");

    // `scp` as a list, an audience list that includes ours, a key whose JWK names no `alg`.
    let mut claims = issuer.access_claims(AUDIENCE, "bob", "");
    claims["scp"] = json!(["invoices:pay", "invoices:read"]);
    claims["aud"] = json!(["account", AUDIENCE]);
    let payer = ec_without_alg.sign(&claims);
    let started = call(&app, "POST", "/pay-runs", Some(&payer)).await;
    assert_eq!(started.status().as_u16(), 202);
    let location = started
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .expect("Location")
        .to_owned();
    let run = finished_run(&app, &location, &payer).await;
    assert_eq!(run["started_by"], "jwt:bob", "{run}");
    let second = json_of(
        call(&app, "POST", "/invoices", Some(&writer)).await,
        201,
        "write token creates again",
    )
    .await;
    let report = json_of(
        call(&app, "POST", "/invoices/pay", Some(&payer)).await,
        200,
        "pay",
    )
    .await;
    assert_eq!(report["status"], "completed", "{report}");
    // With `invoices:read` as well, the settled invoices are listed.
    let listed: Vec<&Value> = ["paid", "failed"]
        .iter()
        .filter_map(|k| report[k].as_array())
        .flatten()
        .map(|invoice| &invoice["id"])
        .collect();
    assert_eq!(listed, [&second["id"]], "{report}");
    assert!(report["retry_later"].is_array(), "{report}");

    // Clock skew: a five-minute token that expired 10 s ago is within the leeway.
    let mut claims = issuer.access_claims(AUDIENCE, "carol", "invoices:read");
    let now = jsonwebtoken::get_current_timestamp();
    claims["iat"] = json!(now - 310);
    claims["exp"] = json!(now - 10);
    assert_eq!(
        call(&app, "GET", "/invoices", Some(&rsa.sign(&claims)))
            .await
            .status(),
        200
    );
}

async fn forged_expired_and_misdirected_tokens_are_refused(backend: Backend) {
    let rsa = SigningKey::rsa("rsa-1");
    let ec = SigningKey::ec("ec-1");
    let issuer = Issuer::start(&[&rsa, &ec]);
    let app = spawn_secured(backend, &issuer.url, |_| {}).await;
    let good = issuer.access_claims(AUDIENCE, "mallory", "invoices:read");
    assert_eq!(
        call(&app, "GET", "/invoices", Some(&rsa.sign(&good)))
            .await
            .status(),
        200,
        "the well-formed token works, so what follows is refused for its flaw alone"
    );
    let now = jsonwebtoken::get_current_timestamp();
    let with = |key: &str, value: Value| {
        let mut claims = good.clone();
        claims[key] = value;
        claims
    };
    let without = |key: &str| {
        let mut claims = good.clone();
        claims.as_object_mut().expect("object").remove(key);
        claims
    };
    let unsigned = |alg: &str, signature: &str| {
        format!(
            "{}.{}.{signature}",
            b64(json!({"alg": alg, "typ": "JWT", "kid": "rsa-1"}).to_string()),
            b64(good.to_string())
        )
    };
    // The classic confusion: HS256 with the RSA public key as the HMAC secret.
    let hmac_with_public_key = hs256(
        &json!({"alg": "HS256", "typ": "JWT", "kid": "rsa-1"}),
        &good,
        rsa.public_pem().as_bytes(),
    );
    // A valid signature over other claims: the payload swapped for one granting more.
    let tampered = {
        let signed = rsa.sign(&good);
        let parts: Vec<&str> = signed.split('.').collect();
        let elevated = with("scope", json!("invoices:read invoices:pay"));
        format!("{}.{}.{}", parts[0], b64(elevated.to_string()), parts[2])
    };
    let cases: Vec<(&str, String)> = vec![
        (
            "expired beyond the leeway",
            rsa.sign(&with("exp", json!(now - 120))),
        ),
        ("not valid yet", rsa.sign(&with("nbf", json!(now + 300)))),
        (
            "another audience",
            rsa.sign(&with("aud", json!("another-api"))),
        ),
        (
            "another issuer",
            rsa.sign(&with("iss", json!("https://idp.example.com"))),
        ),
        ("no exp", rsa.sign(&without("exp"))),
        ("no sub", rsa.sign(&without("sub"))),
        ("no aud", rsa.sign(&without("aud"))),
        ("unknown kid", rsa.sign_as("RS256", "no-such-key", &good)),
        ("alg none, no signature", unsigned("none", "")),
        ("alg none, some signature", unsigned("none", "c2lnbmF0dXJl")),
        ("HS256 keyed with the public key", hmac_with_public_key),
        (
            "PS256 where the JWK says RS256",
            rsa.sign_as("PS256", "rsa-1", &good),
        ),
        (
            "RS384, not configured",
            rsa.sign_as("RS384", "rsa-1", &good),
        ),
        (
            "an EC signature under the RSA key's kid",
            ec.sign_as("ES256", "rsa-1", &good),
        ),
        ("a tampered payload", tampered),
    ];
    for (what, token) in cases {
        assert_refused(
            call(&app, "GET", "/invoices", Some(&token)).await,
            INVALID_TOKEN,
            what,
        )
        .await;
    }
}

async fn a_rotated_key_works_without_restart_and_a_withdrawn_one_stops(backend: Backend) {
    let old = SigningKey::rsa("2026-01");
    let new = SigningKey::ec("2026-02");
    let issuer = Issuer::start(&[&old]);
    let app = spawn_secured(backend, &issuer.url, |s| {
        s.refresh_cooldown = Duration::from_millis(300);
        s.refresh_after = Duration::from_millis(1500);
    })
    .await;
    let claims = issuer.access_claims(AUDIENCE, "svc", "invoices:read");
    let (old_token, new_token) = (old.sign(&claims), new.sign(&claims));
    assert_eq!(
        call(&app, "GET", "/invoices", Some(&old_token))
            .await
            .status(),
        200
    );
    assert_refused(
        call(&app, "GET", "/invoices", Some(&new_token)).await,
        INVALID_TOKEN,
        "not yet published",
    )
    .await;

    // The IdP publishes the next key; the first token naming it makes us fetch again.
    issuer.publish(&[&old, &new]);
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(
        call(&app, "GET", "/invoices", Some(&new_token))
            .await
            .status(),
        200,
        "rotated key"
    );
    assert_eq!(
        call(&app, "GET", "/invoices", Some(&old_token))
            .await
            .status(),
        200,
        "both during the rotation"
    );

    // The IdP withdraws the old key: the first token after the refresh age is checked
    // against our copy while it is fetched again in the background; then it is gone.
    issuer.publish(&[&new]);
    tokio::time::sleep(Duration::from_millis(1700)).await;
    let fetches = issuer.jwks_fetches();
    assert_eq!(
        call(&app, "GET", "/invoices", Some(&new_token))
            .await
            .status(),
        200
    );
    wait_for(|| issuer.jwks_fetches() > fetches).await;
    assert_refused(
        call(&app, "GET", "/invoices", Some(&old_token)).await,
        INVALID_TOKEN,
        "withdrawn key",
    )
    .await;
}

/// The IdP withdraws every key (or rotates to keys this side refuses): its answer replaces
/// the cached keys, so the withdrawn key stops at the next refresh, not at the cache's
/// maximum age (the outside audit of issue 19: it was accepted for the hour).
async fn a_key_set_with_no_usable_key_withdraws_the_cached_ones(backend: Backend) {
    let key = SigningKey::rsa("only");
    let issuer = Issuer::start(&[&key]);
    let app = spawn_secured(backend, &issuer.url, |s| {
        s.refresh_cooldown = Duration::from_millis(100);
        s.refresh_after = Duration::from_millis(300);
    })
    .await;
    let token = key.sign(&issuer.access_claims(AUDIENCE, "svc", "invoices:read"));
    assert_eq!(
        call(&app, "GET", "/invoices", Some(&token)).await.status(),
        200
    );
    issuer.publish(&[]);
    tokio::time::sleep(Duration::from_millis(400)).await;
    let fetches = issuer.jwks_fetches();
    // The first token after the refresh age starts the refresh.
    let _ = call(&app, "GET", "/invoices", Some(&token)).await;
    wait_for(|| issuer.jwks_fetches() > fetches).await;
    // No key left to check it with: unavailable, as before any key was fetched.
    assert_problem(
        call(&app, "GET", "/invoices", Some(&token)).await,
        503,
        "service_unavailable",
    )
    .await;
}

/// Only keys meant for verifying signatures, and RSA keys of 2048 bits or more, are used
/// (the safeguards payment-provider's key cache has too). A key the IdP marks for
/// encryption (`use`) or for other operations (`key_ops`) verifies no token, though it
/// signed it; a set holding only a weak RSA key holds no usable key: 503, as an empty set.
/// Each key was used with its check removed (200, and 401 for the weak key kept).
async fn keys_not_for_verifying_and_weak_rsa_keys_are_not_used(backend: Backend) {
    let verify = SigningKey::ec("verify").published_with("key_ops", json!(["verify"]));
    let encrypt = SigningKey::rsa("encrypt").published_with("use", json!("enc"));
    let sign_only = SigningKey::ec("sign-only").published_with("key_ops", json!(["sign"]));
    let weak = SigningKey::rsa_cut_to("weak", 1024);
    let issuer = Issuer::start(&[&verify, &encrypt, &sign_only]);
    let app = spawn_secured(backend, &issuer.url, |s| {
        s.refresh_cooldown = Duration::from_millis(100);
        s.refresh_after = Duration::from_millis(200);
    })
    .await;
    let claims = issuer.access_claims(AUDIENCE, "svc", "invoices:read");
    assert_eq!(
        call(&app, "GET", "/invoices", Some(&verify.sign(&claims)))
            .await
            .status(),
        200,
        "key_ops holding verify"
    );
    for (what, key) in [("use enc", &encrypt), ("key_ops sign only", &sign_only)] {
        assert_refused(
            call(&app, "GET", "/invoices", Some(&key.sign(&claims))).await,
            INVALID_TOKEN,
            what,
        )
        .await;
    }

    issuer.publish(&[&weak]);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let fetches = issuer.jwks_fetches();
    // The first token after the refresh age starts the refresh.
    let _ = call(&app, "GET", "/invoices", Some(&verify.sign(&claims))).await;
    wait_for(|| issuer.jwks_fetches() > fetches).await;
    assert_problem(
        call(&app, "GET", "/invoices", Some(&weak.sign(&claims))).await,
        503,
        "service_unavailable",
    )
    .await;
}

/// A request that stops waiting for the key fetch it started (its client hung up, or its
/// wait ran out) leaves the fetch running in a task of its own, as payment-provider's does:
/// the rotated key it was fetching works once the IdP answers, with no second fetch. Were
/// the fetch part of the request, it would end with it, and the cooldown would keep the
/// rotated key out.
async fn a_dropped_request_does_not_cancel_the_key_refresh(backend: Backend) {
    let (old, new) = (SigningKey::rsa("old"), SigningKey::rsa("new"));
    let issuer = Issuer::start(&[&old]);
    let cooldown = Duration::from_secs(2);
    let app = spawn_secured(backend, &issuer.url, |s| s.refresh_cooldown = cooldown).await;
    let claims = issuer.access_claims(AUDIENCE, "svc", "invoices:read");
    assert_eq!(
        call(&app, "GET", "/invoices", Some(&old.sign(&claims)))
            .await
            .status(),
        200
    );
    issuer.publish(&[&old, &new]);
    issuer.hang(true);
    tokio::time::sleep(cooldown + Duration::from_millis(100)).await;
    let fetches = issuer.jwks_fetches();

    // The new kid starts a fetch, which hangs; the client gives up before the 250 ms a
    // request waits for it.
    let started = Instant::now();
    let impatient = reqwest::Client::builder()
        .timeout(Duration::from_millis(100))
        .build()
        .expect("client");
    let gave_up = impatient
        .get(app.url("/invoices"))
        .bearer_auth(new.sign(&claims))
        .send()
        .await
        .expect_err("no answer within 100 ms");
    assert!(gave_up.is_timeout(), "{gave_up}");
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(issuer.jwks_fetches(), fetches + 1, "the new kid's fetch");

    // The IdP answers the fetch still waiting; within the cooldown no other may start.
    issuer.hang(false);
    let mut status = 0;
    while started.elapsed() < cooldown - Duration::from_millis(300) {
        status = call(&app, "GET", "/invoices", Some(&new.sign(&claims)))
            .await
            .status()
            .as_u16();
        if status == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        status, 200,
        "the rotated key, fetched for the request that left"
    );
    assert_eq!(issuer.jwks_fetches(), fetches + 1, "no second fetch");
}

/// Polls `done` for up to 5 s, then a little longer so that what it saw has settled.
async fn wait_for(done: impl Fn() -> bool) {
    for _ in 0..100 {
        if done() {
            tokio::time::sleep(Duration::from_millis(50)).await;
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("waited 5 s in vain");
}

/// How long the slowest of `n` listings with `token`, sent at once, took; and their statuses.
async fn concurrent_calls(app: &TestApp, token: &str, n: usize) -> (Duration, Vec<u16>) {
    let started = Instant::now();
    let calls = (0..n).map(|_| async move {
        call(app, "GET", "/invoices", Some(token))
            .await
            .status()
            .as_u16()
    });
    let statuses = futures_util::future::join_all(calls).await;
    (started.elapsed(), statuses)
}

/// Far below the 5 s a key fetch may take, far above the 250 ms a request may wait for one.
const NO_STALL: Duration = Duration::from_secs(1);

/// The IdP hangs (accepts, never answers) and our keys are past their refresh age: calls
/// are checked at once against the keys in hand while one fetch waits in the background
/// (they waited behind it for the 5 s fetch timeout).
async fn a_hanging_issuer_does_not_stall_calls(backend: Backend) {
    let key = SigningKey::rsa("rsa-1");
    let issuer = Issuer::start(&[&key]);
    let app = spawn_secured(backend, &issuer.url, |s| {
        s.refresh_after = Duration::from_millis(300);
        s.refresh_cooldown = Duration::from_millis(100);
    })
    .await;
    let token = key.sign(&issuer.access_claims(AUDIENCE, "svc", "invoices:read"));
    assert_eq!(
        call(&app, "GET", "/invoices", Some(&token)).await.status(),
        200
    );
    issuer.hang(true);
    tokio::time::sleep(Duration::from_millis(400)).await;
    let fetches = issuer.jwks_fetches();
    for round in 0..2 {
        let (took, statuses) = concurrent_calls(&app, &token, 8).await;
        assert!(took < NO_STALL, "round {round}: 8 calls took {took:?}");
        assert_eq!(statuses, vec![200; 8], "round {round}");
    }
    assert_eq!(
        issuer.jwks_fetches(),
        fetches + 1,
        "one fetch in flight, not one per call"
    );
}

/// A key withdrawn while the IdP cannot be reached: our copy serves on until its maximum
/// age, then tokens cannot be checked (503) rather than checked against keys that may have
/// been withdrawn; once the IdP answers again, the withdrawn key is refused.
async fn a_withdrawn_key_stops_at_the_maximum_age_while_the_issuer_hangs(backend: Backend) {
    let (old, new) = (SigningKey::rsa("old"), SigningKey::rsa("new"));
    let issuer = Issuer::start(&[&old]);
    let claims = issuer.access_claims(AUDIENCE, "svc", "invoices:read");
    let (old_token, new_token) = (old.sign(&claims), new.sign(&claims));
    // The keys are fetched (at start-up, or by the first call) between these two instants.
    let fetched = Instant::now();
    let app = spawn_secured(backend, &issuer.url, |s| {
        s.refresh_after = Duration::from_millis(200);
        s.max_age = Duration::from_millis(2000);
        s.refresh_cooldown = Duration::from_millis(100);
    })
    .await;
    assert_eq!(
        call(&app, "GET", "/invoices", Some(&old_token))
            .await
            .status(),
        200
    );
    let fetched_by = Instant::now();
    issuer.publish(&[&new]);
    issuer.hang(true);
    tokio::time::sleep(Duration::from_millis(400)).await;
    let stale = call(&app, "GET", "/invoices", Some(&old_token)).await;
    assert!(
        fetched.elapsed() < Duration::from_millis(1900),
        "too slow to tell"
    );
    assert_eq!(stale.status(), 200, "stale, within the maximum age");

    tokio::time::sleep(Duration::from_millis(2100).saturating_sub(fetched_by.elapsed())).await;
    let started = Instant::now();
    let expired = call(&app, "GET", "/invoices", Some(&old_token)).await;
    assert!(started.elapsed() < NO_STALL, "took {:?}", started.elapsed());
    assert!(expired.headers().contains_key("retry-after"));
    assert_problem(expired, 503, "service_unavailable").await;

    issuer.hang(false);
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert_eq!(
        call(&app, "GET", "/invoices", Some(&new_token))
            .await
            .status(),
        200
    );
    assert_refused(
        call(&app, "GET", "/invoices", Some(&old_token)).await,
        INVALID_TOKEN,
        "withdrawn key, the IdP back",
    )
    .await;
}

/// A token whose key is not in hand waits for a hanging fetch only briefly: an unknown kid
/// is refused (401), and with no keys at all yet the answer is 503, each within the bound.
async fn a_missing_key_waits_for_a_hanging_fetch_only_briefly(backend: Backend) {
    let key = SigningKey::rsa("rsa-1");
    let issuer = Issuer::start(&[&key]);
    let app = spawn_secured(backend, &issuer.url, |s| {
        s.refresh_cooldown = Duration::from_millis(100);
    })
    .await;
    let claims = issuer.access_claims(AUDIENCE, "svc", "invoices:read");
    assert_eq!(
        call(&app, "GET", "/invoices", Some(&key.sign(&claims)))
            .await
            .status(),
        200
    );
    issuer.hang(true);
    tokio::time::sleep(Duration::from_millis(150)).await;
    let unknown = key.sign_as("RS256", "rotated-in", &claims);
    let (took, statuses) = concurrent_calls(&app, &unknown, 4).await;
    assert!(took < NO_STALL, "unknown kids took {took:?}");
    assert_eq!(statuses, vec![401; 4]);

    // An invoice-app started while the IdP hangs: nothing to check tokens with yet.
    let cold = spawn_secured(backend, &issuer.url, |_| {}).await;
    let (took, statuses) = concurrent_calls(&cold, &key.sign(&claims), 4).await;
    assert!(took < NO_STALL, "a cold cache took {took:?}");
    assert_eq!(statuses, vec![503; 4]);
}

/// RFC 9068's access-token profile, as far as common IdPs allow: the token types accepted
/// by default (and only `at+jwt` when configured so), `iss` one string, a lifetime of at
/// most a day, `iat` not in the future. Each refusal was accepted before.
async fn tokens_outside_the_access_token_profile_are_refused(backend: Backend) {
    let key = SigningKey::rsa("rsa-1");
    let issuer = Issuer::start(&[&key]);
    let app = spawn_secured(backend, &issuer.url, |_| {}).await;
    let good = issuer.access_claims(AUDIENCE, "svc", "invoices:read");
    let now = jsonwebtoken::get_current_timestamp();
    let typed = |typ: Option<&str>| {
        let mut header = json!({"alg": "RS256", "kid": key.kid});
        if let Some(typ) = typ {
            header["typ"] = json!(typ);
        }
        key.sign_with_header(&header, &good)
    };
    let with = |changes: Value| {
        let mut claims = good.clone();
        for (name, value) in changes.as_object().expect("an object") {
            if value.is_null() {
                claims.as_object_mut().expect("object").remove(name);
            } else {
                claims[name] = value.clone();
            }
        }
        key.sign(&claims)
    };
    let day = 86_400;
    let accepted: Vec<(&str, String)> = vec![
        ("typ at+jwt", typed(Some("at+jwt"))),
        ("typ application/at+jwt", typed(Some("application/at+jwt"))),
        ("typ JWT (Keycloak, Auth0, Entra ID)", typed(Some("JWT"))),
        ("no typ (Okta)", typed(None)),
        (
            "a lifetime of exactly a day",
            with(json!({"iat": now, "exp": now + day})),
        ),
        ("no iat, expiring within a day", with(json!({"iat": null}))),
        (
            "iat within the leeway ahead",
            with(json!({"iat": now + 10, "exp": now + 300})),
        ),
    ];
    for (what, token) in &accepted {
        assert_eq!(
            call(&app, "GET", "/invoices", Some(token)).await.status(),
            200,
            "{what}"
        );
    }
    let refused: Vec<(&str, String)> = vec![
        ("typ id+jwt (an ID token)", typed(Some("id+jwt"))),
        ("typ application/id+jwt", typed(Some("application/id+jwt"))),
        ("typ JOSE", typed(Some("JOSE"))),
        (
            "iss a list holding the issuer",
            with(json!({"iss": [issuer.url]})),
        ),
        (
            "iss a list holding the issuer and another",
            with(json!({"iss": [issuer.url, "https://idp.example.com"]})),
        ),
        (
            "exp in the year 3000",
            with(json!({"iat": now, "exp": 32_503_680_000_u64})),
        ),
        (
            "a lifetime of a day and a minute",
            with(json!({"iat": now, "exp": now + day + 60})),
        ),
        (
            "no iat, expiring in 25 hours",
            with(json!({"iat": null, "exp": now + day + 3600})),
        ),
        (
            "iat 11 days ahead",
            with(json!({"iat": now + 11 * day, "exp": now + 11 * day + 300})),
        ),
        (
            // Within exp's leeway, but expiring before it was issued is no token.
            "exp before iat",
            with(json!({"iat": now, "exp": now - 1})),
        ),
        (
            // Within the leeway on both ends, but never valid.
            "nbf after exp",
            with(json!({"nbf": now + 20, "exp": now + 10})),
        ),
    ];
    // All cases first, then one assertion: a failure lists every case let through.
    let mut let_through = Vec::new();
    for (what, token) in &refused {
        let response = call(&app, "GET", "/invoices", Some(token)).await;
        if response.status() != 401 || challenge(&response) != INVALID_TOKEN {
            let_through.push(format!("{what}: {}", response.status()));
        }
    }
    assert!(let_through.is_empty(), "not refused: {let_through:#?}");

    // Configured for an RFC 9068 IdP: only `at+jwt`.
    let strict = spawn_secured(backend, &issuer.url, |s| {
        s.token_types = TokenTypes::parse("at+jwt").expect("valid");
    })
    .await;
    assert_eq!(
        call(&strict, "GET", "/invoices", Some(&typed(Some("at+jwt"))))
            .await
            .status(),
        200
    );
    for typ in [Some("JWT"), None] {
        assert_refused(
            call(&strict, "GET", "/invoices", Some(&typed(typ))).await,
            INVALID_TOKEN,
            &format!("typ {typ:?} where only at+jwt is configured"),
        )
        .await;
    }
}

/// The key cache and the token checks do not touch the database: these run on SQLite only.
mod sqlite_only {
    use crate::helpers::Backend;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_hanging_issuer_does_not_stall_calls() {
        super::a_hanging_issuer_does_not_stall_calls(Backend::Sqlite).await
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_withdrawn_key_stops_at_the_maximum_age_while_the_issuer_hangs() {
        super::a_withdrawn_key_stops_at_the_maximum_age_while_the_issuer_hangs(Backend::Sqlite)
            .await
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_missing_key_waits_for_a_hanging_fetch_only_briefly() {
        super::a_missing_key_waits_for_a_hanging_fetch_only_briefly(Backend::Sqlite).await
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn tokens_outside_the_access_token_profile_are_refused() {
        super::tokens_outside_the_access_token_profile_are_refused(Backend::Sqlite).await
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn keys_not_for_verifying_and_weak_rsa_keys_are_not_used() {
        super::keys_not_for_verifying_and_weak_rsa_keys_are_not_used(Backend::Sqlite).await
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_dropped_request_does_not_cancel_the_key_refresh() {
        super::a_dropped_request_does_not_cancel_the_key_refresh(Backend::Sqlite).await
    }
}

async fn invented_kids_cannot_make_us_hammer_the_issuer(backend: Backend) {
    let key = SigningKey::rsa("rsa-1");
    let issuer = Issuer::start(&[&key]);
    let app = spawn_secured(backend, &issuer.url, |s| {
        s.refresh_cooldown = Duration::from_secs(60);
    })
    .await;
    let claims = issuer.access_claims(AUDIENCE, "svc", "invoices:read");
    assert_eq!(
        call(&app, "GET", "/invoices", Some(&key.sign(&claims)))
            .await
            .status(),
        200
    );
    let before = issuer.jwks_fetches();
    assert!(before >= 1, "the keys were fetched");
    // One after another (no fetch in flight to share), then all at once.
    for i in 0..20 {
        let token = key.sign_as("RS256", &format!("invented-{i}"), &claims);
        let response = call(&app, "GET", "/invoices", Some(&token)).await;
        assert_eq!(response.status().as_u16(), 401);
    }
    let attempts: Vec<_> = (20..40)
        .map(|i| {
            let token = key.sign_as("RS256", &format!("invented-{i}"), &claims);
            let url = app.url("/invoices");
            tokio::spawn(async move {
                reqwest::Client::new()
                    .get(url)
                    .bearer_auth(token)
                    .send()
                    .await
                    .map(|r| r.status().as_u16())
            })
        })
        .collect();
    for attempt in attempts {
        assert_eq!(attempt.await.expect("task").expect("sent"), 401);
    }
    assert!(
        issuer.jwks_fetches() <= before + 1,
        "40 invented kids caused {} fetches of the JWKS",
        issuer.jwks_fetches() - before
    );
    assert_eq!(
        call(&app, "GET", "/invoices", Some(&key.sign(&claims)))
            .await
            .status(),
        200
    );
}

async fn an_unreachable_issuer_is_a_503_and_api_keys_still_work(backend: Backend) {
    let closed = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port");
    let key = SigningKey::rsa("rsa-1");
    let issuer_url = format!("http://{closed}");
    let app = spawn_secured(backend, &issuer_url, |_| {}).await;
    let claims = json!({
        "iss": issuer_url, "aud": AUDIENCE, "sub": "svc", "scope": "invoices:read",
        "exp": jsonwebtoken::get_current_timestamp() + 300,
    });
    let response = call(&app, "GET", "/invoices", Some(&key.sign(&claims))).await;
    assert!(response.headers().contains_key("retry-after"));
    assert_problem(response, 503, "service_unavailable").await;
    assert_eq!(
        call(&app, "GET", "/invoices", Some(CI_KEY_OLD))
            .await
            .status(),
        200
    );
}

async fn api_keys_carry_their_clients_scopes(backend: Backend) {
    let key = SigningKey::rsa("rsa-1");
    let issuer = Issuer::start(&[&key]);
    let app = spawn_secured_paying(backend, &issuer.url).await;
    for ci in [CI_KEY_OLD, CI_KEY_NEW] {
        assert_eq!(
            call(&app, "GET", "/invoices", Some(ci)).await.status(),
            200,
            "both keys of ci"
        );
        assert_forbidden(
            call(&app, "POST", "/invoices", Some(ci)).await,
            "invoices:write",
            "ci creates",
        )
        .await;
        assert_forbidden(
            call(&app, "POST", "/pay-runs", Some(ci)).await,
            "invoices:pay",
            "ci pays",
        )
        .await;
    }
    let created = json_of(
        call(&app, "POST", "/invoices", Some(BILLING_KEY)).await,
        201,
        "billing creates",
    )
    .await;
    assert_eq!(created["created_by"], "key:billing");
    assert_forbidden(
        call(&app, "GET", "/invoices", Some(BILLING_KEY)).await,
        "invoices:read",
        "billing reads",
    )
    .await;
    let started = call(&app, "POST", "/pay-runs", Some(BILLING_KEY)).await;
    assert_eq!(started.status().as_u16(), 202);
    let location = started
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .expect("Location")
        .to_owned();
    let run = finished_run(&app, &location, CI_KEY_NEW).await;
    assert_eq!(run["started_by"], "key:billing", "{run}");
    for unknown in [
        "ci-key-old-6f1c2a9e4b7d035",
        "ci-key-old-6f1c2a9e4b7d03588",
        "",
    ] {
        let response = call(&app, "GET", "/invoices", Some(unknown)).await;
        assert_eq!(response.status().as_u16(), 401, "{unknown:?}");
    }
}

async fn the_dev_key_stands_in_on_loopback_only(backend: Backend) {
    // The helpers' app has no issuer and no keys, on 127.0.0.1: the dev key works.
    let app = spawn_app(backend).await;
    let created = app.create_invoice("C001", 100, "EUR").await;
    assert_eq!(created["created_by"], "dev");
    assert_refused(
        call(&app, "GET", "/invoices", None).await,
        REALM,
        "dev mode, nothing sent",
    )
    .await;
    assert_refused(
        call(&app, "GET", "/invoices", Some("guess")).await,
        INVALID_TOKEN,
        "dev mode, wrong key",
    )
    .await;
    let run = app.pay().await;
    let (_, run) = app
        .get_json(&format!(
            "/pay-runs/{}",
            run["run_id"].as_str().expect("id")
        ))
        .await;
    assert_eq!(run["started_by"], "dev", "{run}");

    // The same configuration on every interface does not start.
    let mut config = app.config.clone();
    config.listen_addr = ([0, 0, 0, 0], 0).into();
    let refused = Application::build(config).await.err().expect("refused");
    let message = format!("{refused:#}");
    assert!(
        message.contains("API_AUTH_ISSUER") && message.contains("API_KEYS"),
        "{message}"
    );
}

async fn metrics_are_served_on_their_own_port_only(backend: Backend) {
    let app = TestApp::builder(backend).spawn().await;
    app.create_invoice("C001", 100, "EUR").await;
    for token in [None, Some(DEV_API_KEY)] {
        let on_api_port = call(&app, "GET", "/metrics", token).await;
        assert_problem(on_api_port, 404, "not_found").await;
    }
    let scraped = reqwest::get(&app.metrics_url).await.expect("scraped");
    assert_eq!(scraped.status().as_u16(), 200);
    let text = scraped.text().await.expect("text");
    assert!(
        text.contains(r#"http_requests_total{method="POST",route="/invoices",status="201"} 1"#),
        "{text}"
    );
    let other = app.metrics_url.replace("/metrics", "/invoices");
    let response = reqwest::get(other).await.expect("sent");
    assert_problem(response, 404, "not_found").await;
}

both_backends!(
    every_route_refuses_a_token_without_its_scope,
    without_a_credential_every_api_route_answers_401,
    a_token_may_do_what_its_scopes_allow,
    forged_expired_and_misdirected_tokens_are_refused,
    a_rotated_key_works_without_restart_and_a_withdrawn_one_stops,
    a_key_set_with_no_usable_key_withdraws_the_cached_ones,
    invented_kids_cannot_make_us_hammer_the_issuer,
    an_unreachable_issuer_is_a_503_and_api_keys_still_work,
    api_keys_carry_their_clients_scopes,
    the_dev_key_stands_in_on_loopback_only,
    metrics_are_served_on_their_own_port_only,
);

/// The real binary, as a chart would start it without credentials: it refuses to serve on
/// a non-loopback address and names what to set; commands that serve no API still run.
#[test]
fn the_binary_refuses_an_open_api_and_names_the_variables() {
    let dir = std::env::temp_dir().join(format!("ia-auth-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    // Output goes to files, so a process that wrongly keeps serving is killed at a
    // deadline instead of hanging the test.
    let run = |args: &[&str]| {
        let (out, err) = (dir.join("stdout"), dir.join("stderr"));
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_invoice-app"))
            .args(args)
            .env_clear()
            .env("LISTEN_ADDR", "0.0.0.0:0")
            .env("METRICS_ADDR", "127.0.0.1:0")
            .env("DATABASE_URL", dir.join("ia.db"))
            .env("SEED", "none")
            .env("PAY_SCHEDULE", "off")
            .stdout(std::fs::File::create(&out).expect("stdout file"))
            .stderr(std::fs::File::create(&err).expect("stderr file"))
            .spawn()
            .expect("invoice-app runs");
        let mut status = None;
        for _ in 0..200 {
            status = child.try_wait().expect("waits");
            if status.is_some() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        if status.is_none() {
            let _ = child.kill();
            let _ = child.wait();
        }
        (status, std::fs::read_to_string(&err).unwrap_or_default())
    };
    let (served, stderr) = run(&[]);
    assert_eq!(
        served.and_then(|s| s.code()),
        Some(2),
        "still serving, or another exit: {stderr}"
    );
    assert!(
        stderr.contains("API_AUTH_ISSUER") && stderr.contains("API_KEYS"),
        "{stderr}"
    );
    let (migrated, stderr) = run(&["migrate"]);
    assert!(migrated.is_some_and(|s| s.success()), "{stderr}");
    let _ = std::fs::remove_dir_all(&dir);
    // And in-process the configuration says the same.
    let config =
        Config::from_lookup(&|name| (name == "LISTEN_ADDR").then(|| "0.0.0.0:8081".into()))
            .expect("parses");
    assert_eq!(
        config.uses_dev_api_key().expect_err("open").var,
        "API_AUTH_ISSUER"
    );
}

/// The OpenAPI document says what the routes enforce: the bearer scheme, each operation's
/// scope, the open ones, the audit fields; and no `/metrics` on this port.
#[test]
fn the_openapi_document_declares_each_operations_scope() {
    let document: Value = serde_json::from_str(invoice_app::OPENAPI_JSON).expect("JSON");
    assert_eq!(
        document["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
    let expected = [
        ("/invoices", "get", json!([{"bearer": ["invoices:read"]}])),
        ("/invoices", "post", json!([{"bearer": ["invoices:write"]}])),
        (
            "/invoices/{id}",
            "get",
            json!([{"bearer": ["invoices:read"]}]),
        ),
        (
            "/invoices/{id}/attempts",
            "get",
            json!([{"bearer": ["invoices:read"]}]),
        ),
        (
            "/invoices/pay",
            "post",
            json!([{"bearer": ["invoices:pay"]}]),
        ),
        (
            "/invoices/{id}/actions",
            "get",
            json!([{"bearer": ["invoices:read"]}]),
        ),
        (
            "/invoices/{id}/void",
            "post",
            json!([{"bearer": ["invoices:manage"]}]),
        ),
        (
            "/invoices/{id}/retry",
            "post",
            json!([{"bearer": ["invoices:manage"]}]),
        ),
        (
            "/invoices/{id}/resolve",
            "post",
            json!([{"bearer": ["invoices:manage"]}]),
        ),
        ("/pay-runs", "post", json!([{"bearer": ["invoices:pay"]}])),
        (
            "/pay-runs/{id}",
            "get",
            json!([{"bearer": ["invoices:read"]}]),
        ),
        ("/healthz", "get", json!([])),
        ("/readyz", "get", json!([])),
        ("/openapi.json", "get", json!([])),
    ];
    for (path, method, security) in &expected {
        let operation = &document["paths"][path][method];
        assert_eq!(&operation["security"], security, "{method} {path}");
        if security != &json!([]) {
            for status in ["401", "403"] {
                assert!(
                    operation["responses"][status].is_object(),
                    "{method} {path} documents no {status}"
                );
            }
        }
    }
    let operations: usize = document["paths"]
        .as_object()
        .expect("paths")
        .values()
        .map(|p| p.as_object().map_or(0, |m| m.len()))
        .sum();
    assert_eq!(
        operations,
        expected.len(),
        "an operation without a stated scope"
    );
    assert!(document["paths"]["/metrics"].is_null());
    let schemas = &document["components"]["schemas"];
    assert!(schemas["Invoice"]["properties"]["created_by"].is_object());
    assert!(schemas["PayRun"]["properties"]["started_by"].is_object());
    assert!(schemas["Attempt"]["properties"]["started_by"].is_object());
}
