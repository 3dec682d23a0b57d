//! Who is calling a service, and how the services know it.
//!
//! Services never take identity from plain metadata. The calling service (the gateway, or auth for
//! its login relay) signs a short-lived *caller assertion* per call: issuer, audience (the service
//! called), the person it acts for (user id and roles, none for anonymous routes such as login),
//! the client's address and the trace id, valid for seconds. It is an HS256 JWT under a key that
//! only the platform's own pods hold ([`IdentityKeys`]). The called service verifies it in a tonic
//! interceptor ([`AssertionVerifier`]) before any handler runs and hands the handler a
//! [`VerifiedCall`]; a call without a valid assertion is `UNAUTHENTICATED`.
//!
//! Outbound, code puts an [`OnBehalfOf`] in the request's extensions ([`on_behalf_of`]) and the
//! channel wrapper [`Asserting`] turns it into the signed header, so handlers never touch keys.

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tonic::metadata::MetadataMap;

use crate::config::{ConfigError, Env};

/// The metadata key of the caller assertion.
pub const ASSERTION_KEY: &str = "x-erp-assertion";

/// The shortest identity key accepted (bytes of the key file).
pub(crate) const MIN_KEY_BYTES: usize = 32;

/// How long an assertion is valid after it is signed.
const ASSERTION_LIFETIME: Duration = Duration::from_secs(30);
/// Clock skew tolerated between pods.
const CLOCK_LEEWAY_SECS: u64 = 5;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Role {
    User,
    Operator,
    Auditor,
    Admin,
    /// A service account's only role (game backends); never a person's.
    GameServer,
}

impl Role {
    pub const ALL: [Role; 5] = [
        Role::User,
        Role::Operator,
        Role::Auditor,
        Role::Admin,
        Role::GameServer,
    ];

    /// The roles a person can hold (everything but [`Role::GameServer`]).
    pub const PEOPLE: [Role; 4] = [Role::User, Role::Operator, Role::Auditor, Role::Admin];

    /// Whether a person may hold this role (`GAME_SERVER` belongs to service accounts only).
    pub fn is_for_people(self) -> bool {
        self != Role::GameServer
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Role::User => "USER",
            Role::Operator => "OPERATOR",
            Role::Auditor => "AUDITOR",
            Role::Admin => "ADMIN",
            Role::GameServer => "GAME_SERVER",
        }
    }
}

impl From<Role> for erp_proto::common::v1::Role {
    fn from(role: Role) -> Self {
        use erp_proto::common::v1::Role as Pb;
        match role {
            Role::User => Pb::User,
            Role::Operator => Pb::Operator,
            Role::Auditor => Pb::Auditor,
            Role::Admin => Pb::Admin,
            Role::GameServer => Pb::GameServer,
        }
    }
}

impl Role {
    /// The role of a protobuf enum value; `None` for unspecified or unknown values.
    pub fn from_pb(value: i32) -> Option<Role> {
        use erp_proto::common::v1::Role as Pb;
        match Pb::try_from(value).ok()? {
            Pb::User => Some(Role::User),
            Pb::Operator => Some(Role::Operator),
            Pb::Auditor => Some(Role::Auditor),
            Pb::Admin => Some(Role::Admin),
            Pb::GameServer => Some(Role::GameServer),
            Pb::Unspecified => None,
        }
    }

    /// The protobuf enum value of the role, as repeated enum fields carry it.
    pub fn to_pb(self) -> i32 {
        erp_proto::common::v1::Role::from(self) as i32
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Role::ALL
            .into_iter()
            .find(|role| role.as_str() == s)
            .ok_or_else(|| format!("unknown role {s:?}"))
    }
}

/// The person a call acts for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub user_id: String,
    pub roles: Vec<Role>,
}

impl Caller {
    pub fn has_any(&self, roles: &[Role]) -> bool {
        self.roles.iter().any(|r| roles.contains(r))
    }
}

/// The platform's services, as issuers and audiences of assertions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Service {
    Gateway,
    Auth,
    Event,
}

