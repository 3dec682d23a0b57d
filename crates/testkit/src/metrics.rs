//! Reading a service's Prometheus metrics in tests.

use std::net::SocketAddr;

/// The text exposition `/metrics` of the admin server at `admin` answers.
pub async fn scrape(admin: SocketAddr) -> String {
    reqwest::get(format!("http://{admin}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// The value of `series` (the name with its labels, as exposed, e.g.
/// `erp_dependency_up{dependency="event"}`) in `text`; `None` when it is not there.
pub fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .map(|value| value.trim().parse().unwrap())
}
