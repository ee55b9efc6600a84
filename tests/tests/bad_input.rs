//! Bad requests get a 4xx with a stable code, and nothing is written.

use serde_json::{json, Value};
use std::time::Duration;
use tether_node::auth::{Claims, Role};
use tether_tests::TestCluster;

async fn post(base: &str, token: Option<&str>, content_type: &str, body: Vec<u8>) -> (u16, Value) {
    let mut req = tether_api::tls::http()
        .post(format!("{base}/v1/revocations"))
        .header("content-type", content_type)
        .body(body);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn bad_bodies_and_bad_tokens_are_refused_with_codes_and_write_nothing() {
    let cluster = TestCluster::start(3).await;
    let base = format!("http://{}", cluster.node(cluster.follower().await).http);
    let admin = cluster.admin_token.clone();
    let json_ct = "application/json";
    let body = |v: Value| serde_json::to_vec(&v).unwrap();

    // (what, token, content type, body, expected status, expected code)
    type Case<'a> = (&'a str, Option<String>, &'a str, Vec<u8>, u16, &'a str);
    let cases: Vec<Case> = vec![
        (
            "malformed JSON",
            Some(admin.clone()),
            json_ct,
            b"{\"session_id\": ".to_vec(),
            400,
            "invalid_json",
        ),
        (
            "unknown field",
            Some(admin.clone()),
            json_ct,
            body(json!({"session_id": "s", "reason": "r", "colour": "red"})),
            400,
            "invalid_request",
        ),
        (
            "no target",
            Some(admin.clone()),
            json_ct,
            body(json!({"reason": "r"})),
            400,
            "invalid_request",
        ),
        (
            "two targets",
            Some(admin.clone()),
            json_ct,
            body(json!({"session_id": "s", "jti": "j", "reason": "r"})),
            400,
            "invalid_request",
        ),
        (
            "empty reason",
            Some(admin.clone()),
            json_ct,
            body(json!({"session_id": "s", "reason": " "})),
            400,
            "invalid_request",
        ),
        (
            "past expiry",
            Some(admin.clone()),
            json_ct,
            body(json!({"session_id": "s", "reason": "r", "expires_at": "2001-01-01T00:00:00Z"})),
            400,
            "invalid_request",
        ),
        (
            "bad expiry",
            Some(admin.clone()),
            json_ct,
            body(json!({"session_id": "s", "reason": "r", "expires_at": "tomorrow"})),
            400,
            "invalid_request",
        ),
        (
            "wrong type",
            Some(admin.clone()),
            json_ct,
            body(json!({"session_id": 7, "reason": "r"})),
            400,
            "invalid_request",
        ),
        (
            "not JSON",
            Some(admin.clone()),
            "text/plain",
            b"session_id=s".to_vec(),
            415,
            "unsupported_media_type",
        ),
        (
            "oversized",
            Some(admin.clone()),
            json_ct,
            body(json!({"session_id": "s", "reason": "r".repeat(100_000)})),
            413,
            "payload_too_large",
        ),
        (
            "no token",
            None,
            json_ct,
            body(json!({"session_id": "s", "reason": "r"})),
            401,
            "missing_token",
        ),
        (
            "garbage token",
            Some("abc.def.ghi".into()),
            json_ct,
            body(json!({"session_id": "s", "reason": "r"})),
            401,
            "invalid_token",
        ),
    ];
    for (what, token, ct, payload, status, code) in cases {
        let (got_status, got) = post(&base, token.as_deref(), ct, payload).await;
        assert_eq!(got_status, status, "{what}: {got}");
        assert_eq!(got["code"], code, "{what}: {got}");
        assert!(
            got["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{what}: {got}"
        );
    }

    let minter = cluster.secrets.minter().unwrap();
    let mut expired = Claims::new("old-admin", Role::Admin, Duration::from_secs(60));
    expired.exp = expired.iat - 120;
    let expired = minter.mint(&expired).unwrap();
    let operator = minter
        .mint(&Claims::new("op", Role::Operator, Duration::from_secs(60)))
        .unwrap();
    let unsigned =
        tether_tests::unsigned_token(&Claims::new("evil", Role::Admin, Duration::from_secs(60)));
    let foreign_dir = tempfile::tempdir().unwrap();
    let foreign = tether_devkit::Secrets::ensure(foreign_dir.path()).unwrap();
    let foreign_token = foreign
        .mint("admin", Role::Admin, Duration::from_secs(60))
        .unwrap();
    let good = body(json!({"session_id": "s", "reason": "r"}));
    for (what, token, status, code) in [
        ("expired", expired, 401, "token_expired"),
        ("alg none", unsigned, 401, "invalid_token"),
        ("other cluster's key", foreign_token, 401, "invalid_token"),
        ("operator token", operator, 403, "forbidden"),
    ] {
        let (got_status, got) = post(&base, Some(&token), json_ct, good.clone()).await;
        assert_eq!(
            (got_status, got["code"].as_str()),
            (status, Some(code)),
            "{what}: {got}"
        );
    }

    let everything = cluster
        .client(1)
        .list(&[("consistent", "true")])
        .await
        .unwrap();
    assert!(
        everything.items.is_empty(),
        "nothing may be written: {:?}",
        everything.items
    );

    let unknown = tether_api::tls::http()
        .get(format!("{base}/v1/nope"))
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 404);
    let bad_kind = cluster
        .client(1)
        .list(&[("kind", "robot")])
        .await
        .unwrap_err();
    assert_eq!(bad_kind.code(), Some("invalid_request"));
}