impl Service {
    pub fn as_str(self) -> &'static str {
        match self {
            Service::Gateway => "erp-gateway",
            Service::Auth => "erp-auth",
            Service::Event => "erp-event",
        }
    }

    fn from_name(name: &str) -> Option<Self> {
        [Service::Gateway, Service::Auth, Service::Event]
            .into_iter()
            .find(|s| s.as_str() == name)
    }
}

impl fmt::Display for Service {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whom an outbound call acts for; put in the request's extensions, signed by [`Asserting`].
#[derive(Debug, Clone, Default)]
pub struct OnBehalfOf {
    pub caller: Option<Caller>,
    /// The end client's address, as the gateway determined it.
    pub client_ip: Option<IpAddr>,
}

/// A gRPC request acting for `caller` (`None`: an anonymous route such as login).
pub fn on_behalf_of<T>(body: T, caller: Option<&Caller>) -> tonic::Request<T> {
    let mut request = tonic::Request::new(body);
    request.extensions_mut().insert(OnBehalfOf {
        caller: caller.cloned(),
        client_ip: None,
    });
    request
}

/// What the interceptor verified about an inbound call; in the handler's request extensions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedCall {
    /// The service that signed the assertion.
    pub issuer: Service,
    pub caller: Option<Caller>,
    pub client_ip: Option<IpAddr>,
}

impl VerifiedCall {
    /// The verified call of `request`; `Err` when no interceptor put one there (never in a
    /// server built by the platform, so this is a wiring mistake, refused all the same).
    pub fn of<T>(request: &tonic::Request<T>) -> Result<&VerifiedCall, IdentityError> {
        request
            .extensions()
            .get::<VerifiedCall>()
            .ok_or(IdentityError::Missing)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    #[error("no caller assertion")]
    Missing,
    #[error("invalid caller assertion: {0}")]
    Invalid(String),
    #[error("caller assertion for another service")]
    WrongAudience,
    #[error("caller assertion could not be signed: {0}")]
    Signing(String),
}

impl From<IdentityError> for tonic::Status {
    fn from(error: IdentityError) -> Self {
        // Details stay in the log: a prober learns nothing about which check failed.
        tracing::warn!(%error, "call refused");
        tonic::Status::unauthenticated("missing or invalid service identity")
    }
}

/// One HMAC key and its id (the first 8 bytes of its SHA-256, in hex).
#[derive(Clone)]
struct IdentityKey {
    id: String,
    encoding: EncodingKey,
    decoding: DecodingKey,
}

impl IdentityKey {
    fn new(secret: &[u8]) -> Self {
        let digest = Sha256::digest(secret);
        let id = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
        Self {
            id,
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
        }
    }
}

/// The key assertions are signed with, and the keys they are accepted under.
///
/// Rotation without a failed call: (1) add the new key to every service's
/// `ERP_SERVICE_IDENTITY_ACCEPT_KEY_FILES` and roll out; (2) make it the signing key
/// (`ERP_SERVICE_IDENTITY_KEY_FILE`) with the old one accepted, and roll out; (3) drop the old key.
#[derive(Clone)]
pub struct IdentityKeys {
    signing: IdentityKey,
    accepted: Arc<HashMap<String, DecodingKey>>,
}

impl fmt::Debug for IdentityKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut ids: Vec<&String> = self.accepted.keys().collect();
        ids.sort();
        f.debug_struct("IdentityKeys")
            .field("signing", &self.signing.id)
            .field("accepted", &ids)
            .finish()
    }
}

impl IdentityKeys {
    /// Keys from secrets (`signing` also verifies).
    pub fn from_secrets(signing: &[u8], also_accepted: &[&[u8]]) -> Result<Self, String> {
        for secret in std::iter::once(&signing).chain(also_accepted) {
            if secret.len() < MIN_KEY_BYTES {
                return Err(format!(
                    "an identity key must have at least {MIN_KEY_BYTES} bytes"
                ));
            }
        }
        let signing = IdentityKey::new(signing);
        let mut accepted = HashMap::new();
        accepted.insert(signing.id.clone(), signing.decoding.clone());
        for secret in also_accepted {
            let key = IdentityKey::new(secret);
            accepted.insert(key.id, key.decoding);
        }
        Ok(Self {
            signing,
            accepted: Arc::new(accepted),
        })
    }

