//! Bearer-token authentication (CONTRACT.md "Authentication").
//!
//! Every call but health and reflection carries `authorization: Bearer <JWT>`, signed
//! HS256 with `AUTH_JWT_SECRET`, with claims `sub`, `role` and `exp`. The interceptor
//! verifies the token and stores the [`Principal`] in the request's extensions; each
//! handler then states which roles may call it with [`Principal::require`].
//!
//! A token may also carry `name`: the person acting for the principal (CONTRACT.md
//! "Additions"), 1 to [`NAME_MAX_CHARS`] characters without control characters, else the
//! token is refused (DOMAIN.md "Finding devices, history and the activity log"). Commands
//! record [`Principal::actor`] as who acted.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use tonic::{Request, Status};

use crate::error::ApiError;
use crate::ids::{KnoxId, ResellerId};
use crate::rpc_layer::PrincipalSlot;

/// Who may call what.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// The platform: registers accounts.
    Admin,
    /// A reseller tenant; `sub` is its reseller ID.
    Reseller,
    /// A managed service provider; `sub` is its Knox ID.
    Msp,
    /// A customer account; `sub` is its Knox ID.
    Customer,
}

impl Role {
    /// The role's name as tokens spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Reseller => "reseller",
            Role::Msp => "msp",
            Role::Customer => "customer",
        }
    }
}

/// The claims of a bearer token.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    /// The principal: reseller ID, or the Knox ID of the MSP or customer.
    pub sub: String,
    /// The principal's role.
    pub role: Role,
    /// Expiry, seconds since the Unix epoch.
    pub exp: u64,
    /// The person acting for the principal, when the identity provider names one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// Most characters (Unicode scalar values) of a token's `name` claim (DOMAIN.md "Finding
/// devices, history and the activity log").
pub const NAME_MAX_CHARS: usize = 100;

/// Checks a token's `name` claim: trimmed, it must hold 1 to [`NAME_MAX_CHARS`]
/// characters, and it may hold no control character anywhere (not even one that trimming
/// would drop, so a name is never silently changed). Returns the trimmed name.
///
/// # Errors
/// What is wrong with the name, for a person (the name itself echoed by the caller).
pub fn parse_name(raw: &str) -> Result<String, String> {
    if let Some(found) = raw.chars().find(|c| c.is_control()) {
        return Err(format!(
            "must not contain control characters (found U+{:04X})",
            u32::from(found)
        ));
    }
    let name = raw.trim();
    let len = name.chars().count();
    if len == 0 {
        return Err("must not be empty".into());
    }
    if len > NAME_MAX_CHARS {
        return Err(format!(
            "must be at most {NAME_MAX_CHARS} characters, got {len}"
        ));
    }
    Ok(name.to_owned())
}

/// The authenticated caller of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The caller's role.
    pub role: Role,
    /// The caller's ID (already checked to be a valid reseller or Knox ID for its role).
    pub subject: String,
    /// The person acting for the principal: the token's `name` claim, checked by
    /// [`parse_name`] (`None` when the token names no one).
    pub name: Option<String>,
}

impl Principal {
    /// Who acts, as commands record it and the activity log shows it (DOMAIN.md "Finding
    /// devices, history and the activity log"): for a reseller (or the platform) the
    /// person named by the token, else the subject (the reseller ID); for an MSP or a
    /// customer always the account's Knox ID, never a person's name.
    pub fn actor(&self) -> &str {
        match (self.role, &self.name) {
            (Role::Reseller | Role::Admin, Some(name)) => name,
            _ => &self.subject,
        }
    }

    /// The principal the interceptor stored in `request`.
    ///
    /// # Errors
    /// `UNAUTHENTICATED` when the request did not pass the interceptor.
    pub fn of<T>(request: &Request<T>) -> Result<&Principal, ApiError> {
        request
            .extensions()
            .get::<Principal>()
            .ok_or_else(|| ApiError::Unauthenticated("missing bearer token".into()))
    }

    /// Checks that the caller has one of `roles`.
    ///
    /// # Errors
    /// `PERMISSION_DENIED` naming the roles that may call.
    pub fn require(&self, roles: &[Role]) -> Result<&Self, ApiError> {
        if roles.contains(&self.role) {
            Ok(self)
        } else {
            let allowed: Vec<_> = roles.iter().map(|r| r.as_str()).collect();
            Err(ApiError::PermissionDenied(format!(
                "role {} may not call this; allowed: {}",
                self.role.as_str(),
                allowed.join(", ")
            )))
        }
    }

    /// The caller as a reseller.
    ///
    /// # Errors
    /// `PERMISSION_DENIED` unless the role is `reseller`.
    pub fn reseller(&self) -> Result<ResellerId, ApiError> {
        self.require(&[Role::Reseller])?;
        ResellerId::parse(&self.subject).map_err(ApiError::Unauthenticated)
    }

