//! Users, the audit trail and the login outbox in MongoDB. Every change to a user is written in
//! one transaction with its audit record.

use std::time::Duration;

use chrono::{DateTime, Utc};
use erp_platform::audit::AuditLog;
use erp_platform::mongo::{
    find_page, from_bson_time, is_duplicate_key, regex_escape, to_bson_time,
};
use erp_platform::pagination::Cursor;
use futures::TryStreamExt;
use mongodb::bson::{Bson, DateTime as BsonDateTime, Document, doc};
use mongodb::options::{IndexOptions, ReturnDocument};
use mongodb::{ClientSession, Collection, Database, IndexModel};
use serde::{Deserialize, Serialize};

use crate::error::AuthError;
use crate::model::{AuditEntry, AuditFilter, Page, Role, StoredUser, User, UserFilter, UserPatch};
use crate::store::service_accounts::ServiceAccountStore;

#[derive(Debug, Clone, Serialize, Deserialize)]
struct UserDoc {
    #[serde(rename = "_id")]
    id: String,
    email: String,
    /// Lower-cased email under a unique index: uniqueness ignoring case without check-then-insert.
    email_normalized: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    username: Option<String>,
    roles: Vec<String>,
    disabled: bool,
    password_hash: String,
    created_at: BsonDateTime,
    updated_at: BsonDateTime,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    last_login_at: Option<BsonDateTime>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct OutboxDoc {
    #[serde(rename = "_id")]
    id: String,
    kind: String,
    user_id: String,
    occurred_at: BsonDateTime,
    attempts: u32,
    next_attempt_at: BsonDateTime,
    #[serde(default)]
    delivered_at: Option<BsonDateTime>,
}

/// A one-time fact of the deployment, e.g. that the bootstrap admin was created.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct MarkerDoc {
    #[serde(rename = "_id")]
    id: String,
    at: BsonDateTime,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    user_id: Option<String>,
}

/// The marker recorded once a bootstrap admin exists (or existed): from then on the bootstrap
/// settings create nothing, even if that admin is deleted.
pub const BOOTSTRAP_ADMIN_MARKER: &str = "bootstrap_admin_created";

/// A login waiting to be delivered to the event service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxItem {
    pub id: String,
    pub user_id: String,
    pub occurred_at: DateTime<Utc>,
    pub attempts: u32,
}

#[derive(Clone)]
pub struct AuthStore {
    database: Database,
    users: Collection<UserDoc>,
    audit: AuditLog,
    outbox: Collection<OutboxDoc>,
    markers: Collection<MarkerDoc>,
    service_accounts: ServiceAccountStore,
}

fn roles_to_strings(roles: &[Role]) -> Vec<String> {
    roles.iter().map(|r| r.as_str().to_owned()).collect()
}

impl UserDoc {
    fn from_stored(stored: &StoredUser) -> Self {
        let user = &stored.user;
        Self {
            id: user.id.clone(),
            email: user.email.clone(),
            email_normalized: user.email.to_lowercase(),
            username: user.username.clone(),
            roles: roles_to_strings(&user.roles),
            disabled: user.disabled,
            password_hash: stored.password_hash.clone(),
            created_at: to_bson_time(user.created_at),
            updated_at: to_bson_time(user.updated_at),
            last_login_at: None,
        }
    }

    fn into_stored(self) -> StoredUser {
        StoredUser {
            user: User {
                id: self.id,
                email: self.email,
                username: self.username,
                // A role this version does not know is ignored rather than failing every read.
                roles: self.roles.iter().filter_map(|r| r.parse().ok()).collect(),
                disabled: self.disabled,
                created_at: from_bson_time(self.created_at),
                updated_at: from_bson_time(self.updated_at),
            },
            password_hash: self.password_hash,
        }
    }
}

impl AuthStore {
    pub fn new(database: Database) -> Self {
        Self {
            users: database.collection("users"),
            audit: AuditLog::new(&database),
            outbox: database.collection("login_outbox"),
            markers: database.collection("markers"),
            service_accounts: ServiceAccountStore::new(&database),
            database,
        }
    }

