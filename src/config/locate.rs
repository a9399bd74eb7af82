//! Where a problem is in the file: TOML spans turned into `line:col` and dotted keys, so that
//! every error from the file says where to look.

use std::ops::Range;
use std::path::Path;

use super::validate::Invalid;
use super::{ConfigError, one_line};

/// The parsed file, to turn spans into `line:col` and dotted keys.
pub(super) struct Source<'a, 'i> {
    pub(super) file: &'a Path,
    pub(super) text: &'a str,
    pub(super) doc: &'a toml::de::DeTable<'i>,
}

impl Source<'_, '_> {
    /// An error from deserializing the raw shape: unknown key or wrong type.
    pub(super) fn shape_error(&self, e: &toml::de::Error) -> ConfigError {
        let span = e.span();
        let key = span
            .as_ref()
            .and_then(|span| path_at(self.doc, span.start))
            .map(|path| path.join("."))
            .unwrap_or_else(|| "(document)".to_owned());
        // Serde says "field"; in TOML it is a key.
        let problem = one_line(e.message()).replacen("unknown field", "unknown key", 1);
        ConfigError::Invalid {
            file: self.file.to_path_buf(),
            location: span.map(|span| line_col(self.text, span.start)),
            key,
            problem,
        }
    }

    /// A validation error, placed at the key in the file or attributed to the variable that
    /// set it.
    pub(super) fn validation_error(
        &self,
        e: Invalid,
        overridden: &[(String, String)],
    ) -> ConfigError {
        if let Some((_, var)) = overridden.iter().find(|(key, _)| *key == e.key) {
            return ConfigError::Env {
                var: var.clone(),
                problem: e.problem,
            };
        }
        ConfigError::Invalid {
            file: self.file.to_path_buf(),
            location: span_of(self.doc, &e.key).map(|span| line_col(self.text, span.start)),
            key: e.key,
            problem: e.problem,
        }
    }
}

pub(super) fn syntax_error(file: &Path, text: &str, e: &toml::de::Error) -> ConfigError {
    let (line, column) = line_col(text, e.span().map_or(0, |span| span.start));
    ConfigError::Syntax {
        file: file.to_path_buf(),
        line,
        column,
        message: one_line(e.message()),
    }
}

/// 1-based line and column (in characters) of a byte offset.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let (mut line, mut column) = (1, 1);
    for (i, c) in text.char_indices() {
        if i >= offset {
            break;
        }
        if c == '\n' {
            line += 1;
            column = 1;
        } else {
            column += 1;
        }
    }
    (line, column)
}

fn span_contains(span: &Range<usize>, offset: usize) -> bool {
    span.contains(&offset) || (span.is_empty() && span.start == offset)
}

/// The deepest key whose name or value covers `offset` (the key of an unknown field, or the
/// value of a wrong type), as path segments.
fn path_at(table: &toml::de::DeTable<'_>, offset: usize) -> Option<Vec<String>> {
    let mut best: Option<Vec<String>> = None;
    for (key, value) in table.iter() {
        let candidate = match path_in_value(value.get_ref(), offset) {
            Some(mut inner) => {
                inner.insert(0, key.get_ref().to_string());
                Some(inner)
            }
            None if span_contains(&key.span(), offset) || span_contains(&value.span(), offset) => {
                Some(vec![key.get_ref().to_string()])
            }
            None => None,
        };
        let longer =
            |candidate: &Vec<String>| best.as_ref().is_none_or(|b| candidate.len() > b.len());
        if let Some(candidate) = candidate.filter(longer) {
            best = Some(candidate);
        }
    }
    best
}

fn path_in_value(value: &toml::de::DeValue<'_>, offset: usize) -> Option<Vec<String>> {
    match value {
        toml::de::DeValue::Table(table) => path_at(table, offset),
        toml::de::DeValue::Array(items) => items
            .iter()
            .find_map(|item| path_in_value(item.get_ref(), offset)),
        _ => None,
    }
}

/// Where a dotted key is in the file: its value, or the nearest table on its path that is
/// there (`server.tls.key` missing → the `[server.tls]` header).
fn span_of(doc: &toml::de::DeTable<'_>, dotted: &str) -> Option<Range<usize>> {
    let mut table = doc;
    let mut found = None;
    let mut segments = dotted.split('.').peekable();
    while let Some(segment) = segments.next() {
        let Some((key, value)) = table.iter().find(|(key, _)| key.get_ref() == segment) else {
            break;
        };
        found = Some(if segments.peek().is_none() {
            value.span()
        } else {
            key.span()
        });
        match value.get_ref() {
            toml::de::DeValue::Table(inner) => table = inner,
            _ => break,
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use crate::config::test_support::*;

    #[test]
    fn an_unknown_key_is_named_with_its_line_and_column() {
        let message = error("[server]\nlisen = \"0.0.0.0:8443\"\n");
        assert_contains(
            &message,
            "/etc/linkpush/linkpush.toml:2:1: server.lisen: unknown key `lisen`",
        );

        let message = error("[upstream]\nurl = \"http://a\"\n\n[serve]\n");
        assert_contains(&message, "linkpush.toml:4:2: serve: unknown key `serve`");

        let message = error("server.tls.certificate = \"c.pem\"");
        assert_contains(
            &message,
            "linkpush.toml:1:12: server.tls.certificate: unknown key",
        );

        let message = error("[log]\nlevel = \"info\"\n  colour = true\n");
        assert_contains(&message, "linkpush.toml:3:3: log.colour: unknown key");
    }

    #[test]
    fn a_syntax_error_is_file_line_col() {
        let message = error("[server]\nlisten = [\"0.0.0.0:8443\",\n");
        assert!(
            message.starts_with("/etc/linkpush/linkpush.toml:2:26: unclosed array"),
            "{message}"
        );
        assert!(!message.contains('\n'), "{message:?}");

        let message = error("[push]\nenabled = tru\n");
        assert!(
            message.starts_with("/etc/linkpush/linkpush.toml:2:11: "),
            "{message}"
        );

        let message = error("[log]\nlevel = \"info\"\nlevel = \"debug\"\n");
        assert!(
            message.starts_with("/etc/linkpush/linkpush.toml:3:1: "),
            "{message}"
        );
    }
}
