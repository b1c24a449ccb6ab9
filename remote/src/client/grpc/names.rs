//! How REAPI names things: digest functions as enum values, blobs in
//! ByteStream resource names, and our messages as the generated ones.

use bazel_remote_apis::build::bazel::remote::execution::v2 as pb;

use strata_store::{Digest, DigestFunction};

pub(crate) fn function_value(function: DigestFunction) -> i32 {
    match function {
        DigestFunction::Blake3 => pb::digest_function::Value::Blake3 as i32,
        DigestFunction::Sha256 => pb::digest_function::Value::Sha256 as i32,
    }
}

/// The functions among a server's that Strata knows; the spec reads an
/// empty list as SHA-256 alone.
pub(crate) fn functions_of(values: &[i32]) -> Vec<DigestFunction> {
    if values.is_empty() {
        return vec![DigestFunction::Sha256];
    }
    let mut known: Vec<DigestFunction> = values
        .iter()
        .filter_map(|v| match pb::digest_function::Value::try_from(*v) {
            Ok(pb::digest_function::Value::Blake3) => Some(DigestFunction::Blake3),
            Ok(pb::digest_function::Value::Sha256) => Some(DigestFunction::Sha256),
            _ => None,
        })
        .collect();
    known.sort();
    known.dedup();
    known
}

/// `blobs/...` with the function's name for those the spec does not let
/// servers infer from the hash length (SHA-256 is inferred; BLAKE3, of the
/// same length, is not).
fn blob_path(function: DigestFunction, digest: &Digest) -> String {
    match function {
        DigestFunction::Sha256 => format!("blobs/{}/{}", digest.hex(), digest.size_bytes),
        DigestFunction::Blake3 => {
            format!(
                "blobs/{}/{}/{}",
                function.name(),
                digest.hex(),
                digest.size_bytes
            )
        }
    }
}

fn in_instance(instance: &str, rest: String) -> String {
    if instance.is_empty() {
        rest
    } else {
        format!("{instance}/{rest}")
    }
}

pub(crate) fn read_resource(instance: &str, function: DigestFunction, digest: &Digest) -> String {
    in_instance(instance, blob_path(function, digest))
}

pub(crate) fn write_resource(
    instance: &str,
    upload: &uuid::Uuid,
    function: DigestFunction,
    digest: &Digest,
) -> String {
    in_instance(
        instance,
        format!("uploads/{upload}/{}", blob_path(function, digest)),
    )
}

pub(crate) fn digest(d: &Digest) -> pb::Digest {
    pb::Digest {
        hash: d.hex(),
        size_bytes: d.size_bytes as i64,
    }
}

/// A digest a server sent; `None` when malformed (bad hex, negative size).
pub(crate) fn parse_digest(d: &pb::Digest) -> Option<Digest> {
    if d.size_bytes < 0 {
        return None;
    }
    Digest::from_hex(&d.hash, d.size_bytes as u64)
}

/// Re-reads a message as another type with the same field numbers (ours and
/// the generated REAPI ones).
pub(crate) fn convert<A: prost::Message, B: prost::Message + Default>(
    message: &A,
) -> Result<B, prost::DecodeError> {
    B::decode(message.encode_to_vec().as_slice())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest_of(bytes: &[u8]) -> Digest {
        DigestFunction::Blake3.of_bytes(bytes)
    }

    #[test]
    fn remote_resource_names_put_blake3_between_blobs_and_the_hash() {
        let d = digest_of(b"x");
        let hex = d.hex();
        assert_eq!(
            read_resource("ci/main", DigestFunction::Blake3, &d),
            format!("ci/main/blobs/blake3/{hex}/1")
        );
        assert_eq!(
            read_resource("", DigestFunction::Sha256, &d),
            format!("blobs/{hex}/1")
        );
        let id = uuid::Uuid::nil();
        assert_eq!(
            write_resource("ci", &id, DigestFunction::Blake3, &d),
            format!("ci/uploads/{id}/blobs/blake3/{hex}/1")
        );
        assert_eq!(
            write_resource("", &id, DigestFunction::Sha256, &d),
            format!("uploads/{id}/blobs/{hex}/1")
        );
    }

    #[test]
    fn remote_digest_function_lists_read_empty_as_sha256() {
        assert_eq!(functions_of(&[]), vec![DigestFunction::Sha256]);
        assert_eq!(
            functions_of(&[9, 1, 4, 999]),
            vec![DigestFunction::Blake3, DigestFunction::Sha256]
        );
        assert_eq!(functions_of(&[2]), Vec::<DigestFunction>::new());
    }

    #[test]
    fn remote_action_results_convert_both_ways_unchanged() {
        let ours = strata_store::reapi::ActionResult {
            exit_code: 0,
            stdout_digest: Some(digest_of(b"out").to_proto()),
            output_directories: vec![strata_store::reapi::OutputDirectory {
                path: "out".to_string(),
                root_directory_digest: Some(digest_of(b"tree").to_proto()),
                ..Default::default()
            }],
            ..Default::default()
        };
        let theirs: pb::ActionResult = convert(&ours).unwrap();
        assert_eq!(theirs.output_directories[0].path, "out");
        assert_eq!(
            theirs.stdout_digest.as_ref().unwrap().hash,
            digest_of(b"out").hex()
        );
        let back: strata_store::reapi::ActionResult = convert(&theirs).unwrap();
        assert_eq!(back, ours);
    }
}