    /// Creates the indexes every query relies on. Idempotent.
    pub async fn ensure_indexes(&self) -> Result<(), AuthError> {
        let unique = IndexOptions::builder().unique(true).build();
        self.users
            .create_indexes([
                IndexModel::builder()
                    .keys(doc! { "email_normalized": 1 })
                    .options(unique)
                    .build(),
                IndexModel::builder()
                    .keys(doc! { "created_at": -1, "_id": -1 })
                    .build(),
                IndexModel::builder()
                    .keys(doc! { "roles": 1, "created_at": -1, "_id": -1 })
                    .build(),
            ])
            .await?;
        self.audit.ensure_indexes().await?;
        self.service_accounts.ensure_indexes().await?;
        self.outbox
            .create_indexes([IndexModel::builder()
                .keys(doc! { "delivered_at": 1, "next_attempt_at": 1 })
                .build()])
            .await?;
        Ok(())
    }

    async fn session(&self) -> Result<ClientSession, AuthError> {
        Ok(self.database.client().start_session().await?)
    }

    /// Inserts a user and its `USER_CREATED` record in one transaction. A taken email (any case)
    /// is [`AuthError::EmailTaken`].
    pub async fn insert_user(
        &self,
        user: &StoredUser,
        audit: &AuditEntry,
    ) -> Result<(), AuthError> {
        let user_doc = UserDoc::from_stored(user);
        let mut session = self.session().await?;
        let result = session
            .start_transaction()
            .and_run(
                (&self.users, &self.audit, &user_doc, audit),
                |session, (users, audit_log, user_doc, audit)| {
                    Box::pin(async move {
                        users.insert_one(*user_doc).session(&mut *session).await?;
                        audit_log.record(audit, session).await?;
                        Ok(())
                    })
                },
            )
            .await;
        match result {
            Err(error) if is_duplicate_key(&error) => Err(AuthError::EmailTaken),
            other => other.map_err(Into::into),
        }
    }

    /// Whether the bootstrap-admin marker has been recorded.
    pub async fn bootstrap_admin_recorded(&self) -> Result<bool, AuthError> {
        Ok(self
            .markers
            .find_one(doc! { "_id": BOOTSTRAP_ADMIN_MARKER })
            .await?
            .is_some())
    }

    /// Whether any user holds the ADMIN role (disabled ones included).
    pub async fn any_admin(&self) -> Result<bool, AuthError> {
        Ok(self
            .users
            .find_one(doc! { "roles": Role::Admin.as_str() })
            .await?
            .is_some())
    }

    /// Records the bootstrap-admin marker without creating anyone (admins already exist).
    /// Idempotent.
    pub async fn record_bootstrap_admin_marker(&self) -> Result<(), AuthError> {
        let marker = MarkerDoc {
            id: BOOTSTRAP_ADMIN_MARKER.to_owned(),
            at: BsonDateTime::now(),
            user_id: None,
        };
        match self.markers.insert_one(&marker).await {
            Err(error) if is_duplicate_key(&error) => Ok(()),
            other => other.map(|_| ()).map_err(Into::into),
        }
    }

    /// Inserts the bootstrap admin, its audit record and the bootstrap-admin marker in one
    /// transaction. `Ok(false)`: nothing was written, because the marker was already recorded (by
    /// another replica) or the email is taken.
    pub async fn insert_bootstrap_admin(
        &self,
        user: &StoredUser,
        audit: &AuditEntry,
    ) -> Result<bool, AuthError> {
        let user_doc = UserDoc::from_stored(user);
        let marker = MarkerDoc {
            id: BOOTSTRAP_ADMIN_MARKER.to_owned(),
            at: BsonDateTime::now(),
            user_id: Some(user.user.id.clone()),
        };
        let mut session = self.session().await?;
        let result = session
            .start_transaction()
            .and_run(
                (
                    &self.users,
                    &self.markers,
                    &self.audit,
                    &user_doc,
                    &marker,
                    audit,
                ),
                |session, (users, markers, audit_log, user_doc, marker, audit)| {
                    Box::pin(async move {
                        markers.insert_one(*marker).session(&mut *session).await?;
                        users.insert_one(*user_doc).session(&mut *session).await?;
                        audit_log.record(audit, session).await?;
                        Ok(())
                    })
                },
            )
            .await;
        match result {
            Ok(()) => Ok(true),
            Err(error) if is_duplicate_key(&error) => Ok(false),
            Err(error) => Err(error.into()),
        }
    }

