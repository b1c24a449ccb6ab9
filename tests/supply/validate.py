"""Third-party checks of Strata's supply-chain documents, run by
tests/supply_chain.rs with the venv of scripts/supply-validators-up.sh:

  validate.py cyclonedx FILE      CycloneDX 1.6 JSON schema (cyclonedx-python-lib)
  validate.py dsse FILE PUBLIC    a DSSE envelope signed by the ed25519 key
                                  PUBLIC (`ed25519:<hex>`), with securesystemslib

(SPDX documents are checked by spdx-tools' own `pyspdxtools -i FILE`.)
Exit 0 when the check passes, 1 with the validator's reason otherwise.
"""
import hashlib
import json
import sys


def cyclonedx(path):
    from cyclonedx.schema import SchemaVersion
    from cyclonedx.validation.json import JsonStrictValidator

    with open(path) as f:
        errors = JsonStrictValidator(SchemaVersion.V1_6).validate_str(f.read())
    if errors:
        print(errors)
        return 1
    print("valid CycloneDX 1.6")
    return 0


def dsse(path, public):
    from securesystemslib.dsse import Envelope
    from securesystemslib.exceptions import VerificationError
    from securesystemslib.signer import SSlibKey

    with open(path) as f:
        envelope = Envelope.from_dict(json.load(f))
    public = public.removeprefix("ed25519:")
    # Strata's keyid: the SHA-256 of the key's 32 raw bytes.
    keyid = hashlib.sha256(bytes.fromhex(public)).hexdigest()
    key = SSlibKey(keyid, "ed25519", "ed25519", {"public": public})
    try:
        verified = envelope.verify([key], 1)
    except VerificationError as e:
        print(f"not verified: {e}")
        return 1
    print("verified by", ", ".join(sorted(verified)))
    return 0


if __name__ == "__main__":
    what = sys.argv[1]
    if what == "cyclonedx":
        sys.exit(cyclonedx(sys.argv[2]))
    if what == "dsse":
        sys.exit(dsse(sys.argv[2], sys.argv[3]))
    sys.exit(f"unknown check {what}")
