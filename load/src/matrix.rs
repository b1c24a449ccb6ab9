//! Phase 1, load, for several configurations at once: `--matrix VAR=A,B`.
//!
//! A *configuration* gives each matrix variable one value. The workspace is
//! loaded once per configuration, as `--var VAR=A` and `--var VAR=B` would
//! load it: includes, `when:` and every `${var}` may depend on the value
//! (`include: ["arch/${arch}/*.yaml"]`), as Nix evaluates a flake once per
//! system. `plan` then merges the configurations into one graph, where a
//! target whose definition does not depend on the values is one node.
//!
//! Several `--matrix` flags build the product of their values, the first
//! flag varying slowest. A configuration's outputs go to
//! `<out>/<value>[/<value>...]/<target>/`, as BuildKit's local exporter
//! splits a multi-platform build into one folder per platform.

use std::sync::Arc;

use miette::SourceSpan;

use crate::diag::{At, did_you_mean};
use crate::{ConfigError, LoadOptions, Workspace, declarations, is_matrix_value, is_var_name};

/// `--matrix` (and the `--var` flags beside it) as given.
#[derive(Clone, Debug, Default)]
pub struct MatrixRequest {
    /// The flags written out as one command line, for diagnostics that
    /// point into it.
    line: Arc<String>,
    axes: Vec<AxisRequest>,
}

#[derive(Clone, Debug)]
struct AxisRequest {
    var: String,
    var_span: SourceSpan,
    /// `None`: every value `matrix:` lists for the variable.
    values: Option<Vec<(String, SourceSpan)>>,
}

/// One value for each matrix variable, in the order of the flags.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Configuration {
    pub values: Vec<(String, String)>,
}

impl Configuration {
    /// The folder of its outputs inside the output folder: the values
    /// joined by `/` (empty without a matrix).
    pub fn path(&self) -> String {
        self.values
            .iter()
            .map(|(_, v)| v.as_str())
            .collect::<Vec<_>>()
            .join("/")
    }

