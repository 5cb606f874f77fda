//! Bearer tokens for the whole gateway. Publishers (ingest, batch jobs) must
//! present one of the configured publish tokens; readers (matches, live
//! feed, analytics) need a read token only when read tokens are configured.
//!
//! Tokens are compared in constant time, so response timing does not reveal
//! how much of a guess was right. They are never logged: `Debug` prints only
//! how many there are.

use std::fmt;

use axum::http::{HeaderMap, header};

/// A set of accepted tokens.
#[derive(Clone, Default)]
pub struct Tokens(Vec<String>);

impl fmt::Debug for Tokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Tokens({} configured)", self.0.len())
    }
}

/// Why a request was not authorised.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("missing bearer token: send `Authorization: Bearer <token>`")]
    Missing,
    #[error("invalid bearer token")]
    Invalid,
    #[error("publishing is disabled: no publish tokens are configured (COURTSIDE_PUBLISH_TOKENS)")]
    Disabled,
}

impl Tokens {
    /// Parses a comma-separated list; blanks are ignored. Tokens shorter
    /// than 16 characters are refused: they are guessable.
    pub fn parse(raw: &str) -> Result<Self, String> {
        let tokens: Vec<String> =
            raw.split(',').map(str::trim).filter(|t| !t.is_empty()).map(str::to_owned).collect();
        if let Some(position) = tokens.iter().position(|t| t.len() < 16) {
            return Err(format!("token #{} is shorter than 16 characters", position + 1));
        }
        Ok(Self(tokens))
    }

    pub fn from_list(tokens: Vec<String>) -> Self {
        Self(tokens)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether `presented` is one of the tokens.
    pub fn accepts(&self, presented: &str) -> bool {
        self.position(presented).is_some()
    }

    /// Which of the tokens `presented` is. Checks every token, each in
    /// constant time, and picks the match without branching, so timing
    /// depends on neither which one matched nor where a guess went wrong
    /// (only on the length, which is bounded and visible on the wire anyway).
    pub fn position(&self, presented: &str) -> Option<usize> {
        use subtle::{ConditionallySelectable as _, ConstantTimeEq as _};
        // Position + 1; 0 while nothing matched.
        let mut found = 0u64;
        for (position, token) in (1u64..).zip(&self.0) {
            found.conditional_assign(&position, token.as_bytes().ct_eq(presented.as_bytes()));
        }
        usize::try_from(found).ok()?.checked_sub(1)
    }
}

/// A publisher whose token was accepted, known by the position of its token
/// in the configured list: a bounded key for per-publisher limits that holds
/// nothing the client sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Publisher(usize);

impl Publisher {
    /// The position of the publisher's token among the configured ones.
    pub fn index(self) -> usize {
        self.0
    }

    #[cfg(test)]
    pub(crate) fn at(index: usize) -> Self {
        Self(index)
    }
}

/// The read token as a query parameter, for clients that cannot set
/// headers (browsers on WebSocket and EventSource).
#[derive(Debug, serde::Deserialize)]
pub struct TokenQuery {
    pub token: Option<String>,
}

/// The gateway's tokens: who may publish, and who may read.
#[derive(Debug, Clone, Default)]
pub struct Auth {
    pub publish: Tokens,
    /// When set, reads and subscriptions need one of these (or a publish
    /// token); when empty they are public.
    pub read: Tokens,
}

impl Auth {
    /// Checks a publisher's `Authorization` header and says which publisher
    /// it is.
    pub fn authorize_publisher(&self, headers: &HeaderMap) -> Result<Publisher, AuthError> {
        authorize_publisher(&self.publish, headers)
    }

    /// Checks a reader (reads are public when there are no read tokens).
    /// `query_token` is the `?token=` parameter, for browsers, which cannot
    /// set headers on WebSocket or EventSource.
    pub fn authorize_read(&self, headers: &HeaderMap, query_token: Option<&str>) -> Result<(), AuthError> {
        authorize_reader(&self.read, &self.publish, headers, query_token)
    }
}

/// Checks a publisher's `Authorization` header and says which publisher it
/// is.
pub fn authorize_publisher(tokens: &Tokens, headers: &HeaderMap) -> Result<Publisher, AuthError> {
    if tokens.is_empty() {
        return Err(AuthError::Disabled);
    }
    let presented = bearer(headers).ok_or(AuthError::Missing)?;
    tokens.position(presented).map(Publisher).ok_or(AuthError::Invalid)
}

/// Checks a reader: free when no read tokens are configured; otherwise a read
/// or publish token, from the `Authorization` header or a `token` query
/// parameter (browsers cannot set headers on WebSocket or EventSource).
pub fn authorize_reader(
    read: &Tokens,
    publish: &Tokens,
    headers: &HeaderMap,
    query_token: Option<&str>,
) -> Result<(), AuthError> {
    if read.is_empty() {
        return Ok(());
    }
    let presented = bearer(headers).or(query_token).ok_or(AuthError::Missing)?;
    if read.accepts(presented) || publish.accepts(presented) { Ok(()) } else { Err(AuthError::Invalid) }
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    const TOKEN: &str = "publisher-token-0123456789";

    fn headers(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::AUTHORIZATION, HeaderValue::from_str(value).expect("ascii"));
        headers
    }

    #[test]
    fn publishers_need_a_configured_token() {
        let tokens = Tokens::parse(&format!(" {TOKEN} , another-token-abcdefgh")).expect("valid");
        assert_eq!(tokens.len(), 2);
        assert_eq!(authorize_publisher(&tokens, &headers(&format!("Bearer {TOKEN}"))), Ok(Publisher(0)));
        assert_eq!(authorize_publisher(&tokens, &headers("Bearer another-token-abcdefgh")), Ok(Publisher(1)));
        assert_eq!(
            authorize_publisher(&tokens, &headers("Bearer wrong-token-0123456789")),
            Err(AuthError::Invalid)
        );
        assert_eq!(authorize_publisher(&tokens, &headers(TOKEN)), Err(AuthError::Missing));
        assert_eq!(authorize_publisher(&tokens, &HeaderMap::new()), Err(AuthError::Missing));
        assert_eq!(
            authorize_publisher(&Tokens::default(), &headers(&format!("Bearer {TOKEN}"))),
            Err(AuthError::Disabled)
        );
    }

    #[test]
    fn reads_are_public_unless_read_tokens_are_set() {
        let publish = Tokens::parse(TOKEN).expect("valid");
        assert_eq!(authorize_reader(&Tokens::default(), &publish, &HeaderMap::new(), None), Ok(()));
        let read = Tokens::parse("reader-token-0123456789").expect("valid");
        assert_eq!(authorize_reader(&read, &publish, &HeaderMap::new(), None), Err(AuthError::Missing));
        assert_eq!(
            authorize_reader(&read, &publish, &HeaderMap::new(), Some("reader-token-0123456789")),
            Ok(())
        );
        assert_eq!(authorize_reader(&read, &publish, &headers(&format!("Bearer {TOKEN}")), None), Ok(()));
    }

    #[test]
    fn short_tokens_are_refused_and_debug_hides_them() {
        assert!(Tokens::parse("short").is_err());
        let tokens = Tokens::parse(TOKEN).expect("valid");
        assert_eq!(format!("{tokens:?}"), "Tokens(1 configured)");
    }
}
