//! Player impact and win probability: the analytics tier's results, served
//! at the edge.
//!
//! Leaderboards are read straight from the shared store, where the worker's
//! stream consumer keeps them current: no gRPC hop for a read. Win
//! probability is computed on demand by the worker (the Monte Carlo part is
//! deliberately CPU-heavy); the gateway only forwards, and maps a saturated worker to 503 with `Retry-After` and a
//! missed deadline to 504.

use std::sync::Arc;

use axum::{Json, extract::State, http::HeaderMap};
use domain::boards;
use domain::live::MatchId;
use serde::{Deserialize, Serialize};
use store::StateStore;

use edge::{
    auth::Auth,
    extract::{Path, Query},
};

use crate::{
    error::ApiError,
    live::wire::MatchView,
    worker::{ScoreLine, WinProbabilities, WorkerClient},
};

/// Players listed when the caller does not say.
const DEFAULT_TOP: usize = 20;
const MAX_TOP: usize = 1_000;

#[derive(Debug, Deserialize)]
pub struct TopQuery {
    /// How many players to list (default 20, at most 1000).
    pub top: Option<usize>,
    /// Read token, when reads need one.
    pub token: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct PlayerXt {
    pub player: String,
    /// Sum of the Expected Threat added by the player's successful moves.
    pub xt: f64,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct MatchImpact {
    #[serde(rename = "match")]
    pub match_id: String,
    /// By Expected Threat added, best first.
    pub players: Vec<PlayerXt>,
    /// Scorers by the win probability their goals added, best first.
    pub goals: Vec<PlayerWpa>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct PlayerWpa {
    pub player: String,
    /// Sum, over the player's goals, of the rise in the team's win
    /// probability the goal caused.
    pub wpa: f64,
}

/// The players of a match ranked by Expected Threat added.
#[utoipa::path(get, path = "/v1/matches/{id}/impact", tag = "analytics",
    params(("id" = String, Path, description = "match id"), ("top" = Option<usize>, Query, description = "players to list")),
    responses(
        (status = 200, description = "the match leaderboard (empty until the worker has rated moves)", body = MatchImpact),
        (status = 400, description = "invalid match id or `top`", body = edge::error::ErrorBody),
        (status = 429, description = "over the rate limit for this client address; see Retry-After", body = edge::error::ErrorBody, headers(("retry-after" = u64, description = "seconds until a request would be accepted"))),
        (status = 503, description = "state store unavailable", body = edge::error::ErrorBody),
    ))]
pub async fn match_impact(
    State(store): State<Arc<dyn StateStore>>,
    State(auth): State<Arc<Auth>>,
    Path(match_id): Path<String>,
    headers: HeaderMap,
    Query(query): Query<TopQuery>,
) -> Result<Json<MatchImpact>, ApiError> {
    auth.authorize_read(&headers, query.token.as_deref())?;
    let id = MatchId::parse(&match_id).map_err(|err| ApiError::invalid_parameter(err.to_string()))?;
    let top = top(query.top)?;
    let ranked = store.leaderboard(&boards::match_xt(id.as_str()), top).await?;
    let players = ranked.into_iter().map(|r| PlayerXt { player: r.member, xt: r.score }).collect();
    let scorers = store.leaderboard(&boards::match_wpa(id.as_str()), top).await?;
    let goals = scorers.into_iter().map(|r| PlayerWpa { player: r.member, wpa: r.score }).collect();
    Ok(Json(MatchImpact { match_id: id.to_string(), players, goals }))
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct PlayerImpact {
    pub player: u32,
    /// Expected Threat added over the season (every match in the stream).
    pub season_xt: f64,
    /// Win probability added by the player's goals over the season.
    pub season_wpa: f64,
}

/// One player's season impact.
#[utoipa::path(get, path = "/v1/players/{id}/impact", tag = "analytics",
    params(("id" = u32, Path, description = "player id")),
    responses(
        (status = 200, description = "the player's season total", body = PlayerImpact),
        (status = 400, description = "the id is not a player id", body = edge::error::ErrorBody),
        (status = 404, description = "the player has no rated move yet", body = edge::error::ErrorBody),
        (status = 429, description = "over the rate limit for this client address; see Retry-After", body = edge::error::ErrorBody, headers(("retry-after" = u64, description = "seconds until a request would be accepted"))),
    ))]
