//! API keys: `Authorization: Bearer <key>` on every route but `/health*` (and `/metrics` unless it is made private;
//! `middleware::authorize` asks). Keys are compared in constant time (as SHA-256 digests, so their lengths do not
//! show either). The key a request came with is its `Owner`: files and tuning jobs belong to it, and another key
//! finds none of them.
//!
//! No key configured: every request is anonymous, which is allowed on a loopback address (the default host);
//! on any other address the server refuses to start unless told `allow_unauthenticated`.

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Who made a request: the digest of its key (`""` where no key is configured). Never the key itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner(pub String);

/// The configured keys, as digests.
#[derive(Debug, Clone, Default)]
pub struct Keys {
    digests: Vec<[u8; 32]>,
    public_metrics: bool,
}

fn digest(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

impl Keys {
    pub fn new(keys: &[String], public_metrics: bool) -> Self {
        Self {
            digests: keys.iter().map(|k| digest(k)).collect(),
            public_metrics,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.digests.is_empty()
    }

    /// Whether `/metrics` is served without a key.
    pub fn public_metrics(&self) -> bool {
        self.public_metrics
    }

    /// The owner a bearer token stands for, if it is one of the keys (each compared in constant time, all of
    /// them, so the time does not say which matched).
    pub fn owner(&self, token: &str) -> Option<Owner> {
        let d = digest(token);
        let mut found = None;
        for k in &self.digests {
            if bool::from(k.ct_eq(&d)) {
                found = Some(Owner(k[..8].iter().map(|b| format!("{b:02x}")).collect()));
            }
        }
        found
    }
}

/// Keys from the flags, `PEZ_API_KEYS` (comma-separated) and the file, without blanks or repeats.
pub fn gather(flags: &[String], file: &[String]) -> Vec<String> {
    let env = std::env::var("PEZ_API_KEYS").unwrap_or_default();
    let mut keys: Vec<String> = flags
        .iter()
        .cloned()
        .chain(env.split(',').map(str::to_string))
        .chain(file.iter().cloned())
        .map(|k| k.trim().to_string())
        .filter(|k| !k.is_empty())
        .collect();
    keys.sort();
    keys.dedup();
    keys
}

/// Why serving without keys on `host` is refused (none on loopback, or when allowed).
pub fn refuse_open_host(host: &str, keys: &[String], allowed: bool) -> Option<String> {
    let loopback = host == "localhost" || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback());
    (keys.is_empty() && !loopback && !allowed).then(|| {
        format!(
            "no API key is configured and the server would listen on {host}, which is not a loopback address: \
             anyone who reaches it could start tuning jobs (compute) and upload files (disk). Give keys with \
             --api-key KEY, PEZ_API_KEYS or [auth] api_keys; or, if the network in front of it is yours to \
             trust, say so with --allow-unauthenticated"
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_stand_for_their_owners_and_others_for_none() {
        let keys = Keys::new(&["alpha".into(), "beta".into()], true);
        let (a, b) = (keys.owner("alpha").unwrap(), keys.owner("beta").unwrap());
        assert_ne!(a, b);
        assert_eq!(a.0.len(), 16);
        assert!(!a.0.contains("alpha"));
        assert_eq!(keys.owner("alph"), None);
        assert_eq!(keys.owner(""), None);
        assert_eq!(refuse_open_host("127.0.0.1", &[], false), None);
        assert_eq!(refuse_open_host("::1", &[], false), None);
        assert!(refuse_open_host("0.0.0.0", &[], false)
            .unwrap()
            .contains("--allow-unauthenticated"));
        assert_eq!(refuse_open_host("0.0.0.0", &[], true), None);
        assert_eq!(refuse_open_host("0.0.0.0", &["k".into()], false), None);
    }
}
