//! ByteStream resource names, as REAPI defines them for the CAS:
//!
//! ```text
//! {instance}/blobs/{function/}{hash}/{size}                           read
//! {instance}/uploads/{uuid}/blobs/{function/}{hash}/{size}{/meta...}  write
//! ```
//!
//! `{instance}` may span several segments or none (then without its `/`);
//! none of its segments is one of REAPI's keywords, so the first keyword
//! ends it. `{function/}` is left out for SHA-256 and given for BLAKE3.

use tonic::Status;

use strata_store::{Digest, DigestFunction};

/// The segments no instance name may hold.
const KEYWORDS: [&str; 7] = [
    "blobs",
    "uploads",
    "actions",
    "actionResults",
    "operations",
    "capabilities",
    "compressed-blobs",
];

/// A blob a resource name names, and the instance it names it in.
#[derive(Debug, PartialEq, Eq)]
pub struct BlobName {
    pub instance: String,
    pub digest: Digest,
}

/// Why `instance` cannot be served: resource names could not be read
/// with it.
pub fn check_instance_name(instance: &str) -> Result<(), String> {
    if instance.is_empty() {
        return Ok(());
    }
    for segment in instance.split('/') {
        if segment.is_empty() {
            return Err(format!(
                "the instance name {instance:?} has an empty segment (a leading, trailing or double `/`)"
            ));
        }
        if KEYWORDS.contains(&segment) {
            return Err(format!(
                "the instance name {instance:?} holds `{segment}`, which REAPI reserves"
            ));
        }
    }
    Ok(())
}

/// `{instance}/blobs/...`, the name of a read.
pub fn read_name(name: &str, function: DigestFunction) -> Result<BlobName, Status> {
    let segments: Vec<&str> = name.split('/').collect();
    let (instance, rest) = split_instance(&segments, name)?;
    match rest {
        ["blobs", blob @ ..] => {
            let digest = blob_digest(blob, function, false, name)?;
            Ok(BlobName { instance, digest })
        }
        ["compressed-blobs", ..] => Err(compressed(name)),
        _ => Err(malformed(name, "{instance}/blobs/{hash}/{size}")),
    }
}

/// `{instance}/uploads/{uuid}/blobs/...`, the name of a write.
pub fn write_name(name: &str, function: DigestFunction) -> Result<BlobName, Status> {
    let segments: Vec<&str> = name.split('/').collect();
    let (instance, rest) = split_instance(&segments, name)?;
    match rest {
        ["uploads", uuid, "blobs", blob @ ..] if !uuid.is_empty() => {
            let digest = blob_digest(blob, function, true, name)?;
            Ok(BlobName { instance, digest })
        }
        ["uploads", _, "compressed-blobs", ..] => Err(compressed(name)),
        _ => Err(malformed(
            name,
            "{instance}/uploads/{uuid}/blobs/{hash}/{size}",
        )),
    }
}

fn split_instance<'a>(
    segments: &'a [&'a str],
    name: &str,
) -> Result<(String, &'a [&'a str]), Status> {
    let Some(at) = segments.iter().position(|s| KEYWORDS.contains(s)) else {
        return Err(malformed(name, "a name with `blobs/{hash}/{size}`"));
    };
    Ok((segments[..at].join("/"), &segments[at..]))
}

/// `{function/}{hash}/{size}`, then metadata when `more` (writes only).
fn blob_digest(
    segments: &[&str],
    function: DigestFunction,
    more: bool,
    name: &str,
) -> Result<Digest, Status> {
    // Hashes of both functions served are 64 digits long, so a shorter
    // segment followed by a hash and a size names a function.
    let rest = match segments {
        [first, rest @ ..] if first.len() != 64 && rest.len() >= 2 => {
            if *first != function.name() {
                let shown: String = first.chars().take(40).collect();
                return Err(Status::invalid_argument(format!(
                    "{name:?} names the digest function {shown:?}: this server hashes with {function}"
                )));
            }
            rest
        }
        all => all,
    };
    let (hash, size) = match rest {
        [hash, size] => (hash, size),
        [hash, size, ..] if more => (hash, size),
        _ => return Err(malformed(name, "`{hash}/{size}` after `blobs/`")),
    };
    let size = size.parse::<i64>().map_err(|_| {
        Status::invalid_argument(format!("{name:?}: the size {size:?} is not a number"))
    })?;
    super::parse_digest(hash, size, function)
        .map_err(|why| Status::invalid_argument(format!("{name:?}: {why}")))
}

fn malformed(name: &str, expected: &str) -> Status {
    let shown: String = name.chars().take(200).collect();
    Status::invalid_argument(format!(
        "malformed resource name {shown:?}: expected {expected}"
    ))
}

fn compressed(name: &str) -> Status {
    Status::unimplemented(format!(
        "{name:?}: compressed-blobs are not served (this server announces no compressors)"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Code;

    const F: DigestFunction = DigestFunction::Sha256;

    fn h() -> String {
        "ab".repeat(32)
    }

    #[test]
    fn read_names_with_and_without_an_instance() {
        let d = Digest::new([0xab; 32], 12);
        assert_eq!(
            read_name(&format!("blobs/{}/12", h()), F).unwrap(),
            BlobName {
                instance: String::new(),
                digest: d
            }
        );
        assert_eq!(
            read_name(&format!("ci/main/blobs/{}/12", h()), F).unwrap(),
            BlobName {
                instance: "ci/main".into(),
                digest: d
            }
        );
        assert_eq!(
            read_name(&format!("blobs/blake3/{}/12", h()), DigestFunction::Blake3)
                .unwrap()
                .digest,
            d
        );
    }

    #[test]
    fn write_names_take_a_uuid_and_optional_metadata() {
        let d = Digest::new([0xab; 32], 7);
        let n = write_name(&format!("uploads/u-1/blobs/{}/7", h()), F).unwrap();
        assert_eq!((n.instance.as_str(), n.digest), ("", d));
        let n = write_name(&format!("x/uploads/u-1/blobs/{}/7/meta/data", h()), F).unwrap();
        assert_eq!((n.instance.as_str(), n.digest), ("x", d));
    }

    #[test]
    fn bad_names_are_invalid_arguments_and_compression_unimplemented() {
        let code = |r: Result<BlobName, Status>| r.unwrap_err().code();
        for bad in [
            format!("blobs/{}", h()),
            format!("blobs/{}/-1", h()),
            format!("blobs/{}/x", h()),
            "blobs/abc/3".to_string(),
            format!("blobs/{}/3", "AB".repeat(32)),
            format!("blobs/{}/3/extra", h()),
            format!("uploads/u/blobs/{}/3", h()),
            format!("instance/{}/3", h()),
            format!("blobs/md5/{}/3", h()),
        ] {
            assert_eq!(code(read_name(&bad, F)), Code::InvalidArgument, "{bad}");
        }
        assert_eq!(
            code(read_name(&format!("blobs/blake3/{}/3", h()), F)),
            Code::InvalidArgument
        );
        assert_eq!(
            code(write_name(&format!("blobs/{}/3", h()), F)),
            Code::InvalidArgument
        );
        assert_eq!(
            code(read_name(&format!("compressed-blobs/zstd/{}/3", h()), F)),
            Code::Unimplemented
        );
        assert_eq!(
            code(write_name(
                &format!("uploads/u/compressed-blobs/zstd/{}/3", h()),
                F
            )),
            Code::Unimplemented
        );
    }
}
