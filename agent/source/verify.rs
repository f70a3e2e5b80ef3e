//! Signed maps (SPEC §4 `map.verify_key`; issue 5): Ed25519 through `ed25519-dalek`, no
//! hand-written cryptography. [`verify`], [`sign`] and [`signature_url`] are pure; [`check`]
//! is the agent's one call (reads the key, fetches the signature, verifies); [`generate`]
//! reads the OS RNG.
//!
//! Formats, chosen so that stock OpenSSL can check them too:
//! - the secret key (`PREFIX.key`, mode 0600) is PKCS#8 PEM (`BEGIN PRIVATE KEY`);
//! - the public key (`PREFIX.pub`, `map.verify_key`) is SubjectPublicKeyInfo PEM
//!   (`BEGIN PUBLIC KEY`);
//! - the signature is the object `<map url>.sig`: the raw 64-byte Ed25519 signature of the
//!   exact map bytes (which hold `generation`, so the generation is covered).
//!
//! `openssl pkeyutl -verify -pubin -inkey map.pub -rawin -in map.toml -sigfile map.toml.sig`
//! gives the same answer as [`verify`].

use std::path::{Path, PathBuf};
use std::time::Duration;

use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
use ed25519_dalek::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey};
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use rand::TryRngCore;

use super::{AnySource, Fetched, MapSource};

/// Why a map's signature was not accepted, or signing was not possible.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// There is no signature object for the map (the caller's fetch found none).
    #[error("no signature at {url} ({reason}); a map without a valid signature is refused")]
    Missing {
        /// Where the signature was looked for.
        url: String,
        /// What the fetch answered.
        reason: String,
    },
    /// The public key file (`map.verify_key`) cannot be read.
    #[error("reading the public key {path}")]
    KeyUnreadable {
        /// The key file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The signature is not 64 bytes (truncated, or not an Ed25519 signature at all).
    #[error("the signature is {len} bytes, not a 64-byte Ed25519 signature")]
    Malformed {
        /// Its length.
        len: usize,
    },
    /// The signature does not match the map bytes under this key.
    #[error("the signature does not match the map: signed with another key, or the map or signature was changed")]
    Mismatch,
    /// The public key is not an Ed25519 public key in SubjectPublicKeyInfo PEM.
    #[error("the public key is not an Ed25519 public key in PEM (BEGIN PUBLIC KEY): {reason}")]
    BadPublicKey {
        /// The parser's message.
        reason: String,
    },
    /// The secret key is not an Ed25519 private key in PKCS#8 PEM.
    #[error("the signing key is not an Ed25519 private key in PEM (BEGIN PRIVATE KEY): {reason}")]
    BadSecretKey {
        /// The parser's message.
        reason: String,
    },
    /// The OS random number generator failed while generating a key.
    #[error("reading the OS random number generator: {reason}")]
    Random {
        /// The RNG's message.
        reason: String,
    },
}

/// Check that `signature` is `public_key`'s Ed25519 signature of exactly `map_bytes`.
/// `public_key_file_contents` is the file `map.verify_key` names. Strict verification:
/// malleable signatures and weak keys are refused.
///
/// # Errors
/// `BadPublicKey`, `Missing` for an empty signature, `Malformed`, `Mismatch`.
pub fn verify(
    map_bytes: &[u8],
    signature: &[u8],
    public_key_file_contents: &[u8],
) -> Result<(), VerifyError> {
    let key = public_key(public_key_file_contents)?;
    if signature.is_empty() {
        return Err(VerifyError::Missing {
            url: "(given)".into(),
            reason: "empty".into(),
        });
    }
    let bytes: [u8; 64] = signature.try_into().map_err(|_| VerifyError::Malformed {
        len: signature.len(),
    })?;
    key.verify_strict(map_bytes, &Signature::from_bytes(&bytes))
        .map_err(|_| VerifyError::Mismatch)
}