    /// The service accounts, kept apart from the users.
    pub fn service_accounts(&self) -> &ServiceAccountStore {
        &self.service_accounts
    }

    /// Which of `ids` are existing, enabled users, in one query. Ids that name nothing (malformed,
    /// deleted, a service account's) are simply not found.
    pub async fn find_active_user_ids(&self, ids: &[String]) -> Result<Vec<String>, AuthError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let found: Vec<Document> = self
            .users
            .clone_with_type::<Document>()
            .find(doc! { "_id": { "$in": ids }, "disabled": false })
            .projection(doc! { "_id": 1 })
            .await?
            .try_collect()
            .await?;
        Ok(found
            .into_iter()
            .filter_map(|user| user.get_str("_id").ok().map(str::to_owned))
            .collect())
    }

    pub async fn find_by_email(&self, email: &str) -> Result<Option<StoredUser>, AuthError> {
        Ok(self
            .users
            .find_one(doc! { "email_normalized": email.to_lowercase() })
            .await?
            .map(UserDoc::into_stored))
    }

    pub async fn find_by_id(&self, id: &str) -> Result<Option<StoredUser>, AuthError> {
        Ok(self
            .users
            .find_one(doc! { "_id": id })
            .await?
            .map(UserDoc::into_stored))
    }

    /// Applies `patch` and writes the audit record `make_audit(before, after)` in one transaction;
    /// returns the user before and after.
    pub async fn update_user(
        &self,
        id: &str,
        patch: &UserPatch,
        now: DateTime<Utc>,
        make_audit: impl Fn(&User, &User) -> AuditEntry + Send + Sync,
    ) -> Result<(User, User), AuthError> {
        let mut set = doc! { "updated_at": to_bson_time(now) };
        let mut unset = Document::new();
        if let Some(roles) = &patch.roles {
            set.insert("roles", roles_to_strings(roles));
        }
        if let Some(disabled) = patch.disabled {
            set.insert("disabled", disabled);
        }
        if let Some(hash) = &patch.password_hash {
            set.insert("password_hash", hash);
        }
        match &patch.username {
            Some(Some(username)) => {
                set.insert("username", username);
            }
            Some(None) => {
                unset.insert("username", "");
            }
            None => {}
        }
        let mut update = doc! { "$set": set };
        if !unset.is_empty() {
            update.insert("$unset", unset);
        }
        let mut session = self.session().await?;
        let outcome = session
            .start_transaction()
            .and_run(
                (&self.users, &self.audit, &update, &make_audit),
                |session, (users, audit, update, make_audit)| {
                    Box::pin(async move {
                        let Some(before) = users
                            .find_one_and_update(doc! { "_id": id }, (*update).clone())
                            .return_document(ReturnDocument::Before)
                            .session(&mut *session)
                            .await?
                        else {
                            return Ok(None);
                        };
                        let Some(after) = users
                            .find_one(doc! { "_id": id })
                            .session(&mut *session)
                            .await?
                        else {
                            return Ok(None);
                        };
                        let before = before.into_stored().user;
                        let after = after.into_stored().user;
                        audit.record(&make_audit(&before, &after), session).await?;
                        Ok(Some((before, after)))
                    })
                },
            )
            .await?;
        outcome.ok_or(AuthError::NotFound)
    }

    /// Deletes a user and writes `make_audit(deleted)` in one transaction; returns the deleted user.
    pub async fn delete_user(
        &self,
        id: &str,
        make_audit: impl Fn(&User) -> AuditEntry + Send + Sync,
    ) -> Result<User, AuthError> {
        let mut session = self.session().await?;
        let outcome = session
            .start_transaction()
            .and_run(
                (&self.users, &self.audit, &make_audit),
                |session, (users, audit, make_audit)| {
                    Box::pin(async move {
                        let Some(deleted) = users
                            .find_one_and_delete(doc! { "_id": id })
                            .session(&mut *session)
                            .await?
                        else {
                            return Ok(None);
                        };
                        let user = deleted.into_stored().user;
                        audit.record(&make_audit(&user), session).await?;
                        Ok(Some(user))
                    })
                },
            )
            .await?;
        outcome.ok_or(AuthError::NotFound)
    }

    pub async fn list_users(
        &self,
        filter: &UserFilter,
        limit: u32,
        cursor: Option<&Cursor>,
    ) -> Result<Page<User>, AuthError> {
        let mut clauses = Vec::new();
        if let Some(role) = filter.role {
            clauses.push(doc! { "roles": role.as_str() });
        }
        if let Some(q) = filter.q.as_deref().filter(|q| !q.is_empty()) {
            let pattern = regex_escape(q);
            clauses.push(doc! { "$or": [
                { "email": { "$regex": &pattern, "$options": "i" } },
                { "username": { "$regex": &pattern, "$options": "i" } },
            ]});
        }
        Ok(find_page(
            &self.users,
            clauses,
            "created_at",
            cursor,
            limit,
            |d| (d.created_at, d.id.clone()),
            |d| d.into_stored().user,
        )
        .await?)
    }

    pub async fn list_audit(
        &self,
        filter: &AuditFilter,
        limit: u32,
        cursor: Option<&Cursor>,
    ) -> Result<Page<AuditEntry>, AuthError> {
        Ok(self.audit.list(filter, limit, cursor).await?)
    }

    /// Records a successful login: the user's last login time and the outbox item that will carry
    /// it to the event service, in one transaction, so no login is lost or counted without the
    /// other.
    pub async fn record_login(&self, user_id: &str, item: &OutboxItem) -> Result<(), AuthError> {
        let doc = OutboxDoc {
            id: item.id.clone(),
            kind: "LOGIN".to_owned(),
            user_id: item.user_id.clone(),
            occurred_at: to_bson_time(item.occurred_at),
            attempts: 0,
            next_attempt_at: to_bson_time(item.occurred_at),
            delivered_at: None,
        };
        let mut session = self.session().await?;
        session
            .start_transaction()
            .and_run(
                (&self.users, &self.outbox, &doc),
                |session, (users, outbox, doc)| {
                    Box::pin(async move {
                        users
                            .update_one(
                                doc! { "_id": user_id },
                                doc! { "$set": { "last_login_at": doc.occurred_at } },
                            )
                            .session(&mut *session)
                            .await?;
                        outbox.insert_one(*doc).session(&mut *session).await?;
                        Ok(())
                    })
                },
            )
            .await?;
        Ok(())
    }

    /// Takes the next due outbox item and hides it from other relays for `lease`.
    pub async fn lease_due_outbox_item(
        &self,
        now: DateTime<Utc>,
        lease: Duration,
    ) -> Result<Option<OutboxItem>, AuthError> {
        let until = now + chrono::Duration::from_std(lease).unwrap_or_default();
        let leased = self
            .outbox
            .find_one_and_update(
                doc! { "delivered_at": Bson::Null, "next_attempt_at": { "$lte": to_bson_time(now) } },
                doc! { "$set": { "next_attempt_at": to_bson_time(until) } },
            )
            .sort(doc! { "next_attempt_at": 1 })
            .await?;
        Ok(leased.map(|d| OutboxItem {
            id: d.id,
            user_id: d.user_id,
            occurred_at: from_bson_time(d.occurred_at),
            attempts: d.attempts,
        }))
    }

    pub async fn mark_delivered(&self, id: &str, now: DateTime<Utc>) -> Result<(), AuthError> {
        self.outbox
            .update_one(
                doc! { "_id": id },
                doc! { "$set": { "delivered_at": to_bson_time(now) } },
            )
            .await?;
        Ok(())
    }

    pub async fn reschedule(
        &self,
        id: &str,
        attempts: u32,
        next_attempt_at: DateTime<Utc>,
    ) -> Result<(), AuthError> {
        self.outbox
            .update_one(
                doc! { "_id": id },
                doc! { "$set": { "attempts": attempts, "next_attempt_at": to_bson_time(next_attempt_at) } },
            )
            .await?;
        Ok(())
    }

    /// Logins not yet delivered.
    pub async fn outbox_backlog(&self) -> Result<u64, AuthError> {
        Ok(self
            .outbox
            .count_documents(doc! { "delivered_at": Bson::Null })
            .await?)
    }
}
