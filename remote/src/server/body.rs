//! The body type of every response the cache server sends, HTTP or gRPC.

use std::io;

use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Empty};

pub type Body = UnsyncBoxBody<Bytes, io::Error>;

pub(super) fn empty() -> Body {
    Empty::<Bytes>::new()
        .map_err(|never| match never {})
        .boxed_unsync()
}