pub async fn player_impact(
    State(store): State<Arc<dyn StateStore>>,
    State(auth): State<Arc<Auth>>,
    Path(player): Path<String>,
    headers: HeaderMap,
    Query(query): Query<edge::auth::TokenQuery>,
) -> Result<Json<PlayerImpact>, ApiError> {
    auth.authorize_read(&headers, query.token.as_deref())?;
    let player: u32 = player.parse().map_err(|_| {
        ApiError::invalid_parameter(format!("player id must be a non-negative integer, got {player:?}"))
    })?;
    let member = player.to_string();
    let season_xt = store.leaderboard_score(boards::SEASON_XT, &member).await?;
    let season_wpa = store.leaderboard_score(boards::SEASON_WPA, &member).await?;
    if season_xt.is_none() && season_wpa.is_none() {
        return Err(ApiError::NotRated(player));
    }
    Ok(Json(PlayerImpact {
        player,
        season_xt: season_xt.unwrap_or(0.0),
        season_wpa: season_wpa.unwrap_or(0.0),
    }))
}

#[derive(Debug, Deserialize)]
pub struct SamplesQuery {
    /// Monte Carlo samples (the worker's default when absent; it caps them).
    pub samples: Option<u64>,
    /// Read token, when reads need one.
    pub token: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct MatchWinProbability {
    #[serde(rename = "match")]
    pub match_id: String,
    pub minute: u16,
    pub score: crate::live::wire::Score,
    #[serde(flatten)]
    pub probabilities: WinProbabilities,
}

/// Win probability for a match's current state, computed by the worker.
#[utoipa::path(get, path = "/v1/matches/{id}/win-probability", tag = "analytics",
    params(("id" = String, Path, description = "match id"), ("samples" = Option<u64>, Query, description = "Monte Carlo samples")),
    responses(
        (status = 200, description = "closed form and Monte Carlo estimates", body = MatchWinProbability),
        (status = 404, description = "no such match", body = edge::error::ErrorBody),
        (status = 429, description = "over the rate limit for this client address; see Retry-After", body = edge::error::ErrorBody, headers(("retry-after" = u64, description = "seconds until a request would be accepted"))),
        (status = 503, description = "worker busy or unavailable; see Retry-After", body = edge::error::ErrorBody),
        (status = 504, description = "the worker did not answer within its deadline", body = edge::error::ErrorBody),
    ))]
pub async fn win_probability(
    State(store): State<Arc<dyn StateStore>>,
    State(worker): State<WorkerClient>,
    State(auth): State<Arc<Auth>>,
    Path(match_id): Path<String>,
    headers: HeaderMap,
    Query(query): Query<SamplesQuery>,
) -> Result<Json<MatchWinProbability>, ApiError> {
    auth.authorize_read(&headers, query.token.as_deref())?;
    let id = MatchId::parse(&match_id).map_err(|err| ApiError::invalid_parameter(err.to_string()))?;
    let (_, stored) =
        store.log_state(id.as_str()).await?.ok_or_else(|| ApiError::UnknownMatch(id.to_string()))?;
    let view: MatchView = serde_json::from_slice(&stored).map_err(|err| {
        ApiError::Unexpected(anyhow::anyhow!("stored match state is not valid json: {err}"))
    })?;
    let line = ScoreLine {
        minute: view.minute,
        home_goals: view.score.home,
        away_goals: view.score.away,
        home_red_cards: view.red_cards.home,
        away_red_cards: view.red_cards.away,
    };
    let probabilities = worker.win_probability(line, query.samples.unwrap_or(0)).await?;
    Ok(Json(MatchWinProbability {
        match_id: id.to_string(),
        minute: view.minute,
        score: view.score,
        probabilities,
    }))
}

fn top(requested: Option<usize>) -> Result<usize, ApiError> {
    match requested {
        None => Ok(DEFAULT_TOP),
        Some(n) if (1..=MAX_TOP).contains(&n) => Ok(n),
        Some(n) => {
            Err(ApiError::invalid_parameter(format!("`top` must be between 1 and {MAX_TOP}, got {n}")))
        }
    }
}
