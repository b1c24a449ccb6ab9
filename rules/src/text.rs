/// A string as the step sees it, paired with the form that enters keys and
/// records. They differ only where a secret (a value read with `!ENV`) was
/// interpolated: the keyed form carries a hash of the secret instead of it.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Text {
    /// What the step receives.
    pub actual: String,
    /// What keys, the store and every printed message may contain.
    pub keyed: String,
}

impl Text {
    /// Text without any secret in it.
    pub fn plain(s: impl Into<String>) -> Text {
        let s = s.into();
        Text {
            actual: s.clone(),
            keyed: s,
        }
    }

    pub fn has_secret(&self) -> bool {
        self.actual != self.keyed
    }
}