/// The agent's check of a freshly fetched map when `map.verify_key` is set: read the public
/// key file, fetch `<map_url>.sig` from the map's own kind of source (unconditionally), and
/// verify `map_bytes` against it.
///
/// # Errors
/// `Error::Unverified` (key unreadable or malformed, signature missing, malformed or not
/// matching); `Error::BadUrl` if the signature URL is unusable.
pub async fn check(
    map_url: &str,
    map_bytes: &[u8],
    key_file: &Path,
    timeout: Duration,
) -> Result<(), super::Error> {
    let refused = |source| super::Error::Unverified {
        url: map_url.to_string(),
        source,
    };
    let key = std::fs::read(key_file).map_err(|source| {
        refused(VerifyError::KeyUnreadable {
            path: key_file.to_path_buf(),
            source,
        })
    })?;
    let sig_url = signature_url(map_url);
    let signature = match AnySource::from_url(&sig_url, timeout)
        .await?
        .fetch(None)
        .await
    {
        Ok(Fetched::Map(m)) => m.bytes,
        Ok(Fetched::NotModified) => Vec::new(),
        Err(e) => {
            return Err(refused(VerifyError::Missing {
                url: sig_url,
                reason: crate::text::chain(&e),
            }))
        }
    };
    verify(map_bytes, &signature, &key).map_err(refused)
}

/// The URL of a map's detached signature: the map URL with `.sig` appended to its path
/// (before any `?query` or `#fragment`): `s3://b/k` → `s3://b/k.sig`, `https://h/x` →
/// `https://h/x.sig`, `file:///p` → `file:///p.sig`.
pub fn signature_url(map_url: &str) -> String {
    let end = map_url.find(['?', '#']).unwrap_or(map_url.len());
    let (path, rest) = map_url.split_at(end);
    format!("{path}.sig{rest}")
}

/// Sign `map_bytes` with the PKCS#8 PEM secret key `secret_pem`; the 64 raw bytes.
///
/// # Errors
/// `BadSecretKey`.
pub fn sign(map_bytes: &[u8], secret_pem: &[u8]) -> Result<Vec<u8>, VerifyError> {
    let bad = |reason: String| VerifyError::BadSecretKey { reason };
    let text = std::str::from_utf8(secret_pem).map_err(|e| bad(e.to_string()))?;
    let key = SigningKey::from_pkcs8_pem(text).map_err(|e| bad(e.to_string()))?;
    Ok(key.sign(map_bytes).to_bytes().to_vec())
}

/// A new key pair from the OS RNG: (secret key PEM, public key PEM).
///
/// # Errors
/// `Random` when the OS RNG fails; encoding a fresh key cannot fail in practice.
pub fn generate() -> Result<(Vec<u8>, Vec<u8>), VerifyError> {
    let mut seed = [0u8; 32];
    rand::rngs::OsRng
        .try_fill_bytes(&mut seed)
        .map_err(|e| VerifyError::Random {
            reason: e.to_string(),
        })?;
    let key = SigningKey::from_bytes(&seed);
    let encoding = |reason: String| VerifyError::BadSecretKey { reason };
    let secret = key
        .to_pkcs8_pem(LineEnding::LF)
        .map_err(|e| encoding(e.to_string()))?;
    let public = key
        .verifying_key()
        .to_public_key_pem(LineEnding::LF)
        .map_err(|e| encoding(e.to_string()))?;
    Ok((secret.as_bytes().to_vec(), public.into_bytes()))
}

