//! The fields SBOMs need from Debian files: a binary package's `control`
//! (read from the .deb's `control.tar.*`) and a source package's `.dsc`.
//! Hostile input is an error, never a panic; only the control member is
//! decompressed (and at most `MAX_CONTROL` bytes of it are read).

use std::io::Read;

/// The most a control archive may unpack to.
const MAX_CONTROL: u64 = 16 << 20;

/// What SBOMs say about a binary package.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Control {
    pub package: String,
    pub version: String,
    pub architecture: String,
    /// `Source:` without a version, or the package name.
    pub source: String,
    pub source_version: Option<String>,
}

/// Whether `head` begins like a .deb (an `ar` archive).
pub fn looks_like_deb(head: &[u8]) -> bool {
    head.starts_with(b"!<arch>\n")
}

/// The control fields of the .deb `bytes`.
pub fn control(bytes: &[u8]) -> Result<Control, String> {
    let member = ar_member(bytes, "control.tar")?;
    let decoder =
        strata_formats::compress::decoder(member).map_err(|e| format!("control.tar: {e}"))?;
    let mut archive = tar::Archive::new(decoder.take(MAX_CONTROL));
    let entries = archive.entries().map_err(|e| format!("control.tar: {e}"))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| format!("control.tar: {e}"))?;
        let path = entry
            .path()
            .map_err(|e| format!("control.tar: {e}"))?
            .to_string_lossy()
            .into_owned();
        if path.trim_start_matches("./") == "control" {
            let mut text = String::new();
            entry
                .read_to_string(&mut text)
                .map_err(|e| format!("control: {e}"))?;
            return parse_control(&text);
        }
    }
    Err("control.tar has no `control` file".into())
}

/// The `ar` member whose name is `prefix` or `prefix.<ext>`.
fn ar_member<'a>(bytes: &'a [u8], prefix: &str) -> Result<&'a [u8], String> {
    if !looks_like_deb(bytes) {
        return Err("not an ar archive".into());
    }
    let mut at = 8usize;
    while at + 60 <= bytes.len() {
        let header = &bytes[at..at + 60];
        let name = std::str::from_utf8(&header[..16])
            .map_err(|_| "a member name is not UTF-8".to_string())?
            .trim_end()
            .trim_end_matches('/');
        let size: usize = std::str::from_utf8(&header[48..58])
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .ok_or_else(|| format!("member `{name}` has no valid size"))?;
        let start = at + 60;
        let end = start
            .checked_add(size)
            .filter(|e| *e <= bytes.len())
            .ok_or_else(|| format!("member `{name}` runs past the end"))?;
        if name == prefix
            || name
                .strip_prefix(prefix)
                .is_some_and(|r| r.starts_with('.'))
        {
            return Ok(&bytes[start..end]);
        }
        at = end + (size % 2);
    }
    Err(format!("no `{prefix}` member"))
}

/// Fields of one deb822 paragraph: `Name: value` lines, continuation lines
/// (starting with a space) belonging to the field before.
fn fields(text: &str) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for line in text.lines() {
        if line.trim().is_empty() {
            if out.is_empty() {
                continue;
            }
            break;
        }
        if line.starts_with([' ', '\t']) {
            continue;
        }
        if let Some((name, value)) = line.split_once(':') {
            out.push((name.trim().to_ascii_lowercase(), value.trim().to_string()));
        }
    }
    out
}

fn field<'a>(fields: &'a [(String, String)], name: &str) -> Option<&'a str> {
    fields
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
        .filter(|v| !v.is_empty())
}

fn parse_control(text: &str) -> Result<Control, String> {
    let f = fields(text);
    let need = |name: &str| {
        field(&f, name)
            .map(str::to_string)
            .ok_or_else(|| format!("the control file has no `{name}` field"))
    };
    let package = need("package")?;
    let (source, source_version) = match field(&f, "source") {
        Some(s) => match s.split_once('(') {
            Some((name, version)) => (
                name.trim().to_string(),
                Some(version.trim_end_matches(')').trim().to_string()),
            ),
            None => (s.to_string(), None),
        },
        None => (package.clone(), None),
    };
    Ok(Control {
        version: need("version")?,
        architecture: need("architecture")?,
        package,
        source,
        source_version,
    })
}

/// A `.dsc`'s `Source:` and `Version:`; `None` if it has neither. A signed
/// .dsc's armour lines come before the paragraph and are skipped.
pub fn dsc(text: &str) -> Option<(String, String)> {
    let body = match text.find("\n\n") {
        Some(i) if text.starts_with("-----BEGIN PGP SIGNED MESSAGE-----") => &text[i + 2..],
        _ => text,
    };
    let f = fields(body);
    Some((
        field(&f, "source")?.to_string(),
        field(&f, "version")?.to_string(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_fields_with_a_versioned_source() {
        let c = parse_control(
            "Package: libfoo1\nSource: foo (1.2-3)\nVersion: 1.2-3+b1\nArchitecture: amd64\nDescription: x\n more\n",
        )
        .unwrap();
        assert_eq!(c.package, "libfoo1");
        assert_eq!(c.source, "foo");
        assert_eq!(c.source_version.as_deref(), Some("1.2-3"));
        assert_eq!(c.version, "1.2-3+b1");
        assert!(parse_control("Package: x\n").is_err());
    }

    #[test]
    fn hostile_debs_are_errors() {
        for bad in [
            &b""[..],
            b"!<arch>\n",
            b"!<arch>\ncontrol.tar.gz/  0           0     0     100644  99999999  `\n",
            b"!<arch>\ncontrol.tar/     0           0     0     100644  4         `\nabcd",
        ] {
            assert!(control(bad).is_err());
        }
    }

    #[test]
    fn signed_dsc() {
        let text = "-----BEGIN PGP SIGNED MESSAGE-----\nHash: SHA256\n\nFormat: 3.0 (quilt)\nSource: lshw\nVersion: 02.19-1\n\n-----BEGIN PGP SIGNATURE-----\n";
        assert_eq!(dsc(text), Some(("lshw".into(), "02.19-1".into())));
    }
}
