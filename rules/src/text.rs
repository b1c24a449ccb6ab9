/// A string as the step sees it, paired with the form that enters keys and
/// records. They differ only where a secret (a value read with `!ENV`) was
/// interpolated: the keyed form carries a hash of the secret instead of it.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Text {
    /// What the step receives.
    pub actual: String,
    /// What keys, the store and every printed message may contain.
    pub keyed: String,
    /// The secret values inside `actual`, as read from the environment: a
    /// step's logs are masked with them before anything shows or stores them.
    pub secrets: Vec<String>,
}

impl Text {
    /// Text without any secret in it.
    pub fn plain(s: impl Into<String>) -> Text {
        let s = s.into();
        Text {
            actual: s.clone(),
            keyed: s,
            secrets: Vec::new(),
        }
    }

    pub fn has_secret(&self) -> bool {
        self.actual != self.keyed
    }
}

/// The secret values a step receives through any of `texts`, longest first
/// (so a secret containing another is masked whole), each once.
pub fn secrets_of<'a>(texts: impl IntoIterator<Item = &'a Text>) -> Vec<String> {
    let mut all: Vec<String> = texts
        .into_iter()
        .flat_map(|t| t.secrets.iter().cloned())
        .collect();
    all.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
    all.dedup();
    all
}
