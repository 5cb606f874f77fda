//! Where the leaderboards live in the shared store: the one layout both
//! tiers name them by. The worker's consumer and recompute write these
//! boards; the gateway reads them. A board's members are player ids.

/// Expected Threat added by each player over the season.
pub const SEASON_XT: &str = "impact:season";

/// Win probability added by each player's goals over the season.
pub const SEASON_WPA: &str = "wpa:season";

/// Expected Threat added by each player in one match.
pub fn match_xt(match_id: &str) -> String {
    format!("impact:match:{match_id}")
}

/// Win probability added by each scorer in one match.
pub fn match_wpa(match_id: &str) -> String {
    format!("wpa:match:{match_id}")
}
