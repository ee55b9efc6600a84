//! `/v1/revocations`: revoke a session, a token or an operator (idempotent, answered after
//! commit), list them page by page, lift an operator revocation.

use super::{check_id, Admin, ApiError, ApiJson, AppState, RequestId, MAX_PAGE, MAX_REASON_LEN};
use crate::auth::Claims;
use axum::extract::{Path, Query, State};
use axum::Json;
use std::time::{Duration, Instant};
use tether_api::time::{now_ms, parse_rfc3339, UnixMillis};
use tether_api::types::{ListQuery, ListResponse, RevocationView, RevokeRequest, RevokeResponse};
use tether_store::{Command, Response as Applied, RevocationKind};

/// How long revocations last when the request does not say.
#[derive(Clone, Copy, Debug)]
struct Lifetimes {
    /// A session or token revocation without `expires_at` lasts this long (at least
    /// `token_max_ttl_s`).
    default_ttl_s: u64,
    /// The longest a token may live (`auth.max_token_ttl_s`): a session or token revocation
    /// never expires before every token it could match has (one that did would revive it).
    token_max_ttl_s: u64,
}

/// Validates a revocation request into the command to commit. A session or token
/// revocation lasts until `expires_at` or `default_ttl_s`, but never less than the longest
/// token lifetime; an operator one lasts until lifted (or `expires_at`).
fn into_command(
    request: RevokeRequest,
    admin: &Claims,
    lifetimes: Lifetimes,
    now: UnixMillis,
) -> Result<Command, ApiError> {
    let targets = [
        (RevocationKind::Session, request.session_id),
        (RevocationKind::Token, request.jti),
        (RevocationKind::Operator, request.operator),
    ];
    let mut given = targets.into_iter().filter_map(|(k, v)| v.map(|v| (k, v)));
    let (kind, target) = match (given.next(), given.next()) {
        (Some(one), None) => one,
        (None, _) => {
            return Err(ApiError::invalid(
                "give exactly one of session_id, jti, operator (none given)",
            ))
        }
        (Some(_), Some(_)) => {
            return Err(ApiError::invalid(
                "give exactly one of session_id, jti, operator (several given)",
            ))
        }
    };
    check_id(kind.as_str(), &target)?;
    let reason = request.reason.trim().to_owned();
    if reason.is_empty() || reason.len() > MAX_REASON_LEN {
        return Err(ApiError::invalid(format!(
            "reason must be 1 to {MAX_REASON_LEN} characters"
        )));
    }
    let expires_at = match request.expires_at {
        Some(text) => {
            let at = parse_rfc3339(&text).map_err(|e| {
                ApiError::invalid(format!(
                    "expires_at: {e} (want RFC 3339 UTC, e.g. 2026-12-01T10:00:00Z)"
                ))
            })?;
            if at <= now {
                return Err(ApiError::invalid("expires_at is in the past"));
            }
            Some(at)
        }
        // A session or token revocation outlives any token it could match; an operator
        // revocation lasts until lifted.
        None if kind == RevocationKind::Operator => None,
        None => Some(now + lifetimes.default_ttl_s * 1000),
    };
    // Leeway: the verifier accepts tokens a few seconds past `exp`.
    let outlives_tokens = now + (lifetimes.token_max_ttl_s + 60) * 1000;
    let expires_at = match kind {
        RevocationKind::Operator => expires_at,
        RevocationKind::Session | RevocationKind::Token => {
            expires_at.map(|at| at.max(outlives_tokens))
        }
    };
    Ok(Command::Revoke {
        kind,
        target,
        reason,
        revoked_by: admin.sub.clone(),
        at: now,
        expires_at,
    })
}

pub(super) async fn revoke(
    State(state): State<AppState>,
    Admin(admin): Admin,
    request: RequestId,
    ApiJson(body): ApiJson<RevokeRequest>,
) -> Result<Json<RevokeResponse>, ApiError> {
    let lifetimes = Lifetimes {
        default_ttl_s: state.config.http.default_revocation_ttl_s,
        token_max_ttl_s: state.verifier.max_ttl().as_secs(),
    };
    let command = into_command(body, &admin, lifetimes, now_ms())?;
    if let Some(fake) = planted_drop(&command) {
        return Ok(Json(fake));
    }
    let started = Instant::now();
    let applied = state.commit_once(request, command).await?;
    metrics::histogram!(crate::telemetry::names::REVOCATION_COMMIT_SECONDS)
        .record(started.elapsed().as_secs_f64());
    match applied {
        Applied::Revoked { entry, created, .. } => {
            metrics::counter!(crate::telemetry::names::REVOCATIONS_TOTAL, "kind" => entry.kind.as_str())
                .increment(u64::from(created));
            tracing::debug!(kind = entry.kind.as_str(), target = %entry.target, created, by = %admin.sub, "revoked");
            Ok(Json(RevokeResponse {
                revocation: (&entry).into(),
                created,
            }))
        }
        other => Err(ApiError::internal(format!(
            "unexpected apply result {other:?}"
        ))),
    }
}