    /// `ERP_SERVICE_IDENTITY_KEY_FILE` (required: every service signs or verifies) and
    /// `ERP_SERVICE_IDENTITY_ACCEPT_KEY_FILES` (comma-separated, optional).
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        const KEY: &str = "ERP_SERVICE_IDENTITY_KEY_FILE";
        const ACCEPT: &str = "ERP_SERVICE_IDENTITY_ACCEPT_KEY_FILES";
        let Some(path) = env.get(KEY) else {
            return Err(ConfigError::new(
                KEY,
                "",
                "required: a file with the key the services sign caller assertions with \
                 (at least 32 random bytes, the same for gateway, auth and event)",
            ));
        };
        let signing = read_key(KEY, Path::new(path))?;
        let accepted = match env.get(ACCEPT) {
            None => Vec::new(),
            Some(list) => list
                .split(',')
                .map(str::trim)
                .filter(|p| !p.is_empty())
                .map(|p| read_key(ACCEPT, &PathBuf::from(p)))
                .collect::<Result<Vec<_>, _>>()?,
        };
        let accepted: Vec<&[u8]> = accepted.iter().map(Vec::as_slice).collect();
        Self::from_secrets(&signing, &accepted)
            .map_err(|reason| ConfigError::new(KEY, path, reason))
    }
}

fn read_key(variable: &str, path: &Path) -> Result<Vec<u8>, ConfigError> {
    let raw = std::fs::read(path).map_err(|e| {
        ConfigError::new(
            variable,
            &path.display().to_string(),
            format!("cannot read: {e}"),
        )
    })?;
    // A trailing newline from `echo` or an editor is not part of the key.
    let trimmed = raw.trim_ascii();
    if trimmed.len() < MIN_KEY_BYTES {
        return Err(ConfigError::new(
            variable,
            &path.display().to_string(),
            format!("the key must have at least {MIN_KEY_BYTES} bytes"),
        ));
    }
    Ok(trimmed.to_vec())
}

#[derive(Debug, Serialize, Deserialize)]
struct AssertionClaims {
    iss: String,
    aud: String,
    iat: u64,
    exp: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sub: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    roles: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    ip: Option<IpAddr>,
    /// Trace id of the call, so a refused or replayed assertion can be traced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    tid: Option<String>,
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

/// Signs assertions as one service.
#[derive(Debug, Clone)]
pub struct AssertionSigner {
    issuer: Service,
    keys: IdentityKeys,
}

impl AssertionSigner {
    pub fn new(issuer: Service, keys: IdentityKeys) -> Self {
        Self { issuer, keys }
    }

    /// A signed assertion for a call to `audience` acting for `on_behalf_of`.
    pub fn sign(
        &self,
        audience: Service,
        on_behalf_of: &OnBehalfOf,
    ) -> Result<String, IdentityError> {
        self.sign_at(audience, on_behalf_of, unix_now())
    }

    /// [`Self::sign`] as if the clock read `now` (seconds since the Unix epoch): tests and tools.
    pub fn sign_at(
        &self,
        audience: Service,
        on_behalf_of: &OnBehalfOf,
        now: u64,
    ) -> Result<String, IdentityError> {
        let claims = AssertionClaims {
            iss: self.issuer.as_str().to_owned(),
            aud: audience.as_str().to_owned(),
            iat: now,
            exp: now + ASSERTION_LIFETIME.as_secs(),
            sub: on_behalf_of.caller.as_ref().map(|c| c.user_id.clone()),
            roles: on_behalf_of
                .caller
                .as_ref()
                .map(|c| c.roles.iter().map(|r| r.as_str().to_owned()).collect())
                .unwrap_or_default(),
            ip: on_behalf_of.client_ip,
            tid: crate::telemetry::current_trace_id(),
        };
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some(self.keys.signing.id.clone());
        jsonwebtoken::encode(&header, &claims, &self.keys.signing.encoding)
            .map_err(|e| IdentityError::Signing(e.to_string()))
    }