    /// The caller as an account (MSP or customer) with one of `roles`.
    ///
    /// # Errors
    /// `PERMISSION_DENIED` unless the role is among `roles`.
    pub fn account(&self, roles: &[Role]) -> Result<KnoxId, ApiError> {
        self.require(roles)?;
        KnoxId::parse(&self.subject).map_err(ApiError::Unauthenticated)
    }
}

/// Verifies bearer tokens; a tonic interceptor, cheap to clone.
#[derive(Clone)]
pub struct JwtAuth {
    inner: Arc<JwtKeys>,
}

struct JwtKeys {
    decoding: DecodingKey,
    encoding: EncodingKey,
    validation: Validation,
}

impl std::fmt::Debug for JwtAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("JwtAuth(..)")
    }
}

impl JwtAuth {
    /// Keys from the shared secret.
    pub fn new(secret: &str) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = 5;
        validation.set_required_spec_claims(&["exp", "sub"]);
        Self {
            inner: Arc::new(JwtKeys {
                decoding: DecodingKey::from_secret(secret.as_bytes()),
                encoding: EncodingKey::from_secret(secret.as_bytes()),
                validation,
            }),
        }
    }

    /// Signs a token for `subject` in `role`, valid for `ttl`. For development tools and
    /// tests; production tokens come from the identity provider sharing the secret.
    ///
    /// # Errors
    /// Fails only if signing fails.
    pub fn mint(&self, role: Role, subject: &str, ttl: Duration) -> anyhow::Result<String> {
        self.mint_named(role, subject, None, ttl)
    }

    /// Like [`JwtAuth::mint`], with the `name` claim (the person acting for the principal)
    /// when `name` is given. The name is signed as given, unchecked, so tests can mint
    /// tokens [`JwtAuth::verify`] refuses.
    ///
    /// # Errors
    /// Fails only if signing fails.
    pub fn mint_named(
        &self,
        role: Role,
        subject: &str,
        name: Option<&str>,
        ttl: Duration,
    ) -> anyhow::Result<String> {
        let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
        let claims = Claims {
            sub: subject.to_owned(),
            role,
            exp: now + ttl.as_secs(),
            name: name.map(str::to_owned),
        };
        Ok(jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &self.inner.encoding,
        )?)
    }

    /// Verifies a raw token and returns its principal.
    ///
    /// # Errors
    /// `UNAUTHENTICATED` with the reason (expired, bad signature, malformed, bad subject,
    /// a `name` that [`parse_name`] refuses).
    pub fn verify(&self, token: &str) -> Result<Principal, ApiError> {
        let data =
            jsonwebtoken::decode::<Claims>(token, &self.inner.decoding, &self.inner.validation)
                .map_err(|e| {
                    use jsonwebtoken::errors::ErrorKind;
                    let reason = match e.kind() {
                        ErrorKind::ExpiredSignature => "the bearer token has expired",
                        ErrorKind::InvalidSignature => "the bearer token's signature is not valid",
                        ErrorKind::InvalidAlgorithm => "the bearer token must be signed with HS256",
                        ErrorKind::MissingRequiredClaim(_) => {
                            "the bearer token lacks a required claim (sub, role, exp)"
                        }
                        _ => "the bearer token is malformed",
                    };
                    ApiError::Unauthenticated(reason.into())
                })?;
        let Claims {
            sub, role, name, ..
        } = data.claims;
        let valid_subject = match role {
            Role::Admin => !sub.trim().is_empty(),
            Role::Reseller => ResellerId::parse(&sub).is_ok(),
            Role::Msp | Role::Customer => KnoxId::parse(&sub).is_ok(),
        };
        if !valid_subject {
            // The subject is echoed cut and escaped: a token may carry anything.
            return Err(ApiError::Unauthenticated(format!(
                "the bearer token's subject \"{}\" is not a valid ID for role {}",
                crate::text::echo(&sub),
                role.as_str()
            )));
        }
        let name = name
            .map(|raw| {
                parse_name(&raw).map_err(|problem| {
                    // Echoed cut and escaped, like the subject.
                    ApiError::Unauthenticated(format!(
                        "the bearer token's name \"{}\" {problem}",
                        crate::text::echo(&raw)
                    ))
                })
            })
            .transpose()?;
        Ok(Principal {
            role,
            subject: sub.trim().to_owned(),
            name,
        })
    }

    /// Reads and verifies the `authorization` metadata of `request`.
    ///
    /// # Errors
    /// `UNAUTHENTICATED` when the header is missing, not a bearer token, or invalid.
    pub fn authenticate<T>(&self, request: &Request<T>) -> Result<Principal, ApiError> {
        let header = request
            .metadata()
            .get("authorization")
            .ok_or_else(|| {
                ApiError::Unauthenticated("missing `authorization: Bearer <token>` metadata".into())
            })?
            .to_str()
            .map_err(|_| {
                ApiError::Unauthenticated("the authorization metadata is not text".into())
            })?;
        let token = header
            .strip_prefix("Bearer ")
            .or_else(|| header.strip_prefix("bearer "))
            .ok_or_else(|| {
                ApiError::Unauthenticated(
                    "the authorization metadata must be `Bearer <token>`".into(),
                )
            })?;
        self.verify(token.trim())
    }
}

