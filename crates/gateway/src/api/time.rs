//! Times on the wire: RFC 3339 UTC in JSON (`Z`, the fraction only when there is one, which is how
//! `chrono` serialises a `DateTime<Utc>`), `google.protobuf.Timestamp` towards the services, and
//! the range the API accepts.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Deserializer};

pub(super) use erp_proto::time::timestamp;

/// A service's timestamp as a time; `None` when absent or out of range.
pub(super) fn time(at: Option<prost_types::Timestamp>) -> Option<DateTime<Utc>> {
    let at = at?;
    DateTime::<Utc>::from_timestamp(at.seconds, u32::try_from(at.nanos).ok()?)
}

/// The earliest and latest instants the API accepts (API.md, Conventions).
pub(super) const MIN_TIME: &str = "1970-01-01T00:00:00Z";
pub(super) const MAX_TIME: &str = "9999-12-31T23:59:59Z";

/// Whether `at` lies in [`MIN_TIME`] ..= [`MAX_TIME`].
fn time_in_range(at: &DateTime<Utc>) -> bool {
    // 9999-12-31T23:59:59Z, with any fraction of that last second.
    const MAX_SECONDS: i64 = 253_402_300_799;
    (0..=MAX_SECONDS).contains(&at.timestamp())
}

/// An RFC 3339 time within the accepted range; others are a validation error on the field.
pub(super) fn bounded_time<'de, D>(deserializer: D) -> Result<DateTime<Utc>, D::Error>
where
    D: Deserializer<'de>,
{
    let at = DateTime::<Utc>::deserialize(deserializer)?;
    if time_in_range(&at) {
        Ok(at)
    } else {
        Err(serde::de::Error::custom(format!(
            "must lie in {MIN_TIME} ..= {MAX_TIME}"
        )))
    }
}

/// [`bounded_time`] for an optional field.
pub(super) fn bounded_time_option<'de, D>(
    deserializer: D,
) -> Result<Option<DateTime<Utc>>, D::Error>
where
    D: Deserializer<'de>,
{
    #[derive(Deserialize)]
    struct Bounded(#[serde(deserialize_with = "bounded_time")] DateTime<Utc>);
    Ok(Option::<Bounded>::deserialize(deserializer)?.map(|Bounded(at)| at))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    /// Typed response times serialise exactly as the strings the gateway wrote before them.
    #[test]
    fn response_times_keep_their_format() {
        for (seconds, nanos, text) in [
            (1_893_456_000, 0, "2030-01-01T00:00:00Z"),
            (1_893_456_000, 120_000_000, "2030-01-01T00:00:00.120Z"),
            (1_893_456_000, 123_456_000, "2030-01-01T00:00:00.123456Z"),
            (1_893_456_000, 1, "2030-01-01T00:00:00.000000001Z"),
            (253_402_300_799, 999_000_000, "9999-12-31T23:59:59.999Z"),
        ] {
            let at = time(Some(prost_types::Timestamp { seconds, nanos })).unwrap();
            assert_eq!(serde_json::to_value(at).unwrap(), text);
        }
        assert_eq!(
            time(Some(prost_types::Timestamp {
                seconds: 0,
                nanos: -1
            })),
            None
        );
    }
}
