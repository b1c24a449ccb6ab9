//! Compression: deterministic encoders, and decoders chosen by magic bytes
//! (the one place that knows them).
//!
//! gzip is written without a file name or timestamp; zstd always uses its
//! multithreaded mode, whose frames do not depend on the number of worker
//! threads; xz is single-threaded. The same input, level and codec give the
//! same bytes on every machine.

use std::io::{self, BufRead, BufReader, Read, Write};

use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    None,
    #[default]
    Gzip,
    Zstd,
    Xz,
}

impl Compression {
    /// The usual file-name suffix.
    pub fn extension(self) -> &'static str {
        match self {
            Compression::None => "",
            Compression::Gzip => ".gz",
            Compression::Zstd => ".zst",
            Compression::Xz => ".xz",
        }
    }

    pub fn default_level(self) -> i32 {
        match self {
            Compression::None => 0,
            Compression::Gzip => 9,
            Compression::Zstd => 19,
            Compression::Xz => 6,
        }
    }

    /// The levels a codec accepts.
    pub fn levels(self) -> std::ops::RangeInclusive<i32> {
        match self {
            Compression::None => 0..=0,
            Compression::Gzip => 1..=9,
            Compression::Zstd => 1..=22,
            Compression::Xz => 0..=9,
        }
    }

    /// Compresses everything `produce` writes into `out`, and returns `out`.
    pub fn encode<W: Write>(
        self,
        level: i32,
        out: W,
        produce: impl FnOnce(&mut dyn Write) -> io::Result<()>,
    ) -> io::Result<W> {
        match self {
            Compression::None => {
                let mut out = out;
                produce(&mut out)?;
                Ok(out)
            }
            Compression::Gzip => {
                let mut enc = flate2::GzBuilder::new()
                    .mtime(0)
                    .write(out, flate2::Compression::new(level as u32));
                produce(&mut enc)?;
                enc.finish()
            }
            Compression::Zstd => {
                let mut enc = zstd::stream::Encoder::new(out, level)?;
                let workers = std::thread::available_parallelism()
                    .map(|n| n.get() as u32)
                    .unwrap_or(1)
                    .max(1);
                enc.multithread(workers)?;
                enc.include_checksum(true)?;
                produce(&mut enc)?;
                enc.finish()
            }
            Compression::Xz => {
                let mut enc = liblzma::write::XzEncoder::new(out, level as u32);
                produce(&mut enc)?;
                enc.finish()
            }
        }
    }
}

/// A compression recognised by the magic bytes a stream starts with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compressed {
    Gzip,
    Zstd,
    Xz,
    Bzip2,
}

impl Compressed {
    /// The compression `head` (a stream's first bytes) starts with, if any.
    pub fn detect(head: &[u8]) -> Option<Compressed> {
        const MAGIC: &[(&[u8], Compressed)] = &[
            (&[0x1f, 0x8b], Compressed::Gzip),
            (&[0x28, 0xb5, 0x2f, 0xfd], Compressed::Zstd),
            (&[0xfd, b'7', b'z', b'X', b'Z', 0x00], Compressed::Xz),
            (b"BZh", Compressed::Bzip2),
        ];
        MAGIC
            .iter()
            .find(|(magic, _)| head.starts_with(magic))
            .map(|(_, c)| *c)
    }

    /// `gzip`, `zstd`, `xz`, `bzip2`.
    pub fn name(self) -> &'static str {
        match self {
            Compressed::Gzip => "gzip",
            Compressed::Zstd => "zstd",
            Compressed::Xz => "xz",
            Compressed::Bzip2 => "bzip2",
        }
    }
}

/// A decompressing reader for `input`, chosen by its first bytes: gzip,
/// zstd, xz, bzip2, or none.
pub fn decoder<'a, R: Read + 'a>(input: R) -> io::Result<Box<dyn Read + 'a>> {
    let mut buf = BufReader::with_capacity(64 * 1024, input);
    let head = buf.fill_buf()?;
    Ok(match Compressed::detect(head) {
        Some(Compressed::Gzip) => Box::new(flate2::bufread::MultiGzDecoder::new(buf)),
        Some(Compressed::Zstd) => Box::new(zstd::stream::Decoder::with_buffer(buf)?),
        Some(Compressed::Xz) => Box::new(liblzma::bufread::XzDecoder::new(buf)),
        Some(Compressed::Bzip2) => Box::new(bzip2::bufread::BzDecoder::new(buf)),
        None => Box::new(buf),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<u8> {
        (0..400_000u32)
            .flat_map(|i| (i % 251).to_le_bytes())
            .collect()
    }

    #[test]
    fn every_codec_round_trips_and_is_deterministic() {
        for c in [
            Compression::None,
            Compression::Gzip,
            Compression::Zstd,
            Compression::Xz,
        ] {
            let a = c
                .encode(c.default_level().min(9), Vec::new(), |w| {
                    w.write_all(&sample())
                })
                .unwrap();
            let b = c
                .encode(c.default_level().min(9), Vec::new(), |w| {
                    w.write_all(&sample())
                })
                .unwrap();
            assert_eq!(a, b, "{c:?}");
            let mut back = Vec::new();
            decoder(a.as_slice())
                .unwrap()
                .read_to_end(&mut back)
                .unwrap();
            assert_eq!(back, sample(), "{c:?}");
        }
    }

    #[test]
    fn zstd_frames_do_not_depend_on_the_worker_count() {
        let data = sample();
        let with = |workers: u32| {
            let mut enc = zstd::stream::Encoder::new(Vec::new(), 19).unwrap();
            enc.multithread(workers).unwrap();
            enc.include_checksum(true).unwrap();
            enc.write_all(&data).unwrap();
            enc.finish().unwrap()
        };
        assert_eq!(with(1), with(4));
        assert_eq!(with(1), with(2));
    }

    #[test]
    fn gzip_has_no_name_and_no_time() {
        let out = Compression::Gzip
            .encode(9, Vec::new(), |w| w.write_all(b"x"))
            .unwrap();
        // MTIME (bytes 4..8) is zero and FLG (byte 3) has no FNAME bit.
        assert_eq!(&out[4..8], &[0, 0, 0, 0]);
        assert_eq!(out[3] & 0x08, 0);
    }
}