impl tonic::service::Interceptor for JwtAuth {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        let principal = self.authenticate(&request)?;
        // For the access log (see `crate::rpc_layer`).
        if let Some(slot) = request.extensions().get::<PrincipalSlot>() {
            slot.fill(&principal);
        }
        request.extensions_mut().insert(principal);
        Ok(request)
    }
}

/// Adds `authorization: Bearer <token>` to an outgoing request (clients, service-to-service).
///
/// # Errors
/// Fails when the token is not valid metadata text.
pub fn with_bearer<T>(mut request: Request<T>, token: &str) -> Result<Request<T>, Status> {
    let value = format!("Bearer {token}")
        .parse()
        .map_err(|_| Status::invalid_argument("token is not valid metadata"))?;
    request.metadata_mut().insert("authorization", value);
    Ok(request)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minted_tokens_verify_and_carry_the_principal() {
        let auth = JwtAuth::new("s3cret");
        let token = auth
            .mint(Role::Reseller, "acme", Duration::from_secs(60))
            .unwrap();
        let p = auth.verify(&token).unwrap();
        assert_eq!(p.role, Role::Reseller);
        assert_eq!(p.subject, "acme");
    }

    #[test]
    fn wrong_secret_and_bad_subjects_are_rejected() {
        let token = JwtAuth::new("a")
            .mint(Role::Reseller, "acme", Duration::from_secs(60))
            .unwrap();
        assert!(matches!(
            JwtAuth::new("b").verify(&token),
            Err(ApiError::Unauthenticated(_))
        ));
        let auth = JwtAuth::new("a");
        let bad = auth
            .mint(Role::Customer, "not-a-knox-id", Duration::from_secs(60))
            .unwrap();
        assert!(matches!(
            auth.verify(&bad),
            Err(ApiError::Unauthenticated(_))
        ));
    }

    #[test]
    fn a_hostile_subject_is_echoed_short_and_escaped() {
        let auth = JwtAuth::new("a");
        for subject in ["X".repeat(10_000), "R5\u{0}X".into()] {
            let token = auth
                .mint(Role::Customer, &subject, Duration::from_secs(60))
                .unwrap();
            let Err(ApiError::Unauthenticated(message)) = auth.verify(&token) else {
                panic!("{subject:.20} was accepted");
            };
            assert!(message.len() < 200, "{message}");
            assert!(!message.contains('\u{0}'), "{message:?}");
        }
    }

    fn verify_named(role: Role, subject: &str, name: &str) -> Result<Principal, ApiError> {
        let auth = JwtAuth::new("a");
        let token = auth
            .mint_named(role, subject, Some(name), Duration::from_secs(60))
            .unwrap();
        auth.verify(&token)
    }

    #[test]
    fn a_named_reseller_acts_as_the_person_and_an_unnamed_one_as_itself() {
        let p = verify_named(Role::Reseller, "acme", "  Jane Roe ").unwrap();
        assert_eq!(p.name.as_deref(), Some("Jane Roe"));
        assert_eq!(p.actor(), "Jane Roe");
        let p = verify_named(Role::Reseller, "acme", &"é".repeat(NAME_MAX_CHARS)).unwrap();
        assert_eq!(p.actor().chars().count(), NAME_MAX_CHARS);
        let auth = JwtAuth::new("a");
        let unnamed = auth
            .mint(Role::Reseller, "acme", Duration::from_secs(60))
            .unwrap();
        let p = auth.verify(&unnamed).unwrap();
        assert_eq!(p.name, None);
        assert_eq!(p.actor(), "acme");
    }

    #[test]
    fn accounts_act_as_their_knox_id_whatever_name_the_token_carries() {
        for role in [Role::Msp, Role::Customer] {
            let p = verify_named(role, "670000001", "Jane Roe").unwrap();
            assert_eq!(p.actor(), "670000001");
        }
    }

    #[test]
    fn a_bad_name_refuses_the_token_saying_what_is_wrong() {
        let too_long = "x".repeat(NAME_MAX_CHARS + 1);
        for (name, problem) in [
            (too_long.as_str(), "at most 100 characters, got 101"),
            ("Jane\u{0}Roe", "control characters (found U+0000)"),
            ("Jane Roe\n", "control characters (found U+000A)"),
            ("", "must not be empty"),
            ("   ", "must not be empty"),
        ] {
            let Err(ApiError::Unauthenticated(message)) =
                verify_named(Role::Reseller, "acme", name)
            else {
                panic!("{name:?} was accepted");
            };
            assert!(message.contains("name"), "{message}");
            assert!(message.contains(problem), "{message}");
            assert!(message.len() < 200, "{message}");
            assert!(!message.contains('\u{0}'), "{message:?}");
        }
    }
}