#[tokio::test]
async fn one_token_or_one_address_cannot_flood_the_node() {
    let cluster = TestCluster::start_with(3, |c| {
        c.http.writes_per_token_per_second = 5;
        c.http.writes_per_token_burst = 5;
        c.http.per_client_per_second = 40;
        c.http.per_client_burst = 40;
    })
    .await;
    // An operator's writes (each a fsync'd Raft write) are limited per token.
    let operator = cluster.client_with(1, &cluster.token("olga", Role::Operator));
    let mut limited = None;
    for i in 0..8 {
        if let Err(e) = operator.create_session(&format!("robot-limit-{i}")).await {
            limited = Some((i, e));
            break;
        }
    }
    let (at, refused) = limited.expect("the sixth write in a burst is refused");
    assert_eq!(at, 5, "{refused}");
    assert_eq!(
        (refused.status(), refused.code()),
        (Some(429), Some("rate_limited"))
    );
    // An admin's writes are not held to it.
    for i in 0..10 {
        cluster
            .client(1)
            .revoke(&tether_api::Target::Token(format!("jti-{i}")), "x", None)
            .await
            .unwrap();
    }
    // One address is limited as a whole; another is served meanwhile.
    let from = |ip: [u8; 4]| {
        tether_api::tls::http_builder()
            .local_address(std::net::IpAddr::from(ip))
            .build()
            .unwrap()
    };
    let url = format!("http://{}/healthz", cluster.node(1).http);
    let flooder = from([127, 0, 0, 1]);
    let mut statuses = Vec::new();
    for _ in 0..60 {
        statuses.push(flooder.get(&url).send().await.unwrap().status().as_u16());
    }
    assert!(statuses.contains(&429), "{statuses:?}");
    let other = from([127, 0, 0, 2]).get(&url).send().await.unwrap();
    assert_eq!(other.status().as_u16(), 200);
    let metrics = format!("http://{}/metrics", cluster.node(1).http);
    let scrape = from([127, 0, 0, 2]).get(&metrics).send().await.unwrap();
    let scrape = scrape.text().await.unwrap();
    for limit in ["per_address", "writes_per_token"] {
        let line = format!("tether_http_rate_limited_total{{limit=\"{limit}\"}}");
        assert!(scrape.contains(&line), "{limit} not counted");
    }
}
