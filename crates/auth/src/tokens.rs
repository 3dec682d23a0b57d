//! Access tokens: short-lived EdDSA-signed JWTs. Verification accepts only the configured
//! algorithm and a known `kid`, so `alg: none` and HMAC-with-the-public-key confusion are refused
//! before any signature check.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::config::TokenConfig;
use crate::error::AuthError;
use crate::keys::KeyRing;
use crate::model::{InactiveReason, Role};

pub const ALGORITHM: Algorithm = Algorithm::EdDSA;

/// The claims of an access token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessClaims {
    pub iss: String,
    pub aud: String,
    pub sub: String,
    /// Roles when the token was issued; introspection answers the user's current roles instead.
    pub roles: Vec<String>,
    pub jti: String,
    /// The session (refresh-token family) the token was issued in.
    pub sid: String,
    pub iat: i64,
    pub exp: i64,
}

impl AccessClaims {
    pub fn expires_at(&self) -> DateTime<Utc> {
        DateTime::from_timestamp(self.exp, 0).unwrap_or_default()
    }

    /// Whether this is a service account's client-credentials token (subject: a service account,
    /// `sid`: the id of the secret it was issued from). Told by the signed roles claim: only
    /// service accounts ever hold `GAME_SERVER` (people are refused it), so no person's token
    /// carries it.
    pub fn is_client(&self) -> bool {
        self.roles.iter().any(|r| r == Role::GameServer.as_str())
    }
}

pub struct TokenIssuer {
    keys: Arc<KeyRing>,
    issuer: String,
    audience: String,
    ttl: Duration,
    validation: Validation,
}

