//! Service accounts in MongoDB (`service_accounts`), apart from the users: they are not people,
//! so no user query (listing, login, `FindActiveUsers`) can ever meet one. Every change is written
//! in one transaction with its audit record. Only a digest of the secret is stored.

use chrono::{DateTime, Utc};
use erp_platform::audit::AuditLog;
use erp_platform::mongo::{find_page, from_bson_time, to_bson_time};
use erp_platform::pagination::Cursor;
use mongodb::bson::{DateTime as BsonDateTime, doc};
use mongodb::options::{IndexOptions, ReturnDocument};
use mongodb::{ClientSession, Collection, Database, IndexModel};
use serde::{Deserialize, Serialize};

use crate::error::AuthError;
use crate::model::{AuditEntry, Page, ServiceAccount, StoredSecret, StoredServiceAccount};

#[derive(Debug, Clone, Serialize, Deserialize)]
struct ServiceAccountDoc {
    #[serde(rename = "_id")]
    id: String,
    name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    description: Option<String>,
    /// Unique: the key client authentication looks the account up by.
    client_id: String,
    secret_id: String,
    secret_sha256: String,
    created_at: BsonDateTime,
    updated_at: BsonDateTime,
}

impl ServiceAccountDoc {
    fn from_stored(stored: &StoredServiceAccount, now: DateTime<Utc>) -> Self {
        let account = &stored.account;
        Self {
            id: account.id.clone(),
            name: account.name.clone(),
            description: account.description.clone(),
            client_id: account.client_id.clone(),
            secret_id: stored.secret.id.clone(),
            secret_sha256: stored.secret.sha256.clone(),
            created_at: to_bson_time(account.created_at),
            updated_at: to_bson_time(now),
        }
    }

    fn into_stored(self) -> StoredServiceAccount {
        StoredServiceAccount {
            account: ServiceAccount {
                id: self.id,
                name: self.name,
                description: self.description,
                client_id: self.client_id,
                created_at: from_bson_time(self.created_at),
            },
            secret: StoredSecret {
                id: self.secret_id,
                sha256: self.secret_sha256,
            },
        }
    }
}

#[derive(Clone)]
pub struct ServiceAccountStore {
    database: Database,
    accounts: Collection<ServiceAccountDoc>,
    audit: AuditLog,
}

impl ServiceAccountStore {
    pub fn new(database: &Database) -> Self {
        Self {
            database: database.clone(),
            accounts: database.collection("service_accounts"),
            audit: AuditLog::new(database),
        }
    }

    /// The unique client id and the newest-first listing. Idempotent.
    pub async fn ensure_indexes(&self) -> Result<(), AuthError> {
        self.accounts
            .create_indexes([
                IndexModel::builder()
                    .keys(doc! { "client_id": 1 })
                    .options(IndexOptions::builder().unique(true).build())
                    .build(),
                IndexModel::builder()
                    .keys(doc! { "created_at": -1, "_id": -1 })
                    .build(),
            ])
            .await?;
        Ok(())
    }

    async fn session(&self) -> Result<ClientSession, AuthError> {
        Ok(self.database.client().start_session().await?)
    }

    /// Inserts an account and its `SERVICE_ACCOUNT_CREATED` record in one transaction.
    pub async fn insert(
        &self,
        stored: &StoredServiceAccount,
        audit: &AuditEntry,
    ) -> Result<(), AuthError> {
        let account_doc = ServiceAccountDoc::from_stored(stored, stored.account.created_at);
        let mut session = self.session().await?;
        session
            .start_transaction()
            .and_run(
                (&self.accounts, &self.audit, &account_doc, audit),
                |session, (accounts, audit_log, account_doc, audit)| {
                    Box::pin(async move {
                        accounts
                            .insert_one(*account_doc)
                            .session(&mut *session)
                            .await?;
                        audit_log.record(audit, session).await?;
                        Ok(())
                    })
                },
            )
            .await?;
        Ok(())
    }

    pub async fn list(
        &self,
        limit: u32,
        cursor: Option<&Cursor>,
    ) -> Result<Page<ServiceAccount>, AuthError> {
        Ok(find_page(
            &self.accounts,
            Vec::new(),
            "created_at",
            cursor,
            limit,
            |d| (d.created_at, d.id.clone()),
            |d| d.into_stored().account,
        )
        .await?)
    }

    /// The account authenticating with `client_id`, with its secret's digest.
    pub async fn find_by_client_id(
        &self,
        client_id: &str,
    ) -> Result<Option<StoredServiceAccount>, AuthError> {
        Ok(self
            .accounts
            .find_one(doc! { "client_id": client_id })
            .await?
            .map(ServiceAccountDoc::into_stored))
    }

    /// The account with id `id`, with its secret's digest.
    pub async fn find_by_id(&self, id: &str) -> Result<Option<StoredServiceAccount>, AuthError> {
        Ok(self
            .accounts
            .find_one(doc! { "_id": id })
            .await?
            .map(ServiceAccountDoc::into_stored))
    }

    /// Replaces the account's secret and writes `make_audit(account)` in one transaction; returns
    /// the account. The old secret stops matching with this write.
    pub async fn replace_secret(
        &self,
        id: &str,
        secret: &StoredSecret,
        now: DateTime<Utc>,
        make_audit: impl Fn(&ServiceAccount) -> AuditEntry + Send + Sync,
    ) -> Result<ServiceAccount, AuthError> {
        let update = doc! { "$set": {
            "secret_id": &secret.id,
            "secret_sha256": &secret.sha256,
            "updated_at": to_bson_time(now),
        } };
        let mut session = self.session().await?;
        let outcome = session
            .start_transaction()
            .and_run(
                (&self.accounts, &self.audit, &update, &make_audit),
                |session, (accounts, audit, update, make_audit)| {
                    Box::pin(async move {
                        let Some(after) = accounts
                            .find_one_and_update(doc! { "_id": id }, (*update).clone())
                            .return_document(ReturnDocument::After)
                            .session(&mut *session)
                            .await?
                        else {
                            return Ok(None);
                        };
                        let account = after.into_stored().account;
                        audit.record(&make_audit(&account), session).await?;
                        Ok(Some(account))
                    })
                },
            )
            .await?;
        outcome.ok_or(AuthError::ServiceAccountNotFound)
    }

    /// Deletes the account (for good: its client id and secret stop working with this write) and
    /// writes `make_audit(deleted)` in one transaction; returns the deleted account.
    pub async fn delete(
        &self,
        id: &str,
        make_audit: impl Fn(&ServiceAccount) -> AuditEntry + Send + Sync,
    ) -> Result<ServiceAccount, AuthError> {
        let mut session = self.session().await?;
        let outcome = session
            .start_transaction()
            .and_run(
                (&self.accounts, &self.audit, &make_audit),
                |session, (accounts, audit, make_audit)| {
                    Box::pin(async move {
                        let Some(deleted) = accounts
                            .find_one_and_delete(doc! { "_id": id })
                            .session(&mut *session)
                            .await?
                        else {
                            return Ok(None);
                        };
                        let account = deleted.into_stored().account;
                        audit.record(&make_audit(&account), session).await?;
                        Ok(Some(account))
                    })
                },
            )
            .await?;
        outcome.ok_or(AuthError::ServiceAccountNotFound)
    }
}
