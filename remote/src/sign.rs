//! Signed action-cache entries: how a remote cache is protected from
//! poisoning, as Nix protects binary caches.
//!
//! An uploader holding an ed25519 key signs (key digest, result); the
//! signature is a small blob in the CAS that the result names in its
//! `execution_metadata.auxiliary_metadata`, so servers store it unmodified.
//! A downloader with `trusted_keys` treats a result without a valid
//! signature by one of those keys as a miss.

use std::path::Path;

use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};
use prost::Message;
use serde::{Deserialize, Serialize};
use strata_store::{Digest, DigestFunction, reapi};

/// Marks our entry among the result's auxiliary metadata.
pub const TYPE_URL: &str = "type.googleapis.com/strata.ActionResultSignature.v1";
/// Keeps signatures of other messages from ever being valid here.
const CONTEXT: &[u8] = b"strata action-cache signature v1\0";

/// The signature blob.
#[derive(Debug, Serialize, Deserialize)]
pub struct SignatureBlob {
    /// `ed25519:<64 hex>`
    pub public_key: String,
    /// 128 hex digits.
    pub signature: String,
}

/// A key that signs uploads (`--sign-key FILE`: the 32-byte seed as 64 hex
/// digits, as `strata cache keygen` writes it).
pub struct Signer {
    key: SigningKey,
}

/// Writes a new signing key to `path` (mode 0600) and returns its public
/// key, for `trusted_keys`. Key files are strata-supply's (signed
/// provenance uses the same keys).
pub fn keygen(path: &Path) -> std::io::Result<String> {
    strata_supply::keys::keygen(path)
}

fn public_key_string(k: &VerifyingKey) -> String {
    strata_supply::keys::public_key_string(k)
}

/// Reads a public key written as `ed25519:<64 hex>`.
pub fn parse_public_key(s: &str) -> Result<VerifyingKey, String> {
    strata_supply::keys::parse_public_key(s)
}

impl Signer {
    pub fn from_file(path: &Path) -> Result<Signer, String> {
        Ok(Signer {
            key: strata_supply::keys::read_signing_key(path)?,
        })
    }

    pub fn public_key(&self) -> String {
        public_key_string(&self.key.verifying_key())
    }

    /// The signature blob for `result` under `key`.
    pub fn sign(
        &self,
        function: DigestFunction,
        key: &Digest,
        result: &reapi::ActionResult,
    ) -> Vec<u8> {
        let sig = self.key.sign(&message(function, key, result));
        serde_json::to_vec(&SignatureBlob {
            public_key: self.public_key(),
            signature: hex::encode(sig.to_bytes()),
        })
        .expect("a signature serializes")
    }
}

/// What is signed: a context, the key, and the result without signatures.
fn message(function: DigestFunction, key: &Digest, result: &reapi::ActionResult) -> Vec<u8> {
    let mut m = CONTEXT.to_vec();
    m.extend_from_slice(function.qualified(key).as_bytes());
    m.push(0);
    m.extend_from_slice(&without_signature(result).encode_to_vec());
    m
}

/// `result` with our signature reference removed.
pub fn without_signature(result: &reapi::ActionResult) -> reapi::ActionResult {
    let mut r = result.clone();
    if let Some(meta) = r.execution_metadata.as_mut() {
        meta.auxiliary_metadata.retain(|a| a.type_url != TYPE_URL);
    }
    // Attaching may have created the metadata: an empty one is no metadata.
    if r.execution_metadata == Some(Default::default()) {
        r.execution_metadata = None;
    }
    r
}

/// `result` naming the signature blob `signature`.
pub fn attach(result: &reapi::ActionResult, signature: &Digest) -> reapi::ActionResult {
    let mut r = without_signature(result);
    r.execution_metadata
        .get_or_insert_with(Default::default)
        .auxiliary_metadata
        .push(reapi::Any {
            type_url: TYPE_URL.into(),
            value: signature.to_proto().encode_to_vec(),
        });
    r
}

/// The signature blob a result names, if any.
pub fn reference(result: &reapi::ActionResult) -> Option<Digest> {
    let any = result
        .execution_metadata
        .as_ref()?
        .auxiliary_metadata
        .iter()
        .find(|a| a.type_url == TYPE_URL)?;
    Digest::from_proto(&reapi::Digest::decode(any.value.as_slice()).ok()?)
}

/// Checks `blob` is a valid signature of (key, result) by a trusted key.
pub fn verify(
    trusted: &[VerifyingKey],
    function: DigestFunction,
    key: &Digest,
    result: &reapi::ActionResult,
    blob: &[u8],
) -> Result<(), String> {
    let parsed: SignatureBlob =
        serde_json::from_slice(blob).map_err(|e| format!("unreadable signature: {e}"))?;
    let signer = parse_public_key(&parsed.public_key)?;
    if !trusted.iter().any(|t| t == &signer) {
        return Err(format!(
            "signed by {}, which is not trusted",
            parsed.public_key
        ));
    }
    let bytes: [u8; 64] = hex::decode(&parsed.signature)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or("the signature is not 128 hex digits")?;
    signer
        .verify_strict(
            &message(function, key, result),
            &Signature::from_bytes(&bytes),
        )
        .map_err(|_| format!("the signature by {} does not match", parsed.public_key))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result() -> reapi::ActionResult {
        reapi::ActionResult {
            exit_code: 0,
            stdout_digest: Some(DigestFunction::Blake3.of_bytes(b"out").to_proto()),
            ..Default::default()
        }
    }

    #[test]
    fn a_signature_verifies_only_for_its_key_and_result() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key");
        let public = keygen(&path).unwrap();
        let signer = Signer::from_file(&path).unwrap();
        assert_eq!(signer.public_key(), public);
        let trusted = [parse_public_key(&public).unwrap()];
        let f = DigestFunction::Blake3;
        let key = f.of_bytes(b"action");
        let blob = signer.sign(f, &key, &result());
        // The reference itself is not part of what is signed.
        let attached = attach(&result(), &f.of_bytes(&blob));
        assert_eq!(reference(&attached), Some(f.of_bytes(&blob)));
        verify(&trusted, f, &key, &attached, &blob).unwrap();

        let other_key = f.of_bytes(b"another action");
        assert!(verify(&trusted, f, &other_key, &attached, &blob).is_err());
        let mut tampered = attached.clone();
        tampered.exit_code = 1;
        assert!(verify(&trusted, f, &key, &tampered, &blob).is_err());
        let stranger = dir.path().join("other");
        let untrusted = [parse_public_key(&keygen(&stranger).unwrap()).unwrap()];
        assert!(verify(&untrusted, f, &key, &attached, &blob).is_err());
    }
}
