//! Condition trees both ways.

use erp_proto::event::v1 as pb;
use erp_proto::limits::MAX_CONDITION_DEPTH;

use crate::conditions::{Condition, Leaf, Op, Window};
use crate::error::EventError;

impl From<&Condition> for pb::Condition {
    fn from(condition: &Condition) -> Self {
        let node = match condition {
            Condition::All(children) => pb::condition::Node::All(pb::ConditionGroup {
                children: children.iter().map(pb::Condition::from).collect(),
            }),
            Condition::Any(children) => pb::condition::Node::Any(pb::ConditionGroup {
                children: children.iter().map(pb::Condition::from).collect(),
            }),
            Condition::Leaf(leaf) => pb::condition::Node::Leaf(pb::ConditionLeaf {
                metric: leaf.metric.clone(),
                op: pb::ComparisonOp::from(leaf.op) as i32,
                value: leaf.value,
                window: match leaf.window {
                    Window::Event => pb::Window::Event,
                    Window::Lifetime => pb::Window::Lifetime,
                } as i32,
            }),
        };
        pb::Condition { node: Some(node) }
    }
}

/// Decodes a condition tree, refusing nodes with nothing set and unknown enum values; `path`
/// names the node in errors (`condition.all[0].op`). Deeper than the limit is refused without
/// recursing further.
pub(crate) fn condition_from_pb(
    condition: &pb::Condition,
    path: &str,
    depth: usize,
) -> Result<Condition, EventError> {
    if depth > MAX_CONDITION_DEPTH {
        return Err(EventError::field(
            "condition",
            format!("must be at most {MAX_CONDITION_DEPTH} levels deep"),
        ));
    }
    let group = |children: &[pb::Condition], kind: &str| -> Result<Vec<Condition>, EventError> {
        children
            .iter()
            .enumerate()
            .map(|(i, child)| condition_from_pb(child, &format!("{path}.{kind}[{i}]"), depth + 1))
            .collect()
    };
    match &condition.node {
        Some(pb::condition::Node::All(g)) => Ok(Condition::All(group(&g.children, "all")?)),
        Some(pb::condition::Node::Any(g)) => Ok(Condition::Any(group(&g.children, "any")?)),
        Some(pb::condition::Node::Leaf(leaf)) => {
            let op = match pb::ComparisonOp::try_from(leaf.op) {
                Ok(pb::ComparisonOp::Gte) => Op::Gte,
                Ok(pb::ComparisonOp::Gt) => Op::Gt,
                Ok(pb::ComparisonOp::Eq) => Op::Eq,
                Ok(pb::ComparisonOp::Ne) => Op::Ne,
                Ok(pb::ComparisonOp::Lte) => Op::Lte,
                Ok(pb::ComparisonOp::Lt) => Op::Lt,
                _ => {
                    return Err(EventError::field(
                        format!("{path}.op"),
                        "must be GTE, GT, EQ, NE, LTE or LT",
                    ));
                }
            };
            let window = match pb::Window::try_from(leaf.window) {
                Ok(pb::Window::Unspecified | pb::Window::Event) => Window::Event,
                Ok(pb::Window::Lifetime) => Window::Lifetime,
                Err(_) => {
                    return Err(EventError::field(
                        format!("{path}.window"),
                        "must be EVENT or LIFETIME",
                    ));
                }
            };
            Ok(Condition::Leaf(Leaf {
                metric: leaf.metric.clone(),
                op,
                value: leaf.value,
                window,
            }))
        }
        None => Err(EventError::field(
            path,
            "must be a leaf {metric, op, value}, {all: [...]} or {any: [...]}",
        )),
    }
}
