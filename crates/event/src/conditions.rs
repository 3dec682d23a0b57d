//! The condition engine: a pure function from a condition tree and a player's activity buckets to
//! a verdict with per-leaf details. No I/O; the store loads the buckets, this decides.
//!
//! Activity is kept per (user, metric, UTC day) with per-minute partials, so a window edge inside a
//! day is honoured to the minute: a minute slot counts when its start lies in
//! `[floor_minute(startsAt), floor_minute(endsAt))` — activity at `startsAt` counts, at `endsAt`
//! does not.

use std::collections::BTreeSet;

use chrono::{DateTime, Duration, NaiveDate, Timelike, Utc};
use erp_proto::limits::{MAX_CONDITION_DEPTH, MAX_CONDITION_LEAVES};
use serde::{Deserialize, Serialize};

/// Distinct UTC days with a login in the window.
pub(crate) const LOGIN_DAYS: &str = "login_days";
/// Longest run of consecutive such days.
pub(crate) const LOGIN_STREAK: &str = "login_streak";
/// The metric logins are recorded under (not usable in conditions directly).
pub(crate) const LOGIN_METRIC: &str = "login";

/// A comparison; in JSON by its API name (`"GTE"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Op {
    Gte,
    Gt,
    Eq,
    Ne,
    Lte,
    Lt,
}

impl Op {
    pub fn holds(self, actual: i64, expected: i64) -> bool {
        match self {
            Op::Gte => actual >= expected,
            Op::Gt => actual > expected,
            Op::Eq => actual == expected,
            Op::Ne => actual != expected,
            Op::Lte => actual <= expected,
            Op::Lt => actual < expected,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Op::Gte => "GTE",
            Op::Gt => "GT",
            Op::Eq => "EQ",
            Op::Ne => "NE",
            Op::Lte => "LTE",
            Op::Lt => "LT",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Window {
    /// Only activity inside the event's window.
    #[default]
    Event,
    Lifetime,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leaf {
    pub metric: String,
    pub op: Op,
    pub value: i64,
    pub window: Window,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Condition {
    All(Vec<Condition>),
    Any(Vec<Condition>),
    Leaf(Leaf),
}

/// One minute of one day's activity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct MinuteSlot {
    /// Minute of the UTC day, 0..1440.
    pub minute: u16,
    pub sum: i64,
    pub max: Option<i64>,
}

/// A player's activity for one metric on one UTC day.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Bucket {
    pub metric: String,
    pub day: NaiveDate,
    /// Total of `INCREMENT` reports (logins count 1 each).
    pub sum: i64,
    /// Highest `MAX` report, if any.
    pub max: Option<i64>,
    /// Whether any `INCREMENT` report (or login) contributed.
    pub has_sum: bool,
    pub minutes: Vec<MinuteSlot>,
}

/// The time window a leaf looks at: `[start, end)`, or everything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Span {
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
}

/// The result for one leaf.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeafResult {
    pub metric: String,
    pub op: Op,
    pub value: i64,
    pub actual: i64,
    pub passed: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Evaluation {
    pub passed: bool,
    /// One entry per leaf, in tree order.
    pub details: Vec<LeafResult>,
}

/// A problem with a condition tree, naming where it is (`condition.all[1].metric`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConditionProblem {
    pub path: String,
    pub message: String,
}

pub(crate) fn is_valid_metric_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some('a'..='z'))
        && name.len() <= 64
        && chars.all(|c| matches!(c, 'a'..='z' | '0'..='9' | '_'))
}

impl Condition {
    pub fn leaves(&self) -> Vec<&Leaf> {
        let mut out = Vec::new();
        self.collect_leaves(&mut out);
        out
    }

