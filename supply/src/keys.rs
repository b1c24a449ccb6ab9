//! ed25519 key files as `strata cache keygen` writes them (the 32-byte seed
//! as 64 hex digits, mode 0600) and public keys as it prints them
//! (`ed25519:<64 hex>`): shared by the remote cache's signed entries
//! (strata-remote) and signed provenance (`dsse`).

use std::path::Path;

use ed25519_dalek::{SigningKey, VerifyingKey};

/// Writes a new signing key to `path` (mode 0600, never replacing a file)
/// and returns its public key.
pub fn keygen(path: &Path) -> std::io::Result<String> {
    use std::io::{Read, Write};
    use std::os::unix::fs::OpenOptionsExt;
    let mut seed = [0u8; 32];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut seed)?;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    writeln!(f, "{}", hex::encode(seed))?;
    f.sync_all()?;
    Ok(public_key_string(
        &SigningKey::from_bytes(&seed).verifying_key(),
    ))
}

/// `ed25519:<64 hex>`
pub fn public_key_string(k: &VerifyingKey) -> String {
    format!("ed25519:{}", hex::encode(k.as_bytes()))
}

/// Reads a public key written as `ed25519:<64 hex>`. Text without the
/// prefix is never repeated in the error: it may be a signing key (a
/// secret) given where its public key belongs.
pub fn parse_public_key(s: &str) -> Result<VerifyingKey, String> {
    let hex_part = s.strip_prefix("ed25519:").ok_or_else(|| {
        if s.trim().len() == 64 && s.trim().bytes().all(|b| b.is_ascii_hexdigit()) {
            "a signing key (secret, not shown) was given where its public key belongs: \
             use the `ed25519:<64 hex>` that `strata cache keygen` printed"
                .to_string()
        } else {
            "a public key is `ed25519:` followed by 64 hex digits (what was given is not shown)"
                .to_string()
        }
    })?;
    let bytes: [u8; 32] = hex::decode(hex_part)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| format!("`{s}` is not `ed25519:` followed by 64 hex digits"))?;
    VerifyingKey::from_bytes(&bytes).map_err(|e| format!("`{s}` is not a valid ed25519 key: {e}"))
}

/// Reads the signing key file at `path`.
pub fn read_signing_key(path: &Path) -> Result<SigningKey, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read the signing key {}: {e}", path.display()))?;
    let seed: [u8; 32] = hex::decode(text.trim())
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| {
            format!(
                "{} does not hold a signing key (64 hex digits, as `strata cache keygen` writes)",
                path.display()
            )
        })?;
    Ok(SigningKey::from_bytes(&seed))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signing_key_given_as_a_public_key_is_refused_without_showing_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k");
        keygen(&path).unwrap();
        let secret = std::fs::read_to_string(&path).unwrap();
        let e = parse_public_key(secret.trim()).unwrap_err();
        assert!(e.contains("signing key"), "{e}");
        assert!(!e.contains(secret.trim()), "{e}");
        let e = parse_public_key("not a key").unwrap_err();
        assert!(!e.contains("not a key"), "{e}");
    }
}
