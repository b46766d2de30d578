//! `GET /api/tasks/events`: the caller's changes as Server-Sent Events
//! (see `crate::live`).

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};
use serde::Deserialize;
use utoipa::IntoParams;

use crate::error::{ApiError, ErrorBody};
use crate::extract::{Caller, Credential};
use crate::live::Refused;
use crate::live::stream::EventStream;
use crate::routes::responses::AuthenticatedErrors;
use crate::state::AppState;
use crate::sync;

/// Where a stream starts when no `Last-Event-ID` is sent.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct EventsQuery {
    /// A cursor (from the change feed, or an event `id`): replay every
    /// change after it, then go live. `Last-Event-ID` wins when both are
    /// sent (a browser's `EventSource` adds it when it reconnects).
    pub since: Option<String>,
}

/// Live updates of the caller's tasks (Server-Sent Events)
#[utoipa::path(
    get,
    path = "/api/tasks/events",
    tag = "tasks",
    params(
        EventsQuery,
        ("Last-Event-ID" = Option<String>, Header, description = "The `id` of the last event received: the stream replays every change after it from the change log, then goes live"),
    ),
    security(("bearer_auth" = [])),
    description = "Answers 429 (`too_many_streams`, with `Retry-After`) when `SSE_MAX_STREAMS_PER_USER` streams of the caller are open on this instance, and 503 when `SSE_MAX_STREAMS` streams are open in total.",
    responses(
        (status = 200, description = "An endless `text/event-stream`. Events: `ready` (no cursor given; `id` = the current cursor), unnamed change events (`id` = cursor, `data` = `{tasks, deleted, cursor, has_more}` as the change feed), `reset` (the cursor is too old: reload, then changes follow), `expired` (the credential expired or was revoked; the stream ends); `: heartbeat` comments keep it open. See docs/API.md, \"Live updates\".",
            content_type = "text/event-stream", body = String),
        (status = 400, description = "Invalid cursor in `Last-Event-ID` or `since`", body = ErrorBody),
        AuthenticatedErrors,
    )
)]
pub async fn task_events(
    req: HttpRequest,
    caller: Caller,
    query: web::Query<EventsQuery>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let last_event_id = req
        .headers()
        .get("last-event-id")
        .map(|v| {
            v.to_str()
                .map_err(|_| ApiError::Validation("Invalid cursor in Last-Event-ID".into()))
        })
        .transpose()?
        .filter(|v| !v.trim().is_empty());
    let since = last_event_id
        .or(query.since.as_deref())
        .map(sync::decode)
        .transpose()?;
    let credential = Credential::of(&req, &state)?;
    // A stream ends at its JWT's `exp` exactly (no `JWT_LEEWAY`): one
    // opened after it would end at once, and the client would loop.
    if credential
        .jwt_expiry()
        .is_some_and(|exp| exp <= std::time::SystemTime::now())
    {
        return Err(ApiError::InvalidToken(
            "the token has expired (event streams end at exp; refresh the token)".into(),
        ));
    }
    let subscription = state.live.hub.subscribe(&caller.0).map_err(|refused| match refused {
        Refused::PerUser(max) => ApiError::TooManyStreams(max),
        Refused::Total(max) => ApiError::UnavailableBecause {
            detail: format!(
                "Too many open event streams on this instance (SSE_MAX_STREAMS={max}); retry shortly"
            ),
            cause: anyhow::anyhow!("SSE_MAX_STREAMS reached"),
        },
    })?;
    let stream =
        EventStream::open(state.clone(), caller.0, credential, subscription, since).await?;
    Ok(HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, "text/event-stream"))
        // `no-transform`: a proxy must not compress (and so buffer) the
        // stream; Next.js rewrites and the `compression` middleware honour it.
        .insert_header((header::CACHE_CONTROL, "no-store, no-transform"))
        .insert_header(("X-Accel-Buffering", "no"))
        .streaming(stream.into_body()))
}