    fn collect_leaves<'a>(&'a self, out: &mut Vec<&'a Leaf>) {
        match self {
            Condition::Leaf(leaf) => out.push(leaf),
            Condition::All(children) | Condition::Any(children) => {
                for child in children {
                    child.collect_leaves(out);
                }
            }
        }
    }

    pub fn depth(&self) -> usize {
        match self {
            Condition::Leaf(_) => 1,
            Condition::All(children) | Condition::Any(children) => {
                1 + children.iter().map(Condition::depth).max().unwrap_or(0)
            }
        }
    }

    /// Checks limits (depth ≤ 5, ≤ 32 leaves), non-empty groups and metric names.
    pub fn validate(&self, root: &str) -> Vec<ConditionProblem> {
        let mut problems = Vec::new();
        if self.depth() > MAX_CONDITION_DEPTH {
            problems.push(ConditionProblem {
                path: root.to_owned(),
                message: format!("must be at most {MAX_CONDITION_DEPTH} levels deep"),
            });
        }
        let leaves = self.leaves().len();
        if leaves > MAX_CONDITION_LEAVES {
            problems.push(ConditionProblem {
                path: root.to_owned(),
                message: format!("must have at most {MAX_CONDITION_LEAVES} leaves (has {leaves})"),
            });
        }
        self.validate_node(root, &mut problems);
        problems
    }

    fn validate_node(&self, path: &str, problems: &mut Vec<ConditionProblem>) {
        match self {
            Condition::Leaf(leaf) => {
                if !is_valid_metric_name(&leaf.metric) || leaf.metric == LOGIN_METRIC {
                    problems.push(ConditionProblem {
                        path: format!("{path}.metric"),
                        message: "must match ^[a-z][a-z0-9_]{0,63}$ (and not be `login`; use login_days or login_streak)".to_owned(),
                    });
                }
            }
            Condition::All(children) | Condition::Any(children) => {
                let kind = if matches!(self, Condition::All(_)) {
                    "all"
                } else {
                    "any"
                };
                if children.is_empty() {
                    problems.push(ConditionProblem {
                        path: format!("{path}.{kind}"),
                        message: "must have at least one condition".to_owned(),
                    });
                }
                for (i, child) in children.iter().enumerate() {
                    child.validate_node(&format!("{path}.{kind}[{i}]"), problems);
                }
            }
        }
    }
}

/// Truncates to the start of its minute.
fn floor_minute(at: DateTime<Utc>) -> DateTime<Utc> {
    at.with_second(0)
        .and_then(|t| t.with_nanosecond(0))
        .unwrap_or(at)
}

fn slot_start(day: NaiveDate, minute: u16) -> DateTime<Utc> {
    day.and_hms_opt(0, 0, 0).unwrap_or_default().and_utc() + Duration::minutes(i64::from(minute))
}

/// Activity of one bucket inside `span`: (sum, max, any activity). Whole days inside the span use
/// the day's totals; edge days add up their minute slots.
fn within(bucket: &Bucket, span: Option<Span>) -> (i64, Option<i64>, bool) {
    let Some(span) = span else {
        return (bucket.sum, bucket.max, true);
    };
    let start = floor_minute(span.start);
    let end = floor_minute(span.end);
    let day_start = slot_start(bucket.day, 0);
    let day_end = day_start + Duration::days(1);
    if day_start >= start && day_end <= end {
        return (bucket.sum, bucket.max, true);
    }
    if day_end <= start || day_start >= end {
        return (0, None, false);
    }
    let mut sum = 0i64;
    let mut max: Option<i64> = None;
    let mut any = false;
    for slot in &bucket.minutes {
        let at = slot_start(bucket.day, slot.minute);
        if at >= start && at < end {
            any = true;
            sum = sum.saturating_add(slot.sum);
            max = match (max, slot.max) {
                (Some(a), Some(b)) => Some(a.max(b)),
                (a, b) => a.or(b),
            };
        }
    }
    (sum, max, any)
}