    /// Wraps a client channel so that every call on it carries an assertion for `audience`.
    pub fn wrap<S>(&self, audience: Service, inner: S) -> Asserting<S> {
        Asserting {
            inner,
            signer: Arc::new(self.clone()),
            audience,
        }
    }
}

/// Checks the assertions of calls to one service.
#[derive(Clone)]
pub struct AssertionVerifier {
    audience: Service,
    keys: IdentityKeys,
    validation: Arc<Validation>,
}

impl fmt::Debug for AssertionVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AssertionVerifier")
            .field("audience", &self.audience)
            .field("keys", &self.keys)
            .finish()
    }
}

impl AssertionVerifier {
    pub fn new(audience: Service, keys: IdentityKeys) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = CLOCK_LEEWAY_SECS;
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        validation.set_audience(&[audience.as_str()]);
        Self {
            audience,
            keys,
            validation: Arc::new(validation),
        }
    }

    /// The verified call in `metadata`.
    pub fn verify(&self, metadata: &MetadataMap) -> Result<VerifiedCall, IdentityError> {
        let token = metadata
            .get(ASSERTION_KEY)
            .ok_or(IdentityError::Missing)?
            .to_str()
            .map_err(|_| IdentityError::Invalid("not ASCII".into()))?;
        self.verify_token(token, unix_now())
    }

    fn verify_token(&self, token: &str, now: u64) -> Result<VerifiedCall, IdentityError> {
        let header = jsonwebtoken::decode_header(token)
            .map_err(|e| IdentityError::Invalid(e.to_string()))?;
        let key = header
            .kid
            .as_deref()
            .and_then(|kid| self.keys.accepted.get(kid))
            .ok_or_else(|| IdentityError::Invalid("unknown key id".into()))?;
        let claims = jsonwebtoken::decode::<AssertionClaims>(token, key, &self.validation)
            .map_err(|e| match e.kind() {
                jsonwebtoken::errors::ErrorKind::InvalidAudience => IdentityError::WrongAudience,
                _ => IdentityError::Invalid(e.to_string()),
            })?
            .claims;
        // A key holder could sign a long-lived assertion; only short ones are taken.
        if claims.exp.saturating_sub(claims.iat) > ASSERTION_LIFETIME.as_secs()
            || claims.iat > now + CLOCK_LEEWAY_SECS
        {
            return Err(IdentityError::Invalid("lifetime out of bounds".into()));
        }
        let issuer = Service::from_name(&claims.iss)
            .ok_or_else(|| IdentityError::Invalid(format!("unknown issuer {:?}", claims.iss)))?;
        let caller = match claims.sub {
            None => None,
            Some(user_id) if user_id.is_empty() => {
                return Err(IdentityError::Invalid("empty subject".into()));
            }
            Some(user_id) => Some(Caller {
                user_id,
                roles: claims
                    .roles
                    .iter()
                    .map(|r| Role::from_str(r))
                    .collect::<Result<_, _>>()
                    .map_err(IdentityError::Invalid)?,
            }),
        };
        Ok(VerifiedCall {
            issuer,
            caller,
            client_ip: claims.ip,
        })
    }
}

/// The server side: refuses a call without a valid assertion before any handler runs.
impl tonic::service::Interceptor for AssertionVerifier {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        let verified = self.verify(request.metadata())?;
        request.metadata_mut().remove(ASSERTION_KEY);
        request.extensions_mut().insert(verified);
        Ok(request)
    }
}

/// A client channel that signs every outbound call (see [`AssertionSigner::wrap`]).
#[derive(Debug, Clone)]
pub struct Asserting<S> {
    inner: S,
    signer: Arc<AssertionSigner>,
    audience: Service,
}

