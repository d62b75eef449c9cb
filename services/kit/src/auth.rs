//! Bearer-token authentication (CONTRACT.md "Authentication").
//!
//! Every call but health and reflection carries `authorization: Bearer <JWT>`, signed
//! HS256 with `AUTH_JWT_SECRET`, with claims `sub`, `role` and `exp`. The interceptor
//! verifies the token and stores the [`Principal`] in the request's extensions; each
//! handler then states which roles may call it with [`Principal::require`].

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
}

/// The authenticated caller of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The caller's role.
    pub role: Role,
    /// The caller's ID (already checked to be a valid reseller or Knox ID for its role).
    pub subject: String,
}

impl Principal {
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
        let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
        let claims = Claims {
            sub: subject.to_owned(),
            role,
            exp: now + ttl.as_secs(),
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
    /// `UNAUTHENTICATED` with the reason (expired, bad signature, malformed, bad subject).
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
        let Claims { sub, role, .. } = data.claims;
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
        Ok(Principal {
            role,
            subject: sub.trim().to_owned(),
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
}