/// Days with a login inside `span`, ascending.
fn login_days(buckets: &[Bucket], span: Option<Span>) -> BTreeSet<NaiveDate> {
    buckets
        .iter()
        .filter(|b| b.metric == LOGIN_METRIC)
        .filter(|b| {
            let (sum, _, any) = within(b, span);
            any && sum > 0
        })
        .map(|b| b.day)
        .collect()
}

fn longest_streak(days: &BTreeSet<NaiveDate>) -> i64 {
    let mut longest = 0i64;
    let mut current = 0i64;
    let mut previous: Option<NaiveDate> = None;
    for &day in days {
        current = match previous {
            Some(p) if p.succ_opt() == Some(day) => current + 1,
            _ => 1,
        };
        longest = longest.max(current);
        previous = Some(day);
    }
    longest
}

/// The actual value of `leaf` over `buckets` for an event spanning `event_span`.
pub(crate) fn actual(leaf: &Leaf, buckets: &[Bucket], event_span: Span) -> i64 {
    let span = match leaf.window {
        Window::Event => Some(event_span),
        Window::Lifetime => None,
    };
    match leaf.metric.as_str() {
        LOGIN_DAYS => i64::try_from(login_days(buckets, span).len()).unwrap_or(i64::MAX),
        LOGIN_STREAK => longest_streak(&login_days(buckets, span)),
        metric => {
            let mut sum = 0i64;
            let mut max: Option<i64> = None;
            let mut has_sum = false;
            for bucket in buckets.iter().filter(|b| b.metric == metric) {
                let (s, m, any) = within(bucket, span);
                if !any {
                    continue;
                }
                sum = sum.saturating_add(s);
                has_sum |= bucket.has_sum;
                max = match (max, m) {
                    (Some(a), Some(b)) => Some(a.max(b)),
                    (a, b) => a.or(b),
                };
            }
            // A metric reported with MAX takes its maximum; otherwise (INCREMENT) its sum.
            match max {
                Some(max) if !has_sum => max,
                _ => sum,
            }
        }
    }
}

/// Evaluates `condition` (none: always passes) over a player's buckets.
pub(crate) fn evaluate(
    condition: Option<&Condition>,
    buckets: &[Bucket],
    event_span: Span,
) -> Evaluation {
    let Some(condition) = condition else {
        return Evaluation {
            passed: true,
            details: Vec::new(),
        };
    };
    let mut details = Vec::new();
    let passed = evaluate_node(condition, buckets, event_span, &mut details);
    Evaluation { passed, details }
}

fn evaluate_node(
    condition: &Condition,
    buckets: &[Bucket],
    event_span: Span,
    details: &mut Vec<LeafResult>,
) -> bool {
    match condition {
        Condition::Leaf(leaf) => {
            let actual = actual(leaf, buckets, event_span);
            let passed = leaf.op.holds(actual, leaf.value);
            details.push(LeafResult {
                metric: leaf.metric.clone(),
                op: leaf.op,
                value: leaf.value,
                actual,
                passed,
            });
            passed
        }
        // Every child is evaluated (no short-circuit) so the details show every leaf.
        Condition::All(children) => {
            let results: Vec<bool> = children
                .iter()
                .map(|c| evaluate_node(c, buckets, event_span, details))
                .collect();
            results.into_iter().all(|passed| passed)
        }
        Condition::Any(children) => {
            let results: Vec<bool> = children
                .iter()
                .map(|c| evaluate_node(c, buckets, event_span, details))
                .collect();
            results.into_iter().any(|passed| passed)
        }
    }
}

