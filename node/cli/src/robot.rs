//! `tether agent` and `tether console`: the robot agent and the headless operator console,
//! with the glue that lets the robot check session tokens with the cluster's key.

use crate::{wait_for_signal, AgentArgs, ConsoleArgs};
use anyhow::{bail, Context, Result};
use std::path::Path;
use std::time::Duration;
use tether_node::auth::{AuthError, TokenKind, Verifier};

fn events_log(path: Option<&Path>) -> Result<tether_agent::events::EventLog> {
    Ok(match path {
        Some(p) => tether_agent::events::EventLog::open(p)
            .with_context(|| format!("opening {}", p.display()))?,
        None => tether_agent::events::EventLog::disabled(),
    })
}

pub(crate) async fn run_agent(args: AgentArgs) -> Result<()> {
    tether_node::telemetry::init_logging("info,webrtc=error,rtc=error");
    use tether_agent::robot::TokenSource;
    let (source, token) = match (&args.token_file, &args.token) {
        (Some(path), _) => {
            let token = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            (TokenSource::File(path.clone()), token.trim().to_owned())
        }
        (None, Some(token)) => (TokenSource::Fixed(token.clone()), token.clone()),
        (None, None) => bail!("give the robot token with --token or --token-file"),
    };
    let public_key = fetch_token_key(&args.gateway).await?;
    let verifier = Verifier::from_pem(public_key.as_bytes())?;
    let claims = verifier
        .verify(&token)
        .context("the robot token does not verify with the cluster's key")?;
    if claims.kind() != Some(TokenKind::Robot) || claims.sub != args.robot_id {
        bail!(
            "the token is a {:?} token for {:?}, not a robot token for {:?}",
            claims.kind(),
            claims.sub,
            args.robot_id
        );
    }
    let agent = tether_agent::robot::Agent::new(
        tether_agent::robot::AgentOptions {
            gateways: args.gateway,
            token: source,
            safety: tether_agent::safety::SafetyConfig {
                control_timeout: args.control_timeout,
                max_lease: Duration::from_millis(args.max_lease_ms),
            },
            rtc_ip: args.rtc_ip,
            events: events_log(args.events.as_deref())?,
        },
        std::sync::Arc::new(SessionTokenCheck(verifier)),
    );
    tracing::info!(robot = %args.robot_id, "robot agent started (safe-stop until driven)");
    tokio::select! {
        _ = agent.run() => Ok(()),
        _ = wait_for_signal() => Ok(()),
    }
}

/// The cluster's token key, from the first gateway that answers.
async fn fetch_token_key(gateways: &[String]) -> Result<String> {
    // Over HTTPS this key is as trustworthy as the CA the robot pins (`--ca`).
    for _round in 0..30 {
        for gateway in gateways {
            let client = tether_api::Client::with_timeout(gateway, "", Duration::from_secs(2));
            if let Ok(pem) = client.token_key().await {
                return Ok(pem);
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    bail!("no gateway served its token key: {}", gateways.join(", "))
}

pub(crate) async fn run_console(args: ConsoleArgs) -> Result<()> {
    tether_node::telemetry::init_logging("warn,rtc=error,webrtc=error");
    let options = tether_agent::console::ConsoleOptions {
        gateway: args.gateway,
        operator_token: args.token,
        robot_id: args.robot_id,
        linear: args.linear,
        angular: args.angular,
        duration: args.duration,
        auth_token: args.auth_token,
        rtc_ip: args.rtc_ip,
        events: events_log(args.events.as_deref())?,
    };
    let outcome = tether_agent::console::run(options, |s| {
        println!("session {}", s.session_id);
    })
    .await?;
    use tether_agent::console::Outcome;
    match &outcome {
        Outcome::Finished => println!("session ended"),
        Outcome::Revoked(reason) => println!("revoked: {reason}"),
        Outcome::Terminated(reason) => println!("terminated: {reason}"),
        Outcome::AuthDenied(reason) => println!("auth denied by the robot: {reason}"),
    }
    std::process::exit(outcome.exit_code());
}

/// Checks session tokens for the robot agent with the cluster's public key: a valid
/// session token (role operator, audience session, with `sid`), nothing else: a login,
/// admin or robot token is refused.
struct SessionTokenCheck(Verifier);

impl tether_agent::robot::TokenCheck for SessionTokenCheck {
    fn check(
        &self,
        token: &str,
    ) -> Result<tether_agent::safety::Credentials, tether_agent::safety::DenyReason> {
        use tether_agent::safety::DenyReason;
        let claims = self.0.verify(token).map_err(|e| match e {
            AuthError::Expired => DenyReason::TokenExpired,
            _ => DenyReason::InvalidToken,
        })?;
        if claims.kind() != Some(TokenKind::Session) {
            return Err(DenyReason::InvalidToken);
        }
        // The core counts the rest on its monotonic clock; wall-clock time is read once here.
        let left_ms = claims
            .expires_at_ms()
            .saturating_sub(tether_api::time::now_ms());
        let Some(session_id) = claims.sid else {
            return Err(DenyReason::InvalidToken);
        };
        Ok(tether_agent::safety::Credentials {
            session_id,
            token_id: claims.jti,
            operator: claims.sub,
            expires_in: Duration::from_millis(left_ms),
        })
    }
}
