//! `matrix:` of the root file: the values a variable may take.
//!
//! ```yaml
//! vars:
//!   arch: x86_64
//! matrix:
//!   arch: [x86_64, aarch64]
//! ```
//!
//! The declaration does not change what a plain build does (the variable
//! keeps its value from `vars:` or `--var`); it names the values a value
//! must be one of, wherever it comes from, and the ones `--matrix arch`
//! builds together (`crate::matrix`). A value names a folder of the output
//! folder (`out/<value>/<target>`), so it is a plain name.

use serde_saphyr::Spanned;

use super::diag::did_you_mean;
use super::schema::RawMatrix;
use super::{FileIds, LoadOptions, Loader, Loc, Located, Vars};

/// A variable of the root file's `vars:`.
#[derive(Clone, Copy, Debug)]
pub struct DeclaredVar {
    /// Where its name is written.
    pub loc: Loc,
    /// Where its value is written.
    pub value_loc: Loc,
    /// Read with `!ENV`: a secret, never shown.
    pub from_env: bool,
}

/// One entry of `matrix:`: a variable and the values it may take.
#[derive(Clone, Debug)]
pub struct MatrixAxis {
    pub var: String,
    /// Where the variable is named in `matrix:`.
    pub loc: Loc,
    /// Where its list of values is written.
    pub values_loc: Loc,
    pub values: Vec<Located<String>>,
}

impl MatrixAxis {
    pub fn names(&self) -> Vec<&str> {
        self.values.iter().map(|v| v.value.as_str()).collect()
    }
}

/// Whether `value` may be a matrix value: it names a folder of the output
/// folder, so letters, digits, `.`, `_` and `-`, not starting with `.` or
/// `-` (no `..`, no option look-alike).
pub fn is_matrix_value(value: &str) -> bool {
    let mut chars = value.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphanumeric() || c == '_')
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

impl Loader {
    /// Reads and checks `matrix:`: every entry names a plain variable of
    /// `vars:` and lists distinct, plain values, one of which is the
    /// variable's value now.
    pub(super) fn matrix(
        &mut self,
        raw: Option<Spanned<RawMatrix>>,
        ids: &FileIds,
        vars: &Vars,
        options: &LoadOptions,
    ) -> Vec<MatrixAxis> {
        let Some(raw) = raw else {
            return Vec::new();
        };
        let mut axes: Vec<MatrixAxis> = Vec::new();
        for (name, list) in raw.value.0 {
            let loc = ids.at(&name);
            let values_loc = ids.at(&list);
            let var = name.value;
            if let Some(first) = axes.iter().find(|a| a.var == var) {
                let place = self.place(first.loc);
                let e = self.at().error(
                    loc,
                    format!("`matrix` lists `{var}` twice"),
                    "listed again here",
                    Some(format!(
                        "`{var}` is first listed at {place}; give all its values in one list"
                    )),
                );
                self.errors.push(e);
                continue;
            }
            let Some(declared) = self.declared_vars.get(&var).copied() else {
                let hint = did_you_mean(&var, self.declared_vars.keys().map(String::as_str))
                    .unwrap_or_else(|| {
                        format!(
                            "declare it under `vars:` with the value a plain build uses, such as `{var}: {}`",
                            list.value.first().map(|v| v.value.as_str()).unwrap_or("x86_64")
                        )
                    });
                let e = self.at().error(
                    loc,
                    format!("`matrix` names `{var}`, which `vars:` does not declare"),
                    "not a variable",
                    Some(hint),
                );
                self.errors.push(e);
                continue;
            };
            if declared.from_env {
                let e = self.at().error(
                    declared.value_loc,
                    format!("`{var}` is read with `!ENV`, so it cannot be a matrix variable"),
                    "read from the environment",
                    Some(format!(
                        "a matrix value names a folder in the output folder and is shown, and `!ENV` values are secrets; give `{var}` a plain default and choose with `--var {var}=VALUE` or `--matrix {var}=A,B`"
                    )),
                );
                self.errors.push(e);
                continue;
            }
            if list.value.is_empty() {
                let e = self.at().error(
                    values_loc,
                    format!("`matrix` lists no value for `{var}`"),
                    "empty",
                    Some(format!(
                        "list the values `{var}` may take, such as `{var}: [x86_64, aarch64]`"
                    )),
                );
                self.errors.push(e);
                continue;
            }
            let mut values: Vec<Located<String>> = Vec::new();
            for v in list.value {
                let vloc = ids.at(&v);
                if !is_matrix_value(&v.value) {
                    let e = self.at().error(
                        vloc,
                        format!("`{}` cannot be a matrix value", v.value),
                        "not a plain name",
                        Some("a value names the folder `out/<value>/` holding that configuration's outputs: use letters, digits, `.`, `_` and `-`, starting with a letter, digit or `_`".into()),
                    );
                    self.errors.push(e);
                    continue;
                }
                if values.iter().any(|x| x.value == v.value) {
                    let e = self.at().error(
                        vloc,
                        format!("`matrix` lists `{}` twice for `{var}`", v.value),
                        "listed again here",
                        Some("each value is built once; list it once".into()),
                    );
                    self.errors.push(e);
                    continue;
                }
                values.push(Located {
                    value: v.value,
                    loc: vloc,
                });
            }
            let axis = MatrixAxis {
                var: var.clone(),
                loc,
                values_loc,
                values,
            };
            self.check_value(&axis, declared, vars, options);
            axes.push(axis);
        }
        axes
    }

    /// The variable's value now (from `vars:`, `--var` or `--matrix`) must
    /// be one of the declared values.
    fn check_value(
        &mut self,
        axis: &MatrixAxis,
        declared: DeclaredVar,
        vars: &Vars,
        options: &LoadOptions,
    ) {
        let Some(value) = vars.get(&axis.var).map(|v| v.value.clone()) else {
            return;
        };
        let names = axis.names();
        if names.contains(&value.as_str()) {
            return;
        }
        let var = &axis.var;
        let listed = names.join(", ");
        let suggestion = did_you_mean(&value, names.iter().copied())
            .map(|h| format!("{h} "))
            .unwrap_or_default();
        let e = if options.var_overrides.iter().any(|(n, _)| n == var) {
            self.at().error(
                axis.values_loc,
                format!(
                    "`{var}` is `{value}` (from the command line), which is not one of the values `matrix` lists for it"
                ),
                format!("the values `{var}` may take"),
                Some(format!(
                    "{suggestion}use one of {listed}, or add `{value}` to this list if the workspace supports it"
                )),
            )
        } else {
            self.at().error(
                declared.value_loc,
                format!("`{var}` is `{value}`, which is not one of the values `matrix` lists for it"),
                format!("not one of {listed}"),
                Some(format!(
                    "{suggestion}make the default one of {listed}, or add `{value}` to `matrix:` at {}",
                    self.place(axis.values_loc)
                )),
            )
        };
        self.errors.push(e);
    }
}

#[cfg(test)]
mod tests {
    use super::is_matrix_value;

    #[test]
    fn matrix_values_are_plain_folder_names() {
        for ok in ["x86_64", "aarch64", "arm64", "v8.2", "debug-1", "_x"] {
            assert!(is_matrix_value(ok), "{ok}");
        }
        for bad in [
            "", ".", "..", ".x", "-x", "a/b", "a,b", "a b", "x86_64\n", "é",
        ] {
            assert!(!is_matrix_value(bad), "{bad:?}");
        }
    }
}