/// The metrics and earliest day a condition needs, so the store loads only those buckets.
pub(crate) fn needed(condition: &Condition, event_span: Span) -> (Vec<String>, Option<NaiveDate>) {
    let mut metrics: Vec<String> = Vec::new();
    let mut lifetime = false;
    for leaf in condition.leaves() {
        let metric = match leaf.metric.as_str() {
            LOGIN_DAYS | LOGIN_STREAK => LOGIN_METRIC.to_owned(),
            other => other.to_owned(),
        };
        if !metrics.contains(&metric) {
            metrics.push(metric);
        }
        lifetime |= leaf.window == Window::Lifetime;
    }
    let from = (!lifetime).then(|| event_span.start.date_naive());
    (metrics, from)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use proptest::prelude::*;

    fn at(y: i32, m: u32, d: u32, h: u32, min: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, m, d, h, min, 0).unwrap()
    }

    fn leaf(metric: &str, op: Op, value: i64, window: Window) -> Condition {
        Condition::Leaf(Leaf {
            metric: metric.into(),
            op,
            value,
            window,
        })
    }

    /// Activity of `value` at `time` (INCREMENT).
    fn inc(metric: &str, time: DateTime<Utc>, value: i64) -> Bucket {
        let minute = u16::try_from(time.hour() * 60 + time.minute()).unwrap();
        Bucket {
            metric: metric.into(),
            day: time.date_naive(),
            sum: value,
            max: None,
            has_sum: true,
            minutes: vec![MinuteSlot {
                minute,
                sum: value,
                max: None,
            }],
        }
    }

    fn max_report(metric: &str, time: DateTime<Utc>, value: i64) -> Bucket {
        let minute = u16::try_from(time.hour() * 60 + time.minute()).unwrap();
        Bucket {
            metric: metric.into(),
            day: time.date_naive(),
            sum: 0,
            max: Some(value),
            has_sum: false,
            minutes: vec![MinuteSlot {
                minute,
                sum: 0,
                max: Some(value),
            }],
        }
    }

    fn login(time: DateTime<Utc>) -> Bucket {
        inc(LOGIN_METRIC, time, 1)
    }

    fn span(start: DateTime<Utc>, end: DateTime<Utc>) -> Span {
        Span { start, end }
    }

    #[test]
    fn every_op_compares_as_named() {
        let cases = [
            (Op::Gte, [(5, true), (4, false), (6, true)]),
            (Op::Gt, [(5, false), (4, false), (6, true)]),
            (Op::Eq, [(5, true), (4, false), (6, false)]),
            (Op::Ne, [(5, false), (4, true), (6, true)]),
            (Op::Lte, [(5, true), (4, true), (6, false)]),
            (Op::Lt, [(5, false), (4, true), (6, false)]),
        ];
        for (op, expectations) in cases {
            for (actual, expected) in expectations {
                assert_eq!(op.holds(actual, 5), expected, "{op:?} {actual} vs 5");
            }
        }
    }

    #[test]
    fn activity_at_start_counts_and_at_end_does_not() {
        let window = span(at(2026, 12, 1, 12, 0), at(2026, 12, 3, 12, 0));
        let condition = leaf("kills", Op::Gte, 1, Window::Event);
        let at_start = [inc("kills", at(2026, 12, 1, 12, 0), 1)];
        assert!(evaluate(Some(&condition), &at_start, window).passed);
        let just_before = [inc("kills", at(2026, 12, 1, 11, 59), 1)];
        assert!(!evaluate(Some(&condition), &just_before, window).passed);
        let at_end = [inc("kills", at(2026, 12, 3, 12, 0), 1)];
        assert!(!evaluate(Some(&condition), &at_end, window).passed);
        let just_before_end = [inc("kills", at(2026, 12, 3, 11, 59), 1)];
        assert!(evaluate(Some(&condition), &just_before_end, window).passed);
    }

    #[test]
    fn lifetime_window_counts_everything() {
        let window = span(at(2026, 12, 1, 0, 0), at(2026, 12, 2, 0, 0));
        let buckets = [
            inc("kills", at(2025, 1, 1, 0, 0), 3),
            inc("kills", at(2026, 12, 1, 5, 0), 2),
            inc("kills", at(2027, 1, 1, 0, 0), 4),
        ];
        let event = leaf("kills", Op::Gte, 0, Window::Event);
        let lifetime = leaf("kills", Op::Gte, 0, Window::Lifetime);
        assert_eq!(
            evaluate(Some(&event), &buckets, window).details[0].actual,
            2
        );
        assert_eq!(
            evaluate(Some(&lifetime), &buckets, window).details[0].actual,
            9
        );
    }

    #[test]
    fn increment_sums_and_max_takes_the_highest() {
        let window = span(at(2026, 12, 1, 0, 0), at(2026, 12, 10, 0, 0));
        let sums = [
            inc("gold", at(2026, 12, 1, 1, 0), 10),
            inc("gold", at(2026, 12, 2, 1, 0), 15),
        ];
        let maxes = [
            max_report("level", at(2026, 12, 1, 1, 0), 7),
            max_report("level", at(2026, 12, 3, 1, 0), 12),
            max_report("level", at(2026, 12, 4, 1, 0), 9),
        ];
        assert_eq!(
            actual(
                &Leaf {
                    metric: "gold".into(),
                    op: Op::Gte,
                    value: 0,
                    window: Window::Event
                },
                &sums,
                window
            ),
            25
        );
        assert_eq!(
            actual(
                &Leaf {
                    metric: "level".into(),
                    op: Op::Gte,
                    value: 0,
                    window: Window::Event
                },
                &maxes,
                window
            ),
            12
        );
    }

    #[test]
    fn login_days_and_streaks_across_month_ends() {
        let window = span(at(2026, 1, 1, 0, 0), at(2026, 12, 31, 0, 0));
        let buckets = [
            login(at(2026, 1, 30, 8, 0)),
            login(at(2026, 1, 31, 8, 0)),
            login(at(2026, 2, 1, 8, 0)),
            login(at(2026, 2, 2, 8, 0)),
            // gap on 2026-02-03
            login(at(2026, 2, 4, 8, 0)),
            login(at(2026, 2, 28, 8, 0)),
            login(at(2026, 3, 1, 8, 0)),
        ];
        let days = leaf(LOGIN_DAYS, Op::Gte, 0, Window::Event);
        let streak = leaf(LOGIN_STREAK, Op::Gte, 0, Window::Event);
        assert_eq!(evaluate(Some(&days), &buckets, window).details[0].actual, 7);
        assert_eq!(
            evaluate(Some(&streak), &buckets, window).details[0].actual,
            4
        );
        // 2026-02-28 → 03-01 is consecutive (not a leap year).
        let feb = [login(at(2026, 2, 28, 0, 0)), login(at(2026, 3, 1, 0, 0))];
        assert_eq!(evaluate(Some(&streak), &feb, window).details[0].actual, 2);
        let leap = [login(at(2028, 2, 28, 0, 0)), login(at(2028, 3, 1, 0, 0))];
        let all_time = leaf(LOGIN_STREAK, Op::Gte, 0, Window::Lifetime);
        assert_eq!(
            evaluate(Some(&all_time), &leap, window).details[0].actual,
            1
        );
    }

    #[test]
    fn login_days_respect_the_window_edges_inside_a_day() {
        let window = span(at(2026, 12, 1, 12, 0), at(2026, 12, 3, 12, 0));
        let buckets = [
            login(at(2026, 12, 1, 11, 0)), // before start, same day
            login(at(2026, 12, 2, 9, 0)),
            login(at(2026, 12, 3, 12, 0)), // at end
        ];
        let days = leaf(LOGIN_DAYS, Op::Gte, 0, Window::Event);
        assert_eq!(evaluate(Some(&days), &buckets, window).details[0].actual, 1);
    }

    #[test]
    fn empty_activity_is_zero() {
        let window = span(at(2026, 12, 1, 0, 0), at(2026, 12, 2, 0, 0));
        for metric in ["kills", LOGIN_DAYS, LOGIN_STREAK] {
            let condition = leaf(metric, Op::Eq, 0, Window::Event);
            let evaluation = evaluate(Some(&condition), &[], window);
            assert!(evaluation.passed);
            assert_eq!(evaluation.details[0].actual, 0);
        }
        assert!(evaluate(None, &[], window).passed);
        assert!(evaluate(None, &[], window).details.is_empty());
    }

    #[test]
    fn nested_trees_combine_and_report_every_leaf() {
        let window = span(at(2026, 12, 1, 0, 0), at(2026, 12, 10, 0, 0));
        let buckets = [
            inc("kills", at(2026, 12, 2, 0, 0), 5),
            login(at(2026, 12, 2, 0, 0)),
        ];
        let tree = Condition::All(vec![
            leaf(LOGIN_DAYS, Op::Gte, 1, Window::Event),
            Condition::Any(vec![
                leaf("kills", Op::Gte, 100, Window::Event),
                Condition::All(vec![
                    leaf("kills", Op::Gte, 5, Window::Event),
                    leaf("deaths", Op::Lt, 1, Window::Event),
                ]),
            ]),
        ]);
        let evaluation = evaluate(Some(&tree), &buckets, window);
        assert!(evaluation.passed);
        assert_eq!(evaluation.details.len(), 4);
        assert_eq!(
            evaluation
                .details
                .iter()
                .map(|d| d.passed)
                .collect::<Vec<_>>(),
            [true, false, true, true]
        );
        let failing = Condition::All(vec![tree, leaf("kills", Op::Gt, 5, Window::Event)]);
        assert!(!evaluate(Some(&failing), &buckets, window).passed);
    }

    #[test]
    fn limits_are_enforced_with_paths() {
        let deep = (0..5).fold(leaf("a", Op::Gte, 1, Window::Event), |c, _| {
            Condition::All(vec![c])
        });
        assert_eq!(deep.depth(), 6);
        assert!(!deep.validate("condition").is_empty());
        let ok_depth = (0..4).fold(leaf("a", Op::Gte, 1, Window::Event), |c, _| {
            Condition::All(vec![c])
        });
        assert!(ok_depth.validate("condition").is_empty());

        let wide = Condition::Any(
            (0..33)
                .map(|_| leaf("a", Op::Gte, 1, Window::Event))
                .collect(),
        );
        assert!(wide.validate("condition")[0].message.contains("32"));
        let ok_wide = Condition::Any(
            (0..32)
                .map(|_| leaf("a", Op::Gte, 1, Window::Event))
                .collect(),
        );
        assert!(ok_wide.validate("condition").is_empty());

        let bad = Condition::All(vec![
            leaf("ok", Op::Gte, 1, Window::Event),
            leaf("Bad-Name", Op::Gte, 1, Window::Event),
            Condition::Any(vec![]),
        ]);
        let problems = bad.validate("condition");
        let paths: Vec<&str> = problems.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(paths, ["condition.all[1].metric", "condition.all[2].any"]);
    }

    #[test]
    fn metric_names_follow_the_pattern() {
        assert!(is_valid_metric_name("kills"));
        assert!(is_valid_metric_name("a"));
        assert!(is_valid_metric_name(&format!("a{}", "b".repeat(63))));
        assert!(!is_valid_metric_name(&format!("a{}", "b".repeat(64))));
        assert!(!is_valid_metric_name("1kills"));
        assert!(!is_valid_metric_name("Kills"));
        assert!(!is_valid_metric_name("kill-count"));
        assert!(!is_valid_metric_name(""));
    }

    #[test]
    fn needed_buckets_cover_the_condition() {
        let window = span(at(2026, 12, 1, 0, 0), at(2026, 12, 10, 0, 0));
        let tree = Condition::All(vec![
            leaf(LOGIN_DAYS, Op::Gte, 1, Window::Event),
            leaf(LOGIN_STREAK, Op::Gte, 1, Window::Event),
            leaf("kills", Op::Gte, 1, Window::Event),
        ]);
        let (metrics, from) = needed(&tree, window);
        assert_eq!(metrics, ["login", "kills"]);
        assert_eq!(from, Some(window.start.date_naive()));
        let lifetime = Condition::All(vec![leaf("kills", Op::Gte, 1, Window::Lifetime)]);
        assert_eq!(needed(&lifetime, window).1, None);
    }

    fn arb_op() -> impl Strategy<Value = Op> {
        prop_oneof![
            Just(Op::Gte),
            Just(Op::Gt),
            Just(Op::Eq),
            Just(Op::Ne),
            Just(Op::Lte),
            Just(Op::Lt)
        ]
    }

    fn arb_leaf() -> impl Strategy<Value = Condition> {
        (
            prop_oneof![
                Just("kills"),
                Just("gold"),
                Just(LOGIN_DAYS),
                Just(LOGIN_STREAK)
            ],
            arb_op(),
            -2i64..20,
        )
            .prop_map(|(metric, op, value)| leaf(metric, op, value, Window::Event))
    }

    fn arb_buckets() -> impl Strategy<Value = Vec<Bucket>> {
        prop::collection::vec(
            (
                prop_oneof![Just("kills"), Just("gold"), Just(LOGIN_METRIC)],
                0u32..10,
                0u32..24,
                0i64..10,
            ),
            0..12,
        )
        .prop_map(|items| {
            items
                .into_iter()
                .map(|(metric, day, hour, value)| {
                    inc(metric, at(2026, 12, 1 + day, hour, 0), value.max(1))
                })
                .collect()
        })
    }

    proptest! {
        #[test]
        fn all_or_any_of_one_leaf_equals_the_leaf(leaf in arb_leaf(), buckets in arb_buckets()) {
            let window = span(at(2026, 12, 2, 6, 0), at(2026, 12, 8, 18, 0));
            let alone = evaluate(Some(&leaf), &buckets, window);
            let all = evaluate(Some(&Condition::All(vec![leaf.clone()])), &buckets, window);
            let any = evaluate(Some(&Condition::Any(vec![leaf.clone()])), &buckets, window);
            prop_assert_eq!(&alone, &all);
            prop_assert_eq!(&alone, &any);
        }

        #[test]
        fn all_is_and_any_is_or(a in arb_leaf(), b in arb_leaf(), buckets in arb_buckets()) {
            let window = span(at(2026, 12, 1, 0, 0), at(2026, 12, 11, 0, 0));
            let pa = evaluate(Some(&a), &buckets, window).passed;
            let pb = evaluate(Some(&b), &buckets, window).passed;
            prop_assert_eq!(evaluate(Some(&Condition::All(vec![a.clone(), b.clone()])), &buckets, window).passed, pa && pb);
            prop_assert_eq!(evaluate(Some(&Condition::Any(vec![a, b])), &buckets, window).passed, pa || pb);
        }

        #[test]
        fn ne_is_the_negation_of_eq(value in -5i64..30, buckets in arb_buckets()) {
            let window = span(at(2026, 12, 1, 0, 0), at(2026, 12, 11, 0, 0));
            let eq = evaluate(Some(&leaf("kills", Op::Eq, value, Window::Event)), &buckets, window).passed;
            let ne = evaluate(Some(&leaf("kills", Op::Ne, value, Window::Event)), &buckets, window).passed;
            prop_assert_eq!(eq, !ne);
        }

        #[test]
        fn streak_never_exceeds_days(buckets in arb_buckets()) {
            let window = span(at(2026, 12, 1, 0, 0), at(2026, 12, 11, 0, 0));
            let days = evaluate(Some(&leaf(LOGIN_DAYS, Op::Gte, 0, Window::Event)), &buckets, window).details[0].actual;
            let streak = evaluate(Some(&leaf(LOGIN_STREAK, Op::Gte, 0, Window::Event)), &buckets, window).details[0].actual;
            prop_assert!(streak <= days);
            prop_assert_eq!(streak == 0, days == 0);
        }

        #[test]
        fn event_window_never_exceeds_lifetime(buckets in arb_buckets()) {
            let window = span(at(2026, 12, 3, 7, 30), at(2026, 12, 6, 13, 15));
            let event = evaluate(Some(&leaf("kills", Op::Gte, 0, Window::Event)), &buckets, window).details[0].actual;
            let lifetime = evaluate(Some(&leaf("kills", Op::Gte, 0, Window::Lifetime)), &buckets, window).details[0].actual;
            prop_assert!(event <= lifetime);
        }
    }
}