    /// `arch=x86_64`, `arch=x86_64 flavor=debug`.
    pub fn describe(&self) -> String {
        self.values
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

impl MatrixRequest {
    /// Reads `--matrix VAR=A,B` / `--matrix VAR` flags and checks them with
    /// the `--var` flags: a variable given twice with different values, or
    /// by both `--var` and `--matrix`, is a conflict.
    pub fn parse(
        matrix: &[String],
        vars: &[(String, String)],
    ) -> Result<MatrixRequest, Vec<ConfigError>> {
        let mut line = String::new();
        let mut var_spans: Vec<(String, String, SourceSpan)> = Vec::new();
        for (name, value) in vars {
            if !line.is_empty() {
                line.push(' ');
            }
            line.push_str("--var ");
            let start = line.len();
            line.push_str(&format!("{name}={value}"));
            var_spans.push((name.clone(), value.clone(), (start, name.len()).into()));
        }
        let mut raw_axes: Vec<(usize, &str)> = Vec::new();
        for spec in matrix {
            if !line.is_empty() {
                line.push(' ');
            }
            line.push_str("--matrix ");
            raw_axes.push((line.len(), spec.as_str()));
            line.push_str(spec);
        }
        let line = Arc::new(line);
        let at = |span: SourceSpan, message: String, label: &str, help: String| {
            command_line_error(&line, span, message, label, help)
        };
        let mut errors = Vec::new();
        for (i, (name, value, span)) in var_spans.iter().enumerate() {
            if let Some((_, first, _)) = var_spans[..i]
                .iter()
                .find(|(n, v, _)| n == name && v != value)
            {
                errors.push(at(
                    *span,
                    format!("`--var {name}` is given twice, as `{first}` and as `{value}`"),
                    "given again here",
                    format!(
                        "give `{name}` once; to build several values in one invocation, use `--matrix {name}={first},{value}`"
                    ),
                ));
            }
        }
        let mut axes: Vec<AxisRequest> = Vec::new();
        for (offset, spec) in raw_axes {
            let (var, values) = match spec.split_once('=') {
                Some((var, values)) => (var, Some(values)),
                None => (spec, None),
            };
            let var_span: SourceSpan = (offset, var.len()).into();
            if !is_var_name(var) {
                errors.push(at(
                    var_span,
                    format!("`--matrix {spec}`: `{var}` is not a variable name"),
                    "not a variable name",
                    "write `--matrix VAR=VALUE,VALUE` (every value), or `--matrix VAR` for the values `matrix:` lists in BUILD.yaml".into(),
                ));
                continue;
            }
            if axes.iter().any(|a| a.var == var) {
                errors.push(at(
                    var_span,
                    format!("`--matrix {var}` is given twice"),
                    "given again here",
                    format!("list every value of `{var}` in one flag: `--matrix {var}=A,B`"),
                ));
                continue;
            }
            if let Some((_, value, _)) = var_spans.iter().find(|(n, _, _)| n == var) {
                errors.push(at(
                    var_span,
                    format!("`{var}` is given by both `--var {var}={value}` and `--matrix`"),
                    "also set by --var",
                    format!(
                        "a matrix variable takes each of its values in turn: drop `--var {var}`, or drop `--matrix {var}` to build `{value}` alone"
                    ),
                ));
                continue;
            }
            let values = match values {
                None => None,
                Some(text) => {
                    let mut list: Vec<(String, SourceSpan)> = Vec::new();
                    let mut start = offset + var.len() + 1;
                    for value in text.split(',') {
                        let span: SourceSpan = (start, value.len().max(1)).into();
                        start += value.len() + 1;
                        if !is_matrix_value(value) {
                            errors.push(at(
                                span,
                                if value.is_empty() {
                                    format!("`--matrix {spec}` has an empty value")
                                } else {
                                    format!("`{value}` cannot be a matrix value")
                                },
                                "not a plain name",
                                "values are separated by commas, and each names the folder `out/<value>/` of its outputs: letters, digits, `.`, `_` and `-`, starting with a letter, digit or `_`".into(),
                            ));
                        } else if list.iter().any(|(v, _)| v == value) {
                            errors.push(at(
                                span,
                                format!("`--matrix {var}` lists `{value}` twice"),
                                "listed again here",
                                "each value is built once; list it once".into(),
                            ));
                        } else {
                            list.push((value.to_string(), span));
                        }
                    }
                    Some(list)
                }
            };
            axes.push(AxisRequest {
                var: var.to_string(),
                var_span,
                values,
            });
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(MatrixRequest { line, axes })
    }

    /// Whether no `--matrix` was given: a plain build of one configuration.
    pub fn is_empty(&self) -> bool {
        self.axes.is_empty()
    }

    /// The configurations to build, checked against the root file's
    /// `vars:` and `matrix:`: the product of the values, or the single
    /// empty configuration without `--matrix`.
    pub fn configurations(
        &self,
        build_file: &std::path::Path,
        options: &LoadOptions,
    ) -> Result<Vec<Configuration>, Vec<ConfigError>> {
        if self.is_empty() {
            return Ok(vec![Configuration::default()]);
        }
        let declared = declarations(build_file, options)?;
        let mut errors = Vec::new();
        let mut axes: Vec<(String, Vec<String>)> = Vec::new();
        for axis in &self.axes {
            let var = &axis.var;
            if !declared.vars.contains_key(var) {
                let names = declared.vars.keys().map(String::as_str);
                let hint = match did_you_mean(var, names) {
                    Some(h) => h,
                    None if declared.vars.is_empty() => {
                        "the root BUILD.yaml declares no variable; declare this one under `vars:` with the value a plain build uses".into()
                    }
                    None => format!(
                        "the root BUILD.yaml declares {}; a matrix variable must be declared under `vars:`, with the value a plain build uses",
                        declared
                            .vars
                            .keys()
                            .map(|v| format!("`{v}`"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                };
                errors.push(command_line_error(
                    &self.line,
                    axis.var_span,
                    format!("`--matrix {var}`: the workspace declares no variable `{var}`"),
                    "not a variable of the workspace",
                    hint,
                ));
                continue;
            }
            let listed = declared.matrix.iter().find(|a| &a.var == var);
            let place = |loc| {
                At {
                    sources: &declared.sources,
                }
                .error(loc, "", "", None)
                .place
                .unwrap_or_default()
            };
            let values: Vec<String> = match (&axis.values, listed) {
                (None, Some(listed)) => listed.names().iter().map(|v| v.to_string()).collect(),
                (None, None) => {
                    errors.push(command_line_error(
                        &self.line,
                        axis.var_span,
                        format!(
                            "`--matrix {var}` builds the values `matrix:` lists for `{var}`, and BUILD.yaml lists none"
                        ),
                        "no values listed",
                        format!(
                            "name the values: `--matrix {var}=A,B`, or list them in the root BUILD.yaml: `matrix: {{{var}: [A, B]}}`"
                        ),
                    ));
                    continue;
                }
                (Some(given), None) => given.iter().map(|(v, _)| v.clone()).collect(),
                (Some(given), Some(listed)) => {
                    let names = listed.names();
                    for (value, span) in given {
                        if names.contains(&value.as_str()) {
                            continue;
                        }
                        let suggestion = did_you_mean(value, names.iter().copied())
                            .map(|h| format!("{h} "))
                            .unwrap_or_default();
                        errors.push(command_line_error(
                            &self.line,
                            *span,
                            format!("`{value}` is not one of the values of `{var}`"),
                            "unknown value",
                            format!(
                                "{suggestion}`matrix:` at {} lists {} for `{var}`",
                                place(listed.values_loc),
                                names.join(", ")
                            ),
                        ));
                    }
                    given.iter().map(|(v, _)| v.clone()).collect()
                }
            };
            axes.push((var.clone(), values));
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        let mut configs = vec![Configuration::default()];
        for (var, values) in &axes {
            configs = configs
                .into_iter()
                .flat_map(|c| {
                    values.iter().map(move |v| {
                        let mut c = c.clone();
                        c.values.push((var.clone(), v.clone()));
                        c
                    })
                })
                .collect();
        }
        Ok(configs)
    }
}

/// Loads the workspace once per configuration. An error found in every
/// configuration is reported once, as it is; one found in some only says
/// in which (`with arch=armv7: include pattern ... matches no file`).
pub fn load_each(
    build_file: &std::path::Path,
    options: &LoadOptions,
    configs: &[Configuration],
) -> Result<Vec<Workspace>, Vec<ConfigError>> {
    let mut loaded = Vec::new();
    // Each distinct error with the configurations it appeared in.
    let mut errors: Vec<(ConfigError, Vec<usize>)> = Vec::new();
    for (i, config) in configs.iter().enumerate() {
        let mut opts = options.clone();
        opts.var_overrides.extend(config.values.iter().cloned());
        match crate::load(build_file, &opts) {
            Ok(ws) => loaded.push(ws),
            Err(found) => {
                for e in found {
                    match errors.iter_mut().find(|(x, _)| same_error(x, &e)) {
                        Some((_, seen_in)) => seen_in.push(i),
                        None => errors.push((e, vec![i])),
                    }
                }
            }
        }
    }
    if errors.is_empty() {
        return Ok(loaded);
    }
    Err(errors
        .into_iter()
        .map(|(mut e, seen_in)| {
            if seen_in.len() < configs.len() {
                let which: Vec<String> = seen_in.iter().map(|&i| configs[i].describe()).collect();
                e.message = format!("with {}: {}", which.join(", "), e.message);
            }
            e
        })
        .collect())
}

fn same_error(a: &ConfigError, b: &ConfigError) -> bool {
    a.message == b.message && a.place == b.place && a.label == b.label
}

/// A diagnostic pointing into the command line.
fn command_line_error(
    line: &Arc<String>,
    span: SourceSpan,
    message: String,
    label: &str,
    help: String,
) -> ConfigError {
    ConfigError::on_command_line(line, span, message, label, help)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(matrix: &[&str], vars: &[(&str, &str)]) -> Result<MatrixRequest, Vec<ConfigError>> {
        let matrix: Vec<String> = matrix.iter().map(|s| s.to_string()).collect();
        let vars: Vec<(String, String)> = vars
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect();
        MatrixRequest::parse(&matrix, &vars)
    }

    fn messages(r: Result<MatrixRequest, Vec<ConfigError>>) -> Vec<String> {
        r.err()
            .unwrap()
            .into_iter()
            .map(|e| format!("{} @ {}", e.message, e.place.unwrap()))
            .collect()
    }

    #[test]
    fn values_and_axes_are_read_in_order() {
        let r = parse(&["arch=x86_64,aarch64", "flavor"], &[("v", "1")]).unwrap();
        assert_eq!(r.axes.len(), 2);
        assert_eq!(r.axes[0].var, "arch");
        let values: Vec<&str> = r.axes[0]
            .values
            .as_ref()
            .unwrap()
            .iter()
            .map(|(v, _)| v.as_str())
            .collect();
        assert_eq!(values, ["x86_64", "aarch64"]);
        assert!(r.axes[1].values.is_none());
        // The spans point at the values in the written-out command line.
        let (_, span) = &r.axes[0].values.as_ref().unwrap()[1];
        assert_eq!(
            &r.line[span.offset()..span.offset() + span.len()],
            "aarch64"
        );
    }

    #[test]
    fn conflicts_and_bad_values_point_into_the_command_line() {
        assert_eq!(
            messages(parse(&["arch=x86_64"], &[("arch", "aarch64")])),
            [
                "`arch` is given by both `--var arch=aarch64` and `--matrix` @ command line, column 29"
            ]
        );
        assert_eq!(
            messages(parse(&[], &[("a", "1"), ("a", "2")])),
            ["`--var a` is given twice, as `1` and as `2` @ command line, column 17"]
        );
        // The same value twice is no conflict.
        assert!(parse(&[], &[("a", "1"), ("a", "1")]).is_ok());
        assert_eq!(
            messages(parse(&["arch=x86_64,,a/b,x86_64"], &[])),
            [
                "`--matrix arch=x86_64,,a/b,x86_64` has an empty value @ command line, column 22",
                "`a/b` cannot be a matrix value @ command line, column 23",
                "`--matrix arch` lists `x86_64` twice @ command line, column 27",
            ]
        );
        assert_eq!(
            messages(parse(&["arch=a", "arch=b"], &[])),
            ["`--matrix arch` is given twice @ command line, column 26"]
        );
        assert_eq!(
            messages(parse(&["9x=a"], &[])),
            ["`--matrix 9x=a`: `9x` is not a variable name @ command line, column 10"]
        );
    }

    #[test]
    fn a_configuration_names_its_folder_and_itself() {
        let c = Configuration {
            values: vec![
                ("arch".into(), "x86_64".into()),
                ("flavor".into(), "debug".into()),
            ],
        };
        assert_eq!(c.path(), "x86_64/debug");
        assert_eq!(c.describe(), "arch=x86_64 flavor=debug");
        assert_eq!(Configuration::default().path(), "");
    }
}
