//! DSSE envelopes (github.com/secure-systems-lab/dsse, v1.0): a payload,
//! its type, and ed25519 signatures over the pre-authentication encoding
//! `PAE(type, payload)`. A key's `keyid` is the SHA-256 of its 32 raw bytes,
//! in hex; verification tries every signature with the trusted key, so the
//! keyid only helps to say whose signature a file carries.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use ed25519_dalek::{Signature, Signer as _, SigningKey, Verifier as _, VerifyingKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

/// The payload type of an in-toto statement.
pub const IN_TOTO: &str = "application/vnd.in-toto+json";

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    pub payload: String,
    #[serde(rename = "payloadType")]
    pub payload_type: String,
    pub signatures: Vec<EnvelopeSignature>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnvelopeSignature {
    pub keyid: String,
    pub sig: String,
}

/// DSSE's pre-authentication encoding.
pub fn pae(payload_type: &str, payload: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "DSSEv1 {} {} {} ",
        payload_type.len(),
        payload_type,
        payload.len()
    )
    .into_bytes();
    out.extend_from_slice(payload);
    out
}

pub fn keyid(key: &VerifyingKey) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

/// `payload` signed by `key` (ed25519 signatures are deterministic: the
/// same payload and key give the same envelope).
pub fn sign(payload_type: &str, payload: &[u8], key: &SigningKey) -> Envelope {
    let sig = key.sign(&pae(payload_type, payload));
    Envelope {
        payload: STANDARD.encode(payload),
        payload_type: payload_type.into(),
        signatures: vec![EnvelopeSignature {
            keyid: keyid(&key.verifying_key()),
            sig: STANDARD.encode(sig.to_bytes()),
        }],
    }
}

/// Why an envelope is not accepted.
#[derive(Debug, PartialEq, Eq)]
pub enum Rejected {
    /// Not a DSSE envelope at all (not JSON, fields missing, bad base64).
    Malformed(String),
    /// Another payload type than the one asked for.
    PayloadType(String),
    /// Signed only by other keys: their keyids.
    OtherKey(Vec<String>),
    /// A signature under the trusted key's keyid that does not verify: the
    /// payload (or the signature) was changed after signing.
    BadSignature,
}

impl std::fmt::Display for Rejected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Rejected::Malformed(m) => write!(f, "not a DSSE envelope: {m}"),
            Rejected::PayloadType(t) => {
                write!(f, "the payload type is `{t}`, not `{IN_TOTO}`")
            }
            Rejected::OtherKey(ids) if ids.is_empty() => write!(f, "the envelope has no signature"),
            Rejected::OtherKey(ids) => write!(
                f,
                "not signed by the trusted key (signed by keyid {})",
                ids.join(", ")
            ),
            Rejected::BadSignature => write!(
                f,
                "the signature by the trusted key does not match the payload: the file was changed after signing"
            ),
        }
    }
}

/// The payload of `envelope` if `trusted` signed it as `payload_type`.
pub fn verify(
    envelope: &[u8],
    payload_type: &str,
    trusted: &VerifyingKey,
) -> Result<Vec<u8>, Rejected> {
    let env: Envelope =
        serde_json::from_slice(envelope).map_err(|e| Rejected::Malformed(e.to_string()))?;
    let payload = STANDARD
        .decode(&env.payload)
        .map_err(|e| Rejected::Malformed(format!("payload: {e}")))?;
    let pae = pae(&env.payload_type, &payload);
    let trusted_id = keyid(trusted);
    let mut claimed = false;
    for s in &env.signatures {
        let Ok(bytes) = STANDARD.decode(&s.sig) else {
            claimed |= s.keyid == trusted_id;
            continue;
        };
        let Ok(sig) = Signature::from_slice(&bytes) else {
            claimed |= s.keyid == trusted_id;
            continue;
        };
        if trusted.verify(&pae, &sig).is_ok() {
            // The type is signed too: checked once the signature holds.
            if env.payload_type != payload_type {
                return Err(Rejected::PayloadType(env.payload_type));
            }
            return Ok(payload);
        }
        claimed |= s.keyid == trusted_id;
    }
    if claimed {
        Err(Rejected::BadSignature)
    } else {
        Err(Rejected::OtherKey(
            env.signatures.iter().map(|s| s.keyid.clone()).collect(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u8) -> SigningKey {
        SigningKey::from_bytes(&[n; 32])
    }

    #[test]
    fn pae_is_dsse_v1() {
        assert_eq!(pae("t", b"ab"), b"DSSEv1 1 t 2 ab");
    }

    #[test]
    fn signed_payloads_verify_and_changes_are_named() {
        let env = sign(IN_TOTO, b"{\"a\":1}", &key(1));
        let bytes = serde_json::to_vec(&env).unwrap();
        assert_eq!(
            verify(&bytes, IN_TOTO, &key(1).verifying_key()).unwrap(),
            b"{\"a\":1}"
        );
        assert!(matches!(
            verify(&bytes, IN_TOTO, &key(2).verifying_key()),
            Err(Rejected::OtherKey(_))
        ));
        let mut tampered = env.clone();
        tampered.payload = STANDARD.encode(b"{\"a\":2}");
        let bytes = serde_json::to_vec(&tampered).unwrap();
        assert_eq!(
            verify(&bytes, IN_TOTO, &key(1).verifying_key()),
            Err(Rejected::BadSignature)
        );
        assert!(matches!(
            verify(b"{}", IN_TOTO, &key(1).verifying_key()),
            Err(Rejected::Malformed(_))
        ));
    }
}