/// The condition in the public API's JSON shape: a leaf `{"metric","op","value","window"}` or a
/// group `{"all": [...]}` / `{"any": [...]}`.
pub(crate) mod json {
    use serde_json::{Value, json};

    use super::{Condition, Leaf, Op, Window};

    pub(crate) fn op_from_str(s: &str) -> Option<Op> {
        Some(match s {
            "GTE" => Op::Gte,
            "GT" => Op::Gt,
            "EQ" => Op::Eq,
            "NE" => Op::Ne,
            "LTE" => Op::Lte,
            "LT" => Op::Lt,
            _ => return None,
        })
    }

    pub(crate) fn to_json(condition: &Condition) -> Value {
        match condition {
            Condition::All(children) => {
                json!({ "all": children.iter().map(to_json).collect::<Vec<_>>() })
            }
            Condition::Any(children) => {
                json!({ "any": children.iter().map(to_json).collect::<Vec<_>>() })
            }
            Condition::Leaf(leaf) => json!({
                "metric": leaf.metric,
                "op": leaf.op.as_str(),
                "value": leaf.value,
                "window": match leaf.window { Window::Event => "EVENT", Window::Lifetime => "LIFETIME" },
            }),
        }
    }

    /// Reads a stored condition back; `None` if it is not one this version understands.
    pub(crate) fn from_json(value: &Value) -> Option<Condition> {
        if let Some(children) = value.get("all") {
            return Some(Condition::All(
                children
                    .as_array()?
                    .iter()
                    .map(from_json)
                    .collect::<Option<_>>()?,
            ));
        }
        if let Some(children) = value.get("any") {
            return Some(Condition::Any(
                children
                    .as_array()?
                    .iter()
                    .map(from_json)
                    .collect::<Option<_>>()?,
            ));
        }
        Some(Condition::Leaf(Leaf {
            metric: value.get("metric")?.as_str()?.to_owned(),
            op: op_from_str(value.get("op")?.as_str()?)?,
            value: value.get("value")?.as_i64()?,
            window: match value.get("window").and_then(Value::as_str) {
                None | Some("EVENT") => Window::Event,
                Some("LIFETIME") => Window::Lifetime,
                Some(_) => return None,
            },
        }))
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn round_trips() {
            let tree = Condition::All(vec![
                Condition::Leaf(Leaf {
                    metric: "login_days".into(),
                    op: Op::Gte,
                    value: 3,
                    window: Window::Event,
                }),
                Condition::Any(vec![Condition::Leaf(Leaf {
                    metric: "kills".into(),
                    op: Op::Ne,
                    value: 0,
                    window: Window::Lifetime,
                })]),
            ]);
            assert_eq!(from_json(&to_json(&tree)), Some(tree));
            assert_eq!(
                from_json(&json!({"metric": "kills", "op": "GT", "value": 1})),
                Some(Condition::Leaf(Leaf {
                    metric: "kills".into(),
                    op: Op::Gt,
                    value: 1,
                    window: Window::Event
                }))
            );
            assert_eq!(
                from_json(&json!({"metric": "kills", "op": "ABOUT", "value": 1})),
                None
            );
        }
    }
}
