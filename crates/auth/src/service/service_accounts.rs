//! Service accounts: game servers' credentials (admin-managed), and the client-credentials
//! grant that turns them into access tokens. The secret is generated here, shown once and kept
//! only as a digest ([`crate::client_secret`]); tokens carry the id of the secret they were issued
//! from, so a rotation or deletion ends them (see introspection in the parent module).

use std::net::IpAddr;
use std::time::Duration;

use chrono::{SubsecRound, Utc};
use erp_platform::error::FieldError;
use serde_json::json;

use super::{AuthService, lockout_address, paging};
use crate::access::{Granted, ManageServiceAccounts};
use crate::client_secret;
use crate::error::AuthError;
use crate::model::{
    AuditEntry, ClientToken, Page, Role, ServiceAccount, ServiceAccountCredentials,
    StoredServiceAccount,
};
use crate::store::{LockoutSubject, LoginAttempt, Revocation};

pub const MAX_NAME_CHARS: usize = 100;
pub const MAX_DESCRIPTION_CHARS: usize = 1000;

/// A new service account's fields, as the admin sent them.
#[derive(Debug, Clone)]
pub struct NewServiceAccount {
    pub name: String,
    pub description: Option<String>,
}

impl NewServiceAccount {
    /// The name trimmed and the description (an empty one: none), or every field error.
    fn validated(self) -> Result<(String, Option<String>), AuthError> {
        let mut errors = Vec::new();
        let name = self.name.trim().to_owned();
        let name_chars = name.chars().count();
        if name_chars == 0 || name_chars > MAX_NAME_CHARS {
            errors.push(FieldError::new(
                "name",
                format!("must be 1 to {MAX_NAME_CHARS} characters"),
            ));
        } else if name.chars().any(char::is_control) {
            errors.push(FieldError::new(
                "name",
                "must not contain control characters",
            ));
        }
        let description = self.description.filter(|d| !d.is_empty());
        if let Some(description) = &description
            && description.chars().count() > MAX_DESCRIPTION_CHARS
        {
            errors.push(FieldError::new(
                "description",
                format!("must be at most {MAX_DESCRIPTION_CHARS} characters"),
            ));
        }
        if errors.is_empty() {
            Ok((name, description))
        } else {
            Err(AuthError::Validation(errors))
        }
    }
}

/// What the audit trail records of a service account: never its secret or digest.
fn audit_view(account: &ServiceAccount) -> serde_json::Value {
    json!({
        "name": account.name,
        "description": account.description,
        "clientId": account.client_id,
    })
}

fn audit_entry(
    actor_id: &str,
    action: &str,
    account_id: &str,
    before: Option<serde_json::Value>,
    after: Option<serde_json::Value>,
) -> AuditEntry {
    AuditEntry::new(
        actor_id,
        action,
        "service_account",
        account_id,
        before,
        after,
    )
}

impl AuthService {
    pub async fn create_service_account(
        &self,
        admin: &Granted<ManageServiceAccounts>,
        new: NewServiceAccount,
    ) -> Result<ServiceAccountCredentials, AuthError> {
        let (name, description) = new.validated()?;
        let (client_secret, secret) = client_secret::new_secret();
        let account = ServiceAccount {
            id: uuid::Uuid::now_v7().to_string(),
            name,
            description,
            client_id: client_secret::new_client_id(),
            // At the store's precision, so this answer and later listings agree.
            created_at: Utc::now().trunc_subsecs(3),
        };
        let audit = audit_entry(
            &admin.caller().user_id,
            "SERVICE_ACCOUNT_CREATED",
            &account.id,
            None,
            Some(audit_view(&account)),
        );
        let stored = StoredServiceAccount { account, secret };
        self.store
            .service_accounts()
            .insert(&stored, &audit)
            .await?;
        Ok(ServiceAccountCredentials {
            account: stored.account,
            client_secret,
        })
    }

    pub async fn list_service_accounts(
        &self,
        _admin: &Granted<ManageServiceAccounts>,
        limit: u32,
        cursor: &str,
    ) -> Result<Page<ServiceAccount>, AuthError> {
        let (limit, cursor) = paging(limit, cursor)?;
        self.store
            .service_accounts()
            .list(limit, cursor.as_ref())
            .await
    }

    /// Deletes the account: its secret fails at once; its tokens stop working here at once and
    /// everywhere once the revocation is received.
    pub async fn delete_service_account(
        &self,
        admin: &Granted<ManageServiceAccounts>,
        id: &str,
    ) -> Result<(), AuthError> {
        let actor = admin.caller().user_id.clone();
        self.store
            .service_accounts()
            .delete(id, |account| {
                audit_entry(
                    &actor,
                    "SERVICE_ACCOUNT_DELETED",
                    id,
                    Some(audit_view(account)),
                    None,
                )
            })
            .await?;
        self.tokens_of_account_ended(id).await
    }

