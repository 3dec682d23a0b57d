//! The condition grammar of an event: a group that needs `all` or `any` of its children, or a
//! leaf comparing a player's metric. Described once for the OpenAPI document and the answers
//! ([`Condition`]); requests are read by hand ([`condition_field`]) so that a mistake names its
//! path (`condition.all[0].op`). Limits and metric names are checked by the event service.

use erp_platform::error::{ApiError, FieldError};
use erp_proto::event::v1 as pb;
use erp_proto::limits::MAX_CONDITION_DEPTH;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

/// A condition tree.
#[derive(Debug, Serialize, ToSchema)]
#[serde(untagged)]
pub(crate) enum Condition {
    All(ConditionAll),
    Any(ConditionAny),
    Leaf(ConditionLeaf),
    /// A node the service sent empty (never expected): `null`.
    #[serde(skip_deserializing)]
    Missing,
}

/// Holds when every child holds.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ConditionAll {
    #[schema(no_recursion, min_items = 1)]
    pub all: Vec<Condition>,
}

/// Holds when at least one child holds.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ConditionAny {
    #[schema(no_recursion, min_items = 1)]
    pub any: Vec<Condition>,
}

/// `metric op value`, the metric summed over the `window`.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ConditionLeaf {
    /// A metric name.
    #[schema(pattern = "^[a-z][a-z0-9_]{0,63}$")]
    pub metric: String,
    pub op: ComparisonOp,
    pub value: i64,
    /// Absent or `null` in a request: `EVENT`.
    #[schema(required = false, value_type = Option<Window>)]
    pub window: Window,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub(crate) enum ComparisonOp {
    Gte,
    Gt,
    Eq,
    Ne,
    Lte,
    Lt,
    /// A value this gateway does not know; never accepted.
    #[serde(skip_deserializing)]
    Unknown,
}

const OPS: [(&str, pb::ComparisonOp, ComparisonOp); 6] = [
    ("GTE", pb::ComparisonOp::Gte, ComparisonOp::Gte),
    ("GT", pb::ComparisonOp::Gt, ComparisonOp::Gt),
    ("EQ", pb::ComparisonOp::Eq, ComparisonOp::Eq),
    ("NE", pb::ComparisonOp::Ne, ComparisonOp::Ne),
    ("LTE", pb::ComparisonOp::Lte, ComparisonOp::Lte),
    ("LT", pb::ComparisonOp::Lt, ComparisonOp::Lt),
];

impl ComparisonOp {
    pub(crate) fn from_pb(value: i32) -> Self {
        OPS.iter()
            .find(|(_, op, _)| *op as i32 == value)
            .map_or(ComparisonOp::Unknown, |(_, _, public)| *public)
    }
}

/// Which of the player's activity a leaf counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub(crate) enum Window {
    /// Between the event's start and end.
    Event,
    /// All of it.
    Lifetime,
}

impl From<&pb::Condition> for Condition {
    fn from(condition: &pb::Condition) -> Self {
        let children = |group: &pb::ConditionGroup| group.children.iter().map(Self::from).collect();
        match &condition.node {
            Some(pb::condition::Node::All(group)) => Condition::All(ConditionAll {
                all: children(group),
            }),
            Some(pb::condition::Node::Any(group)) => Condition::Any(ConditionAny {
                any: children(group),
            }),
            Some(pb::condition::Node::Leaf(leaf)) => Condition::Leaf(ConditionLeaf {
                metric: leaf.metric.clone(),
                op: ComparisonOp::from_pb(leaf.op),
                value: leaf.value,
                window: if leaf.window == pb::Window::Lifetime as i32 {
                    Window::Lifetime
                } else {
                    Window::Event
                },
            }),
            None => Condition::Missing,
        }
    }
}

/// Reads the `condition` field of a request.
pub(super) fn condition_field(value: &Value) -> Result<pb::Condition, ApiError> {
    condition_from_json(value, "condition", 1).map_err(|field| ApiError::validation(vec![field]))
}

