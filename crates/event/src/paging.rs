//! The page size and cursor of a listing request, checked together so one answer names every
//! bad field.

use erp_platform::error::FieldError;
use erp_platform::pagination::{Cursor, page_limit};

use crate::error::EventError;

pub(crate) fn paging(limit: u32, cursor: &str) -> Result<(u32, Option<Cursor>), EventError> {
    let mut errors: Vec<FieldError> = Vec::new();
    let limit = page_limit(limit)
        .map_err(|e| errors.push(e))
        .unwrap_or_default();
    let cursor = Cursor::decode(cursor)
        .map_err(|e| errors.push(e))
        .unwrap_or_default();
    if errors.is_empty() {
        Ok((limit, cursor))
    } else {
        Err(EventError::Validation(errors))
    }
}
