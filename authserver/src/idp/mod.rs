//! Where users log in: the built-in `dev` users file, an OpenID provider, or a plain OAuth 2.0
//! provider.

pub mod dev;
pub mod oauth2;
pub mod oidc;