/// Reads a condition tree, naming the first problem's path.
fn condition_from_json(
    value: &Value,
    path: &str,
    depth: usize,
) -> Result<pb::Condition, FieldError> {
    // Only bounds the recursion: a tree one level too deep still reaches the event service, which
    // owns the limit and reports it with every other problem of the tree; deeper ones are refused
    // here with the same answer.
    if depth > MAX_CONDITION_DEPTH + 1 {
        return Err(FieldError::new(
            "condition",
            format!("must be at most {MAX_CONDITION_DEPTH} levels deep"),
        ));
    }
    let object = value.as_object().ok_or_else(|| {
        FieldError::new(
            path,
            "must be an object: a leaf {metric, op, value, window?} or {all: [...]} / {any: [...]}",
        )
    })?;
    for (kind, make) in [
        (
            "all",
            pb::condition::Node::All as fn(pb::ConditionGroup) -> pb::condition::Node,
        ),
        ("any", pb::condition::Node::Any),
    ] {
        if let Some(children) = object.get(kind) {
            let children = children
                .as_array()
                .ok_or_else(|| FieldError::new(format!("{path}.{kind}"), "must be an array"))?;
            let children = children
                .iter()
                .enumerate()
                .map(|(i, child)| {
                    condition_from_json(child, &format!("{path}.{kind}[{i}]"), depth + 1)
                })
                .collect::<Result<Vec<_>, _>>()?;
            return Ok(pb::Condition {
                node: Some(make(pb::ConditionGroup { children })),
            });
        }
    }
    let metric = object
        .get("metric")
        .and_then(Value::as_str)
        .ok_or_else(|| {
            FieldError::new(format!("{path}.metric"), "is required and must be a string")
        })?;
    let op = object
        .get("op")
        .and_then(Value::as_str)
        .and_then(|name| OPS.iter().find(|(n, _, _)| *n == name))
        .ok_or_else(|| {
            FieldError::new(
                format!("{path}.op"),
                "must be one of GTE, GT, EQ, NE, LTE, LT",
            )
        })?
        .1;
    let value = object.get("value").and_then(Value::as_i64).ok_or_else(|| {
        FieldError::new(
            format!("{path}.value"),
            "is required and must be an integer",
        )
    })?;
    let window = match object.get("window") {
        None | Some(Value::Null) => pb::Window::Event,
        Some(Value::String(w)) if w == "EVENT" => pb::Window::Event,
        Some(Value::String(w)) if w == "LIFETIME" => pb::Window::Lifetime,
        Some(_) => {
            return Err(FieldError::new(
                format!("{path}.window"),
                "must be EVENT or LIFETIME",
            ));
        }
    };
    Ok(pb::Condition {
        node: Some(pb::condition::Node::Leaf(pb::ConditionLeaf {
            metric: metric.to_owned(),
            op: op as i32,
            value,
            window: window as i32,
        })),
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn nested(levels: usize) -> Value {
        let mut tree = serde_json::json!({"metric": "m", "op": "GTE", "value": 1});
        for _ in 1..levels {
            tree = serde_json::json!({ "all": [tree] });
        }
        tree
    }

    #[test]
    fn the_parse_guard_leaves_the_depth_limit_to_the_event_service() {
        assert!(condition_field(&nested(MAX_CONDITION_DEPTH + 1)).is_ok());
        let refused = condition_field(&nested(MAX_CONDITION_DEPTH + 2)).unwrap_err();
        assert_eq!(refused.fields[0].field, "condition");
        assert_eq!(
            refused.fields[0].message,
            format!("must be at most {MAX_CONDITION_DEPTH} levels deep")
        );
    }

    /// Answers keep the shape the hand-written JSON had.
    #[test]
    fn a_tree_reads_back_as_it_was_sent() {
        let sent = serde_json::json!({"any": [
            {"metric": "login_days", "op": "GTE", "value": 3, "window": "LIFETIME"},
            {"all": [{"metric": "kills", "op": "LT", "value": 10, "window": "EVENT"}]},
        ]});
        let parsed = condition_field(&sent).unwrap();
        assert_eq!(
            serde_json::to_value(Condition::from(&parsed)).unwrap(),
            sent
        );
        let empty = pb::Condition { node: None };
        assert_eq!(
            serde_json::to_value(Condition::from(&empty)).unwrap(),
            Value::Null
        );
    }
}