impl TokenIssuer {
    pub fn new(keys: Arc<KeyRing>, config: &TokenConfig) -> Self {
        let mut validation = Validation::new(ALGORITHM);
        validation.set_issuer(&[&config.issuer]);
        validation.set_audience(&[&config.audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        // Auth both issues and verifies, so there is no clock skew to forgive.
        validation.leeway = 0;
        Self {
            keys,
            issuer: config.issuer.clone(),
            audience: config.audience.clone(),
            ttl: config.access_ttl,
            validation,
        }
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    pub fn keys(&self) -> &KeyRing {
        &self.keys
    }

    /// Signs a new access token for `user_id` in session `sid`.
    pub fn issue(
        &self,
        user_id: &str,
        roles: &[Role],
        sid: &str,
        now: DateTime<Utc>,
    ) -> Result<(String, AccessClaims), AuthError> {
        let claims = AccessClaims {
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
            sub: user_id.to_owned(),
            roles: roles.iter().map(|r| r.as_str().to_owned()).collect(),
            jti: uuid::Uuid::now_v7().to_string(),
            sid: sid.to_owned(),
            iat: now.timestamp(),
            exp: now.timestamp() + i64::try_from(self.ttl.as_secs()).unwrap_or(i64::MAX / 2),
        };
        let mut header = Header::new(ALGORITHM);
        header.kid = Some(self.keys.current_kid().to_owned());
        let token = jsonwebtoken::encode(&header, &claims, self.keys.encoding_key())
            .map_err(AuthError::internal("sign token"))?;
        Ok((token, claims))
    }

    /// Checks the token's header, signature and claims (not revocation: see the service).
    pub fn verify(&self, token: &str) -> Result<AccessClaims, InactiveReason> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| InactiveReason::Malformed)?;
        if header.alg != ALGORITHM {
            return Err(InactiveReason::BadSignature);
        }
        let key = header
            .kid
            .as_deref()
            .and_then(|kid| self.keys.decoding_key(kid))
            .ok_or(InactiveReason::BadSignature)?;
        jsonwebtoken::decode::<AccessClaims>(token, key, &self.validation)
            .map(|data| data.claims)
            .map_err(|error| match error.kind() {
                ErrorKind::ExpiredSignature => InactiveReason::Expired,
                ErrorKind::InvalidSignature
                | ErrorKind::InvalidAlgorithm
                | ErrorKind::InvalidAlgorithmName
                | ErrorKind::InvalidKeyFormat => InactiveReason::BadSignature,
                ErrorKind::InvalidIssuer
                | ErrorKind::InvalidAudience
                | ErrorKind::InvalidSubject
                | ErrorKind::ImmatureSignature
                | ErrorKind::MissingRequiredClaim(_) => InactiveReason::InvalidClaims,
                _ => InactiveReason::Malformed,
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;

    fn config(ttl: Duration) -> TokenConfig {
        TokenConfig {
            private_key_file: None,
            previous_public_key_files: Vec::new(),
            next_public_key_files: Vec::new(),
            issuer: "erp-auth".into(),
            audience: "erp".into(),
            access_ttl: ttl,
            refresh_ttl: Duration::from_secs(3600),
        }
    }

    fn issuer() -> TokenIssuer {
        TokenIssuer::new(
            Arc::new(KeyRing::generate().unwrap()),
            &config(Duration::from_secs(900)),
        )
    }

    fn b64(value: &serde_json::Value) -> String {
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(value).unwrap())
    }

    #[test]
    fn issued_tokens_verify_with_every_claim() {
        let issuer = issuer();
        let now = Utc::now();
        let (token, claims) = issuer
            .issue("u1", &[Role::User, Role::Admin], "s1", now)
            .unwrap();
        let verified = issuer.verify(&token).unwrap();
        assert_eq!(verified, claims);
        assert_eq!(verified.sub, "u1");
        assert_eq!(verified.roles, ["USER", "ADMIN"]);
        assert_eq!(verified.exp - verified.iat, 900);
        let header = jsonwebtoken::decode_header(&token).unwrap();
        assert_eq!(header.alg, Algorithm::EdDSA);
        assert_eq!(header.kid.as_deref(), Some(issuer.keys().current_kid()));
    }

    #[test]
    fn only_game_server_tokens_are_client_tokens() {
        let issuer = issuer();
        let (_, person) = issuer
            .issue("u1", &[Role::User, Role::Admin], "s1", Utc::now())
            .unwrap();
        assert!(!person.is_client());
        let (token, client) = issuer
            .issue("sa1", &[Role::GameServer], "secret1", Utc::now())
            .unwrap();
        assert!(client.is_client());
        assert_eq!(issuer.verify(&token).unwrap().roles, ["GAME_SERVER"]);
    }

    #[test]
    fn tampered_payload_fails_the_signature() {
        let issuer = issuer();
        let (token, _) = issuer.issue("u1", &[Role::User], "s1", Utc::now()).unwrap();
        let parts: Vec<&str> = token.split('.').collect();
        let mut payload: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
        payload["roles"] = serde_json::json!(["ADMIN"]);
        let forged = format!("{}.{}.{}", parts[0], b64(&payload), parts[2]);
        assert_eq!(issuer.verify(&forged), Err(InactiveReason::BadSignature));
    }

    #[test]
    fn another_key_fails_the_signature() {
        let issuer_a = issuer();
        let issuer_b = issuer();
        let (token, _) = issuer_b
            .issue("u1", &[Role::User], "s1", Utc::now())
            .unwrap();
        assert_eq!(issuer_a.verify(&token), Err(InactiveReason::BadSignature));
    }

    #[test]
    fn a_next_key_verifies_on_every_replica_before_any_signs_with_it() {
        let k1 = ed25519_dalek::SigningKey::generate(&mut rand::rngs::OsRng);
        let k2 = ed25519_dalek::SigningKey::generate(&mut rand::rngs::OsRng);
        let config = config(Duration::from_secs(900));
        // Mid-rollout: replica A still signs with K1 and already knows K2 as next; replica B
        // signs with K2 and keeps K1 as previous.
        let a = TokenIssuer::new(
            Arc::new(KeyRing::with_next(&k1, &[], &[k2.verifying_key()]).unwrap()),
            &config,
        );
        let b = TokenIssuer::new(
            Arc::new(KeyRing::new(&k2, &[k1.verifying_key()]).unwrap()),
            &config,
        );
        let (from_a, _) = a.issue("u1", &[Role::User], "s1", Utc::now()).unwrap();
        let (from_b, _) = b.issue("u2", &[Role::User], "s2", Utc::now()).unwrap();
        for replica in [&a, &b] {
            assert_eq!(replica.verify(&from_a).unwrap().sub, "u1");
            assert_eq!(replica.verify(&from_b).unwrap().sub, "u2");
        }
        // A signs with K1 (the next key is never used to sign) and publishes both keys.
        let kid_a = jsonwebtoken::decode_header(&from_a).unwrap().kid.unwrap();
        assert_eq!(kid_a, a.keys().current_kid());
        let published: Vec<&str> = a
            .keys()
            .public_keys()
            .iter()
            .map(|k| k.kid.as_str())
            .collect();
        assert_eq!(published.len(), 2);
        assert_eq!(published[0], a.keys().current_kid());
        assert_eq!(published[1], b.keys().current_kid());
    }

    #[test]
    fn alg_none_is_refused() {
        let issuer = issuer();
        let (token, claims) = issuer.issue("u1", &[Role::User], "s1", Utc::now()).unwrap();
        let kid = jsonwebtoken::decode_header(&token).unwrap().kid.unwrap();
        let header = serde_json::json!({"alg": "none", "typ": "JWT", "kid": kid});
        let unsigned = format!(
            "{}.{}.",
            b64(&header),
            b64(&serde_json::to_value(&claims).unwrap())
        );
        assert!(issuer.verify(&unsigned).is_err());
    }

    #[test]
    fn hs256_signed_with_the_public_key_is_refused() {
        let issuer = issuer();
        let (token, claims) = issuer
            .issue("u1", &[Role::Admin], "s1", Utc::now())
            .unwrap();
        let kid = jsonwebtoken::decode_header(&token).unwrap().kid.unwrap();
        let public = &issuer.keys().public_keys()[0].x;
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some(kid);
        let forged = jsonwebtoken::encode(
            &header,
            &claims,
            &jsonwebtoken::EncodingKey::from_secret(public.as_bytes()),
        )
        .unwrap();
        assert_eq!(issuer.verify(&forged), Err(InactiveReason::BadSignature));
    }

    #[test]
    fn wrong_audience_or_issuer_is_refused() {
        let keys = Arc::new(KeyRing::generate().unwrap());
        let verifier = TokenIssuer::new(keys.clone(), &config(Duration::from_secs(900)));
        let mut other = config(Duration::from_secs(900));
        other.audience = "someone-else".into();
        let (token, _) = TokenIssuer::new(keys.clone(), &other)
            .issue("u1", &[Role::User], "s1", Utc::now())
            .unwrap();
        assert_eq!(verifier.verify(&token), Err(InactiveReason::InvalidClaims));
        let mut other = config(Duration::from_secs(900));
        other.issuer = "evil".into();
        let (token, _) = TokenIssuer::new(keys, &other)
            .issue("u1", &[Role::User], "s1", Utc::now())
            .unwrap();
        assert_eq!(verifier.verify(&token), Err(InactiveReason::InvalidClaims));
    }

    #[test]
    fn expired_tokens_are_refused() {
        let issuer = issuer();
        let past = Utc::now() - chrono::Duration::seconds(901);
        let (token, _) = issuer.issue("u1", &[Role::User], "s1", past).unwrap();
        assert_eq!(issuer.verify(&token), Err(InactiveReason::Expired));
    }

    #[test]
    fn garbage_is_malformed() {
        assert_eq!(issuer().verify("not.a.jwt"), Err(InactiveReason::Malformed));
        assert_eq!(issuer().verify(""), Err(InactiveReason::Malformed));
    }
}
