//! What every list of the admin API shares: the page size and cursor a request gives,
//! the page it gets back, and the parsing of the cursors (see [`super::lists`] for why
//! paging is by key).

use axum::extract::Query;
use axum::extract::rejection::QueryRejection;
use serde::{Deserialize, Serialize};

use super::ApiError;

/// The largest `limit` of a page (the OpenAPI document's `maximum`).
pub const MAX_PAGE: usize = crate::requests::status_view::MAX_PAGE_ITEMS;

/// The `limit` of a page that does not give one.
const DEFAULT_PAGE: usize = 1000;

/// One page of a list: `items` under the list's own name, how many items match in all,
/// and where the next page starts (`null` after the last).
#[derive(Debug, Serialize)]
pub struct Page<T> {
    #[serde(flatten)]
    pub(super) items: Items<T>,
    /// Items matching the query in all pages.
    pub(super) total: usize,
    /// Seats held by the matching items (holders and groups only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) seats: Option<u64>,
    /// Pass as `cursor` to get the next page; `null` when this page is the last.
    pub(super) next_cursor: Option<String>,
}

/// The items of a page, named after the list.
#[derive(Debug, Serialize)]
#[serde(rename_all = "snake_case")]
pub(super) enum Items<T> {
    Holders(Vec<T>),
    Groups(Vec<T>),
    Sessions(Vec<T>),
    Queue(Vec<T>),
}

/// What every list takes: a page size and a cursor.
#[derive(Debug, Deserialize)]
pub(super) struct Paging {
    limit: Option<usize>,
    cursor: Option<String>,
}

impl Paging {
    /// The cursor, if one was given (an empty one is none: the first page).
    pub(super) fn cursor(&self) -> Option<&str> {
        self.cursor.as_deref().filter(|c| !c.is_empty())
    }

    pub(super) fn limit(&self) -> Result<usize, ApiError> {
        match self.limit.unwrap_or(DEFAULT_PAGE) {
            0 => Err(bad_query(format!("limit must be 1 to {MAX_PAGE}"))),
            n if n > MAX_PAGE => Err(bad_query(format!("limit must be 1 to {MAX_PAGE}"))),
            n => Ok(n),
        }
    }
}

pub(super) fn bad_query(message: impl Into<String>) -> ApiError {
    ApiError::bad_request("bad_query", message)
}

pub(super) fn bad_cursor(text: &str) -> ApiError {
    bad_query(format!(
        "{text:?} is not a cursor of this list (send a next_cursor back unchanged)"
    ))
}

/// One number of a cursor: 1 to 20 digits (the document's pattern). A value beyond `u64`
/// is past every key, so it stands for the end of the list.
pub(super) fn cursor_number(part: &str, cursor: &str) -> Result<u64, ApiError> {
    if part.is_empty() || part.len() > 20 || !part.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad_cursor(cursor));
    }
    Ok(part.parse().unwrap_or(u64::MAX))
}

/// Parses `N.N` (the key of a holder or a session).
pub(super) fn two_numbers(text: &str) -> Result<(u64, u64), ApiError> {
    let (a, b) = text.split_once('.').ok_or_else(|| bad_cursor(text))?;
    Ok((cursor_number(a, text)?, cursor_number(b, text)?))
}

/// Parses the hex encoding of a name (any bytes: keys compare as bytes).
pub(super) fn hex_name(part: &str, cursor: &str) -> Result<Vec<u8>, ApiError> {
    hex::decode(part).map_err(|_| bad_cursor(cursor))
}

pub(super) fn query_of<T>(query: Result<Query<T>, QueryRejection>) -> Result<T, ApiError> {
    query
        .map(|Query(q)| q)
        .map_err(|e| bad_query(e.body_text()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_that_are_not_ours_are_refused() {
        for bad in ["", "1", "1.", ".1", "a.b", "-1.2", "1.2.3"] {
            assert!(two_numbers(bad).is_err(), "{bad:?}");
        }
        assert_eq!(two_numbers("7.9").unwrap(), (7, 9));
        // Past the end of every list: valid, and an empty page.
        assert_eq!(
            two_numbers("99999999999999999999.0").unwrap(),
            (u64::MAX, 0)
        );
        assert!(two_numbers("999999999999999999999.0").is_err(), "21 digits");
        assert!(hex_name("zz", "zz").is_err() && hex_name("f", "f").is_err());
        assert_eq!(hex_name("ff00", "").unwrap(), [0xff, 0], "any bytes");
    }
}
