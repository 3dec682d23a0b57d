//! Cursor paging shared by every listing: newest first by (time, id), so a cursor stays valid and
//! no item is skipped or repeated when new items are inserted while a client pages.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::error::FieldError;

pub const DEFAULT_LIMIT: u32 = 20;
pub(crate) const MAX_LIMIT: u32 = 100;

/// The position after the last item of a page: its time (ms since the epoch) and id.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Cursor {
    pub at_millis: i64,
    pub id: String,
}

impl Cursor {
    pub fn encode(&self) -> String {
        URL_SAFE_NO_PAD.encode(format!("{}:{}", self.at_millis, self.id))
    }

    /// Reads a cursor; an empty string means the first page.
    pub fn decode(raw: &str) -> Result<Option<Self>, FieldError> {
        if raw.is_empty() {
            return Ok(None);
        }
        let invalid = || FieldError::new("cursor", "is not a cursor returned by this listing");
        let bytes = URL_SAFE_NO_PAD.decode(raw).map_err(|_| invalid())?;
        let text = String::from_utf8(bytes).map_err(|_| invalid())?;
        let (at, id) = text.split_once(':').ok_or_else(invalid)?;
        let at_millis = at.parse().map_err(|_| invalid())?;
        if id.is_empty() {
            return Err(invalid());
        }
        Ok(Some(Self {
            at_millis,
            id: id.to_owned(),
        }))
    }
}

/// The page size for a requested `limit` (0 = default); over 100 is refused.
pub fn page_limit(requested: u32) -> Result<u32, FieldError> {
    match requested {
        0 => Ok(DEFAULT_LIMIT),
        1..=MAX_LIMIT => Ok(requested),
        _ => Err(FieldError::new("limit", "must be between 1 and 100")),
    }
}

/// A listing's page size and start from its request fields, with every invalid field reported at
/// once (the services' listings all take `limit` and `cursor`).
pub fn page_request(limit: u32, cursor: &str) -> Result<(u32, Option<Cursor>), Vec<FieldError>> {
    match (page_limit(limit), Cursor::decode(cursor)) {
        (Ok(limit), Ok(cursor)) => Ok((limit, cursor)),
        (limit, cursor) => Err(limit.err().into_iter().chain(cursor.err()).collect()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursor_round_trips_and_rejects_garbage() {
        let cursor = Cursor {
            at_millis: 1_764_000_000_123,
            id: "0193-abc".into(),
        };
        assert_eq!(Cursor::decode(&cursor.encode()).unwrap(), Some(cursor));
        assert_eq!(Cursor::decode("").unwrap(), None);
        assert_eq!(Cursor::decode("!!").unwrap_err().field, "cursor");
        assert!(Cursor::decode(&URL_SAFE_NO_PAD.encode("x:1")).is_err());
        assert!(Cursor::decode(&URL_SAFE_NO_PAD.encode("12:")).is_err());
    }

    #[test]
    fn page_requests_report_every_bad_field() {
        assert_eq!(page_request(0, "").unwrap(), (20, None));
        let fields: Vec<String> = page_request(101, "!!")
            .unwrap_err()
            .into_iter()
            .map(|e| e.field)
            .collect();
        assert_eq!(fields, ["limit", "cursor"]);
    }

    #[test]
    fn limits_default_and_cap() {
        assert_eq!(page_limit(0).unwrap(), 20);
        assert_eq!(page_limit(100).unwrap(), 100);
        assert_eq!(page_limit(101).unwrap_err().field, "limit");
    }
}

/// A page of a listing.
#[derive(Debug, Clone, PartialEq)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_cursor: Option<String>,
}