fn public_key(pem: &[u8]) -> Result<VerifyingKey, VerifyError> {
    let bad = |reason: String| VerifyError::BadPublicKey { reason };
    let text = std::str::from_utf8(pem).map_err(|e| bad(e.to_string()))?;
    VerifyingKey::from_public_key_pem(text.trim()).map_err(|e| bad(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAP: &[u8] = b"schema = 1\ngeneration = 42\n";

    fn keys() -> (Vec<u8>, Vec<u8>) {
        generate().expect("a key pair")
    }

    #[test]
    fn a_valid_signature_verifies() {
        let (secret, public) = keys();
        let signature = sign(MAP, &secret).expect("signs");
        assert_eq!(signature.len(), 64);
        verify(MAP, &signature, &public).expect("verifies");
    }

    #[test]
    fn a_missing_signature_is_refused() {
        let (_, public) = keys();
        let err = verify(MAP, b"", &public).expect_err("missing");
        assert!(matches!(err, VerifyError::Missing { .. }), "{err:?}");
        let err = verify(MAP, &[0u8; 63], &public).expect_err("truncated");
        assert!(matches!(err, VerifyError::Malformed { len: 63 }), "{err:?}");
    }

    #[test]
    fn a_signature_from_another_key_is_refused() {
        let (secret, _) = keys();
        let (_, other_public) = keys();
        let signature = sign(MAP, &secret).expect("signs");
        let err = verify(MAP, &signature, &other_public).expect_err("wrong key");
        assert!(matches!(err, VerifyError::Mismatch), "{err:?}");
    }

    #[test]
    fn a_tampered_byte_is_refused() {
        let (secret, public) = keys();
        let signature = sign(MAP, &secret).expect("signs");
        let mut tampered = MAP.to_vec();
        // generation = 42 -> 43: a replayed or edited generation is caught too.
        let at = tampered.iter().rposition(|b| *b == b'2').expect("a 2");
        tampered[at] = b'3';
        let err = verify(&tampered, &signature, &public).expect_err("tampered map");
        assert!(matches!(err, VerifyError::Mismatch), "{err:?}");
        let mut bad_signature = signature.clone();
        bad_signature[10] ^= 1;
        let err = verify(MAP, &bad_signature, &public).expect_err("tampered signature");
        assert!(matches!(err, VerifyError::Mismatch), "{err:?}");
    }

    #[test]
    fn keys_are_pem_and_bad_keys_are_named() {
        let (secret, public) = keys();
        assert!(secret.starts_with(b"-----BEGIN PRIVATE KEY-----\n"));
        assert!(public.starts_with(b"-----BEGIN PUBLIC KEY-----\n"));
        let err = verify(MAP, &[0u8; 64], b"not a key").expect_err("bad public key");
        assert!(matches!(err, VerifyError::BadPublicKey { .. }), "{err:?}");
        let err = sign(MAP, &public).expect_err("a public key cannot sign");
        assert!(matches!(err, VerifyError::BadSecretKey { .. }), "{err:?}");
    }

    /// A signed map in a temp dir, as a file:// source serves it: (dir, map URL, key file).
    fn signed_file_map(sign_it: bool) -> (tempfile::TempDir, String, std::path::PathBuf) {
        let dir = tempfile::tempdir().expect("temp dir");
        let (secret, public) = keys();
        let key_file = dir.path().join("map.pub");
        std::fs::write(&key_file, &public).expect("key");
        let map_file = dir.path().join("map.toml");
        std::fs::write(&map_file, MAP).expect("map");
        if sign_it {
            let signature = sign(MAP, &secret).expect("signs");
            std::fs::write(dir.path().join("map.toml.sig"), signature).expect("sig");
        }
        let url = format!("file://{}", map_file.display());
        (dir, url, key_file)
    }

    const TIMEOUT: Duration = Duration::from_secs(5);

    /// `check` on file:// maps: the same code path as S3 and HTTPS, without a network.
    #[tokio::test]
    async fn check_accepts_a_map_with_its_signature_beside_it() {
        let (_dir, url, key_file) = signed_file_map(true);
        check(&url, MAP, &key_file, TIMEOUT)
            .await
            .expect("verifies");
        let other = b"schema = 1\ngeneration = 43\n";
        let err = check(&url, other, &key_file, TIMEOUT)
            .await
            .expect_err("another map");
        assert!(crate::text::chain(&err).contains("does not match"), "{err}");
    }

    #[tokio::test]
    async fn check_refuses_a_missing_signature_or_key() {
        let (dir, url, key_file) = signed_file_map(false);
        let err = check(&url, MAP, &key_file, TIMEOUT)
            .await
            .expect_err("no .sig");
        let missing = matches!(
            &err,
            super::super::Error::Unverified {
                source: VerifyError::Missing { .. },
                ..
            }
        );
        assert!(missing, "{err:?}");
        let no_key = dir.path().join("nope.pub");
        let err = check(&url, MAP, &no_key, TIMEOUT)
            .await
            .expect_err("no key");
        assert!(crate::text::chain(&err).contains("nope.pub"), "{err}");
    }

    #[test]
    fn signature_urls_sit_beside_the_map() {
        assert_eq!(
            signature_url("s3://b/maps/k.toml"),
            "s3://b/maps/k.toml.sig"
        );
        assert_eq!(
            signature_url("https://cfg.example.com/x"),
            "https://cfg.example.com/x.sig"
        );
        assert_eq!(
            signature_url("https://h/x.toml?v=1"),
            "https://h/x.toml.sig?v=1"
        );
        assert_eq!(
            signature_url("file:///etc/map.toml"),
            "file:///etc/map.toml.sig"
        );
    }
}
