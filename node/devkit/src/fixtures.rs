//! Fixtures shared by the tests and the bench harness: a minimal SDP body, and forged
//! tokens that a node must refuse.

/// A minimal SDP body that passes the gateway's sanity checks.
pub const SDP: &str =
    "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\n";

/// The claims as an unsigned `alg: none` token, to prove such tokens are refused.
pub fn unsigned_token(claims: &tether_node::auth::Claims) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let header = br#"{"alg":"none","typ":"JWT"}"#;
    let body = serde_json::to_vec(claims).expect("claims always serialize");
    format!("{}.{}.", b64.encode(header), b64.encode(body))
}