impl<S, B> tower::Service<http::Request<B>> for Asserting<S>
where
    S: tower::Service<http::Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        let anonymous = OnBehalfOf::default();
        let on_behalf_of = request
            .extensions()
            .get::<OnBehalfOf>()
            .unwrap_or(&anonymous);
        match self.signer.sign(self.audience, on_behalf_of) {
            Ok(token) => match http::HeaderValue::from_str(&token) {
                Ok(value) => {
                    request.headers_mut().insert(ASSERTION_KEY, value);
                }
                Err(error) => tracing::error!(%error, "caller assertion is not a header value"),
            },
            // The call goes out unsigned and is refused as UNAUTHENTICATED by the service.
            Err(error) => tracing::error!(%error, "caller assertion not signed"),
        }
        self.inner.call(request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &[u8] = b"0123456789abcdef0123456789abcdef";
    const OTHER_KEY: &[u8] = b"fedcba9876543210fedcba9876543210";

    fn keys(signing: &[u8], accepted: &[&[u8]]) -> IdentityKeys {
        IdentityKeys::from_secrets(signing, accepted).unwrap()
    }

    fn admin() -> OnBehalfOf {
        OnBehalfOf {
            caller: Some(Caller {
                user_id: "u1".into(),
                roles: vec![Role::Admin],
            }),
            client_ip: Some("203.0.113.7".parse().unwrap()),
        }
    }

    #[test]
    fn a_signed_assertion_verifies_for_its_audience_only() {
        let signer = AssertionSigner::new(Service::Gateway, keys(KEY, &[]));
        let token = signer.sign(Service::Auth, &admin()).unwrap();
        let auth = AssertionVerifier::new(Service::Auth, keys(KEY, &[]));
        let verified = auth.verify_token(&token, unix_now()).unwrap();
        assert_eq!(verified.issuer, Service::Gateway);
        assert_eq!(verified.caller, admin().caller);
        assert_eq!(verified.client_ip, admin().client_ip);
        let event = AssertionVerifier::new(Service::Event, keys(KEY, &[]));
        assert_eq!(
            event.verify_token(&token, unix_now()),
            Err(IdentityError::WrongAudience)
        );
    }

    #[test]
    fn expired_forged_and_unknown_key_assertions_are_refused() {
        let signer = AssertionSigner::new(Service::Gateway, keys(KEY, &[]));
        let verifier = AssertionVerifier::new(Service::Auth, keys(KEY, &[]));
        let old = signer
            .sign_at(Service::Auth, &admin(), unix_now() - 120)
            .unwrap();
        assert!(verifier.verify_token(&old, unix_now()).is_err());
        let foreign = AssertionSigner::new(Service::Gateway, keys(OTHER_KEY, &[]))
            .sign(Service::Auth, &admin())
            .unwrap();
        assert!(verifier.verify_token(&foreign, unix_now()).is_err());
        // The same key id with a changed payload: the signature no longer matches.
        let token = signer.sign(Service::Auth, &admin()).unwrap();
        let mut parts: Vec<&str> = token.split('.').collect();
        let forged_payload = base64::Engine::encode(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
            br#"{"iss":"erp-gateway","aud":"erp-auth","iat":1,"exp":99999999999,"sub":"x","roles":["ADMIN"]}"#,
        );
        parts[1] = &forged_payload;
        assert!(verifier.verify_token(&parts.join("."), unix_now()).is_err());
        assert_eq!(
            verifier.verify(&MetadataMap::new()),
            Err(IdentityError::Missing)
        );
    }

    #[test]
    fn a_next_key_is_accepted_before_it_signs() {
        // Step 1 of a rotation: every service accepts the next key while still signing the old.
        let verifier = AssertionVerifier::new(Service::Event, keys(KEY, &[OTHER_KEY]));
        let next_signer = AssertionSigner::new(Service::Auth, keys(OTHER_KEY, &[KEY]));
        let token = next_signer
            .sign(Service::Event, &OnBehalfOf::default())
            .unwrap();
        let verified = verifier.verify_token(&token, unix_now()).unwrap();
        assert_eq!(verified.issuer, Service::Auth);
        assert_eq!(verified.caller, None);
    }

    #[test]
    fn short_keys_are_refused() {
        assert!(IdentityKeys::from_secrets(b"short", &[]).is_err());
        let env = Env::from_pairs([("ERP_LOG_FORMAT", "json")]);
        let error = IdentityKeys::from_env(&env).unwrap_err();
        assert_eq!(error.variable, "ERP_SERVICE_IDENTITY_KEY_FILE");
    }
}
