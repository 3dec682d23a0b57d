//! The JSON shapes of `/users` (and of the account in `/auth/*` answers).

use chrono::{DateTime, Utc};
use erp_platform::identity::Role;
use erp_proto::auth::v1 as pb;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::api::fields::double_option;
use crate::api::time::time;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub(crate) enum RoleName {
    User,
    Operator,
    Auditor,
    Admin,
}

impl From<RoleName> for Role {
    fn from(role: RoleName) -> Self {
        match role {
            RoleName::User => Role::User,
            RoleName::Operator => Role::Operator,
            RoleName::Auditor => Role::Auditor,
            RoleName::Admin => Role::Admin,
        }
    }
}

impl RoleName {
    /// The person's role of `role`; `None` for `GAME_SERVER`, which no person holds (so it is
    /// also not a value `POST/PATCH /users` accept: serde refuses it as an unknown variant).
    fn of(role: Role) -> Option<Self> {
        match role {
            Role::User => Some(RoleName::User),
            Role::Operator => Some(RoleName::Operator),
            Role::Auditor => Some(RoleName::Auditor),
            Role::Admin => Some(RoleName::Admin),
            Role::GameServer => None,
        }
    }

    pub(crate) fn to_pb(self) -> i32 {
        Role::from(self).to_pb()
    }

    pub(crate) fn from_pb(value: i32) -> Option<Self> {
        Role::from_pb(value).and_then(RoleName::of)
    }
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct User {
    pub id: String,
    pub email: String,
    pub username: Option<String>,
    pub roles: Vec<RoleName>,
    pub disabled: bool,
    pub created_at: Option<DateTime<Utc>>,
    pub updated_at: Option<DateTime<Utc>>,
}

impl User {
    /// What a token answer says when auth sent no account with it.
    pub(crate) fn unknown() -> Self {
        Self {
            id: String::new(),
            email: String::new(),
            username: None,
            roles: Vec::new(),
            disabled: false,
            created_at: None,
            updated_at: None,
        }
    }
}

impl From<pb::User> for User {
    fn from(user: pb::User) -> Self {
        Self {
            id: user.id,
            email: user.email,
            username: user.username,
            roles: user
                .roles
                .into_iter()
                .filter_map(RoleName::from_pb)
                .collect(),
            disabled: user.disabled,
            created_at: time(user.created_at),
            updated_at: time(user.updated_at),
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(super) struct CreateUserBody {
    pub email: String,
    pub password: String,
    pub roles: Vec<RoleName>,
    #[serde(default)]
    pub username: Option<String>,
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(super) struct UpdateUserBody {
    #[serde(default)]
    pub roles: Option<Vec<RoleName>>,
    #[serde(default)]
    pub disabled: Option<bool>,
    #[serde(default)]
    pub password: Option<String>,
    /// `null` clears it.
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<String>)]
    pub username: Option<Option<String>>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
pub(super) struct UserQuery {
    pub role: Option<RoleName>,
    pub q: Option<String>,
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<u32>,
    pub cursor: Option<String>,
}