/// The planted bug that acknowledges every 100th revocation without committing it.
fn planted_drop(command: &Command) -> Option<RevokeResponse> {
    use std::sync::atomic::{AtomicU64, Ordering};
    static SEEN: AtomicU64 = AtomicU64::new(0);
    if !crate::planted::is(crate::planted::PlantedBug::DropEvery100thRevocation) {
        return None;
    }
    if SEEN.fetch_add(1, Ordering::Relaxed) % 100 != 99 {
        return None;
    }
    let entry = command.proposed_revocation()?;
    Some(RevokeResponse {
        revocation: (&entry).into(),
        created: true,
    })
}

fn parse_kind(text: &str) -> Result<RevocationKind, ApiError> {
    RevocationKind::parse(text).ok_or_else(|| {
        ApiError::invalid(format!(
            "kind must be session, token or operator, not {text:?}"
        ))
    })
}

pub(super) async fn list(
    State(state): State<AppState>,
    _admin: Admin,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<ListResponse>, ApiError> {
    let Query(q) = query?;
    let kind = q.kind.as_deref().map(parse_kind).transpose()?;
    let limit = q.limit.unwrap_or(100);
    if limit == 0 || limit > MAX_PAGE {
        return Err(ApiError::invalid(format!("limit must be 1 to {MAX_PAGE}")));
    }
    let after = match q.after.as_deref() {
        Some(cursor) => {
            let (k, target) = cursor
                .split_once(':')
                .ok_or_else(|| ApiError::invalid("after must be a cursor from a previous page"))?;
            Some((parse_kind(k)?, target.to_owned()))
        }
        None => None,
    };
    if q.consistent.unwrap_or(false) {
        state
            .raft
            .read_barrier(Duration::from_millis(state.config.http.write_timeout_ms))
            .await?;
    }
    let entries = state.raft.view().read().list(kind, after, limit);
    let next = (entries.len() == limit)
        .then(|| {
            entries
                .last()
                .map(|e| format!("{}:{}", e.kind.as_str(), e.target))
        })
        .flatten();
    Ok(Json(ListResponse {
        items: entries.iter().map(RevocationView::from).collect(),
        next,
    }))
}

pub(super) async fn lift_operator(
    State(state): State<AppState>,
    Admin(admin): Admin,
    request: RequestId,
    path: Result<Path<String>, axum::extract::rejection::PathRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let Path(operator) = path?;
    check_id("operator", &operator)?;
    let command = Command::Lift {
        operator: operator.clone(),
        lifted_by: admin.sub.clone(),
    };
    let applied = state.commit_once(request, command).await?;
    match applied {
        Applied::Lifted(Some(entry)) => {
            tracing::info!(%operator, by = %admin.sub, "operator revocation lifted");
            Ok(Json(
                serde_json::json!({ "lifted": RevocationView::from(&entry) }),
            ))
        }
        Applied::Lifted(None) => Err(ApiError::not_found(format!(
            "operator {operator:?} is not revoked"
        ))),
        other => Err(ApiError::internal(format!(
            "unexpected apply result {other:?}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::Role;
    use tether_api::ErrorCode;

    const NOW: UnixMillis = 1_764_000_000_000;

    /// A day's default, tokens of at most an hour.
    const LIFETIMES: Lifetimes = Lifetimes {
        default_ttl_s: 86_400,
        token_max_ttl_s: 3600,
    };

    fn admin() -> Claims {
        Claims::new("ada", Role::Admin, Duration::from_secs(60))
    }

    fn request(edit: impl FnOnce(&mut RevokeRequest)) -> RevokeRequest {
        let mut r = RevokeRequest {
            reason: "stolen laptop".into(),
            ..RevokeRequest::default()
        };
        edit(&mut r);
        r
    }

    fn refused(r: RevokeRequest) -> String {
        let e = into_command(r, &admin(), LIFETIMES, NOW).expect_err("refused");
        assert_eq!(e.code(), ErrorCode::InvalidRequest);
        format!("{e:?}")
    }

    #[test]
    fn exactly_one_target_is_required() {
        assert!(refused(request(|_| {})).contains("none given"));
        assert!(refused(request(|r| {
            r.jti = Some("j".into());
            r.operator = Some("o".into());
        }))
        .contains("several given"));
    }

    #[test]
    fn ids_and_reasons_are_bounded_and_free_of_control_characters() {
        refused(request(|r| r.session_id = Some(String::new())));
        refused(request(|r| r.session_id = Some("a\nb".into())));
        refused(request(|r| r.session_id = Some("s".repeat(257))));
        refused(request(|r| {
            r.session_id = Some("s".into());
            r.reason = "   ".into();
        }));
        refused(request(|r| {
            r.session_id = Some("s".into());
            r.reason = "r".repeat(1025);
        }));
    }

    #[test]
    fn expiry_defaults_by_kind_and_must_lie_ahead() {
        let command = |r| into_command(r, &admin(), LIFETIMES, NOW).expect("valid");
        let expires = |c: Command| match c {
            Command::Revoke { expires_at, .. } => expires_at,
            other => panic!("{other:?}"),
        };
        let session = command(request(|r| r.session_id = Some("s".into())));
        assert_eq!(expires(session), Some(NOW + 86_400_000));
        let operator = command(request(|r| r.operator = Some("o".into())));
        assert_eq!(expires(operator), None, "until lifted");
        let at = command(request(|r| {
            r.jti = Some("j".into());
            r.expires_at = Some("2030-01-01T00:00:00Z".into());
        }));
        assert_eq!(expires(at), Some(1_893_456_000_000));
        assert!(refused(request(|r| {
            r.jti = Some("j".into());
            r.expires_at = Some("2020-01-01T00:00:00Z".into());
        }))
        .contains("past"));
        assert!(refused(request(|r| {
            r.jti = Some("j".into());
            r.expires_at = Some("tomorrow".into());
        }))
        .contains("RFC 3339"));
    }

    #[test]
    fn the_command_carries_the_admin_the_instant_and_the_trimmed_reason() {
        let c = into_command(
            request(|r| {
                r.session_id = Some("s-1".into());
                r.reason = "  lost  ".into();
            }),
            &admin(),
            Lifetimes {
                default_ttl_s: 7200,
                token_max_ttl_s: 10,
            },
            NOW,
        )
        .unwrap();
        assert_eq!(
            c,
            Command::Revoke {
                kind: RevocationKind::Session,
                target: "s-1".into(),
                reason: "lost".into(),
                revoked_by: "ada".into(),
                at: NOW,
                expires_at: Some(NOW + 7_200_000),
            }
        );
    }

    /// A token revocation that expired before the token would revive it (issue 9).
    #[test]
    fn a_session_or_token_revocation_outlives_every_token_it_could_match() {
        let short = Lifetimes {
            default_ttl_s: 60,
            token_max_ttl_s: 3600,
        };
        let expires = |r| match into_command(r, &admin(), short, NOW).expect("valid") {
            Command::Revoke { expires_at, .. } => expires_at,
            other => panic!("{other:?}"),
        };
        let floor = NOW + (3600 + 60) * 1000;
        assert_eq!(expires(request(|r| r.jti = Some("j".into()))), Some(floor));
        assert_eq!(
            expires(request(|r| {
                r.session_id = Some("s".into());
                r.expires_at = Some("2025-11-24T16:01:00Z".into()); // NOW + 60 s
            })),
            Some(floor),
            "an explicit expiry before the tokens' is raised"
        );
        assert_eq!(
            expires(request(|r| {
                r.operator = Some("o".into());
                r.expires_at = Some("2025-11-24T16:01:00Z".into());
            })),
            Some(NOW + 60_000),
            "an operator revocation keeps what was asked"
        );
    }

    /// Raft's frame limit holds for appends of the largest commands this API can make.
    #[test]
    fn the_largest_command_fits_raft_frames_a_full_batch_at_a_time() {
        let long = "x".repeat(super::super::MAX_ID_LEN);
        let mut by = admin();
        by.sub = "a".repeat(crate::auth::MAX_CLAIM_LEN);
        let revoke = into_command(
            request(|r| {
                r.session_id = Some(long.clone());
                r.reason = "r".repeat(MAX_REASON_LEN);
            }),
            &by,
            LIFETIMES,
            NOW,
        )
        .unwrap();
        let command = Command::once(long.clone(), NOW, revoke);
        let bytes = tether_store::codec::encode(&command).unwrap().len();
        assert!(bytes < 2_048, "{bytes} bytes");
        let append = bytes
            * tether_raft::rpc::MAX_COMMANDS_PER_ENTRY
            * tether_raft::rpc::MAX_ENTRIES_PER_APPEND as usize;
        assert!(
            append + 64 * 1024 < tether_raft::rpc::MAX_FRAME,
            "an append of {append} bytes"
        );
    }
}
