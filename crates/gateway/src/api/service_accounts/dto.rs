//! The JSON shapes of `/service-accounts`.

use chrono::{DateTime, Utc};
use erp_proto::auth::v1 as pb;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::api::time::time;

/// A game server's account as listed: never its secret.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(super) struct ServiceAccount {
    pub id: String,
    pub name: String,
    pub description: Option<String>,
    /// The OAuth `client_id` of `POST /auth/token`.
    pub client_id: String,
    pub created_at: Option<DateTime<Utc>>,
}

impl From<pb::ServiceAccount> for ServiceAccount {
    fn from(account: pb::ServiceAccount) -> Self {
        Self {
            id: account.id,
            name: account.name,
            description: account.description,
            client_id: account.client_id,
            created_at: time(account.created_at),
        }
    }
}

/// The answer of create and rotate-secret: the only time the secret is shown.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(super) struct ServiceAccountCredentials {
    pub id: String,
    pub name: String,
    pub description: Option<String>,
    pub client_id: String,
    /// Shown only in this answer; stored hashed.
    pub client_secret: String,
    pub created_at: Option<DateTime<Utc>>,
}

impl From<pb::ServiceAccountCredentials> for ServiceAccountCredentials {
    fn from(credentials: pb::ServiceAccountCredentials) -> Self {
        let account = ServiceAccount::from(credentials.service_account.unwrap_or_default());
        Self {
            id: account.id,
            name: account.name,
            description: account.description,
            client_id: account.client_id,
            client_secret: credentials.client_secret,
            created_at: account.created_at,
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(super) struct CreateServiceAccountBody {
    /// 1..100 characters.
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
pub(super) struct ServiceAccountsQuery {
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<u32>,
    pub cursor: Option<String>,
}