    /// A new secret for the account (same client id); the old secret fails at once and tokens
    /// issued from it end as on delete.
    pub async fn rotate_service_account_secret(
        &self,
        admin: &Granted<ManageServiceAccounts>,
        id: &str,
    ) -> Result<ServiceAccountCredentials, AuthError> {
        let actor = admin.caller().user_id.clone();
        let (client_secret, secret) = client_secret::new_secret();
        let account = self
            .store
            .service_accounts()
            .replace_secret(id, &secret, Utc::now(), |account| {
                let view = audit_view(account);
                let mut after = view.clone();
                after["secretRotated"] = json!(true);
                audit_entry(
                    &actor,
                    "SERVICE_ACCOUNT_SECRET_ROTATED",
                    id,
                    Some(view),
                    Some(after),
                )
            })
            .await?;
        self.tokens_of_account_ended(id).await?;
        Ok(ServiceAccountCredentials {
            account,
            client_secret,
        })
    }

    /// Forgets the account here and tells every auth replica and gateway (the revocation of a
    /// user, by the id its tokens carry as subject).
    async fn tokens_of_account_ended(&self, id: &str) -> Result<(), AuthError> {
        self.forget_user(id).await;
        self.sessions
            .publish(&Revocation::User {
                user_id: id.to_owned(),
            })
            .await
    }

    /// The client-credentials grant: an access token for the service account `client_id`
    /// authenticates as. Failures count towards a lockout exactly like failed logins, per client
    /// id and client address (`client_ip` as the calling service asserted it), with the same
    /// limits.
    pub async fn issue_client_token(
        &self,
        client_id: &str,
        client_secret: &str,
        client_ip: Option<IpAddr>,
    ) -> Result<ClientToken, AuthError> {
        if client_id.is_empty() || client_secret.is_empty() {
            // Nothing to authenticate, nobody to lock out.
            self.client_token_result("invalid_client");
            return Err(AuthError::InvalidClient);
        }
        let address = lockout_address(client_ip);
        let subject = LockoutSubject::Client(client_id);
        // Counted before the secret is compared, as a login is (see `login`).
        if let LoginAttempt::Refused { retry_after } = self
            .sessions
            .reserve_login_attempt(subject, &address, &self.lockout)
            .await?
        {
            self.client_token_result("locked_out");
            return Err(AuthError::TooManyAttempts {
                retry_after: retry_after.max(Duration::from_secs(1)),
            });
        }
        let found = match self
            .store
            .service_accounts()
            .find_by_client_id(client_id)
            .await
        {
            Ok(found) => found,
            Err(error) => {
                // Nothing was verified: the attempt does not count.
                if let Err(release) = self.sessions.release_login_attempt(subject, &address).await {
                    tracing::warn!(error = %release, "client attempt not released");
                }
                return Err(error);
            }
        };
        let Some(stored) =
            found.filter(|stored| client_secret::matches(client_secret, &stored.secret))
        else {
            // The reserved attempt stays counted: it is the failure.
            self.client_token_result("invalid_client");
            return Err(AuthError::InvalidClient);
        };
        self.sessions.login_succeeded(subject, &address).await?;
        let (access_token, _) = self.tokens.issue(
            &stored.account.id,
            &[Role::GameServer],
            &stored.secret.id,
            Utc::now(),
        )?;
        self.metrics.tokens_issued.inc();
        self.client_token_result("success");
        Ok(ClientToken {
            access_token,
            expires_in: self.tokens.ttl(),
        })
    }

    fn client_token_result(&self, result: &str) {
        self.metrics
            .client_tokens
            .with_label_values(&[result])
            .inc();
    }

    /// The id of the service account's current secret (`None`: no such account), from the
    /// introspection cache or the store.
    pub(super) async fn current_secret_id(&self, id: &str) -> Result<Option<String>, AuthError> {
        self.cached(&self.service_account_secrets, id, async {
            Ok(self
                .store
                .service_accounts()
                .find_by_id(id)
                .await?
                .map(|stored| stored.secret.id))
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn new(name: &str, description: Option<&str>) -> NewServiceAccount {
        NewServiceAccount {
            name: name.to_owned(),
            description: description.map(str::to_owned),
        }
    }

    fn fields(error: AuthError) -> Vec<String> {
        match error {
            AuthError::Validation(fields) => fields.into_iter().map(|f| f.field).collect(),
            other => panic!("not a validation error: {other}"),
        }
    }

    #[test]
    fn names_and_descriptions_are_checked() {
        assert_eq!(
            new("  game-eu-1 ", Some("")).validated().unwrap(),
            ("game-eu-1".to_owned(), None)
        );
        assert!(
            new(&"n".repeat(100), Some(&"d".repeat(1000)))
                .validated()
                .is_ok()
        );
        assert_eq!(fields(new("", None).validated().unwrap_err()), ["name"]);
        assert_eq!(fields(new("   ", None).validated().unwrap_err()), ["name"]);
        assert_eq!(
            fields(new(&"n".repeat(101), None).validated().unwrap_err()),
            ["name"]
        );
        assert_eq!(
            fields(new("a\u{7}b", None).validated().unwrap_err()),
            ["name"]
        );
        assert_eq!(
            fields(new("", Some(&"d".repeat(1001))).validated().unwrap_err()),
            ["name", "description"]
        );
    }

    #[test]
    fn the_audit_view_holds_no_secret() {
        let account = ServiceAccount {
            id: "a1".into(),
            name: "game".into(),
            description: None,
            client_id: "sa_x".into(),
            created_at: Utc::now(),
        };
        let view = audit_view(&account).to_string();
        assert!(!view.contains("secret"), "{view}");
        assert!(view.contains("sa_x"), "{view}");
    }
}
