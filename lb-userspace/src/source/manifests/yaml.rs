//! The YAML reader (serde-saphyr, the reader kube-client uses) and the
//! shape of its messages: one line each, with the field path and the line
//! of the file, because problems end up in logs and in `--dry-run` output.

use serde::de::DeserializeOwned;
use serde_json::Value;
use serde_saphyr::{
    DefaultMessageFormatter, MessageFormatter, NonFiniteFloatPolicy, SnippetMode,
    budget::BudgetBreach,
};

use crate::model::ProblemCode;

/// Why the reader refused a document: the problem's code, and its message.
#[derive(Debug)]
pub(super) struct YamlError {
    pub code: ProblemCode,
    pub message: String,
}

/// One document of a file, and the file line it starts on, so messages
/// name the file's lines rather than the document's.
#[derive(Clone, Copy)]
pub(super) struct DocumentText<'a> {
    pub text: &'a str,
    pub first_line: usize,
}

/// Reads a document without a schema, to look at its apiVersion and kind
/// (and at a List's items). Without a schema, YAML 1.1 would read
/// `namespace: n` as `false`: only `true` and `false` are booleans here,
/// numeric-looking spellings (`0755`, `1_000`) stay strings and `.inf`
/// stays text, so that this untyped look neither rejects nor changes what
/// the typed read of the same text accepts.
///
/// This untyped read is the first of each document, so it is the one that
/// enforces `max_depth` and the reader's budget (aliases, nodes: what a
/// YAML bomb exhausts).
pub(super) fn parse_value(doc: DocumentText<'_>, max_depth: usize) -> Result<Value, YamlError> {
    let options = serde_saphyr::options! {
        with_snippet: false,
        budget: serde_saphyr::budget! {
            max_depth: max_depth,
            flow_nesting_limit: max_depth,
        },
        strict_booleans: true,
        leading_zero_numbers_as_strings: true,
        underscored_numbers_as_strings: true,
        non_finite_float_policy: NonFiniteFloatPolicy::AsString,
    };
    serde_saphyr::from_str_with_options(doc.text, options).map_err(|err| YamlError {
        code: code_of(&err),
        message: located(&err, doc),
    })
}

/// A breached depth or budget is told apart from a syntax error, so that
/// `lb status` and the metric say which limit a file hit. The breach may
/// come wrapped (an alias's error names where it was defined and used), so
/// the message, which always names it, is what is matched.
fn code_of(err: &serde_saphyr::Error) -> ProblemCode {
    if let serde_saphyr::Error::Budget { breach, .. } = err.without_snippet() {
        return match breach {
            BudgetBreach::Depth { .. } => ProblemCode::TooDeep,
            _ => ProblemCode::YamlBudget,
        };
    }
    let message = err.to_string();
    if message.contains("budget breached: Depth") || message.contains("recursion limit") {
        // The latter: the scanner's own cap on nested flow collections.
        ProblemCode::TooDeep
    } else if message.contains("budget breached") {
        ProblemCode::YamlBudget
    } else {
        ProblemCode::InvalidYaml
    }
}

/// Reads a typed object from a document's text: errors carry the field path
/// and the file line.
pub(super) fn from_document<T: DeserializeOwned>(doc: DocumentText<'_>) -> Result<T, String> {
    typed(doc.text, |err| located(err, doc))
}

/// Reads a typed object from a document already parsed into `value`
/// (`parse_value`): straight from the value when its types match the
/// object's exactly, so a document is scanned once, not twice (the second
/// scan was a third of a full sync's CPU at 10,000 Services); otherwise
/// from the text, as [`from_document`], where YAML's reading of plain
/// scalars applies (`version: 2` into a string field is "2") and an error
/// carries the field path and the file line. A value that deserializes
/// reads as its text would: the value's scalars are the text's, typed by
/// the same reader, and a scalar of another type fails here and is read
/// from the text.
pub(super) fn from_parsed_document<T: DeserializeOwned>(
    value: &Value,
    doc: DocumentText<'_>,
) -> Result<T, String> {
    T::deserialize(value).or_else(|_| from_document(doc))
}

/// Reads a typed object from a List item. The item is written back as YAML
/// rather than converted from the JSON value, so that YAML's reading of
/// plain scalars still applies (`version: 1.2` into a string field is the
/// string "1.2", as in a document of its own). Line numbers of that
/// re-written text would mislead, so the message has none.
/// As for a document, the value is read directly when its types match.
pub(super) fn from_value<T: DeserializeOwned>(value: &Value) -> Result<T, String> {
    if let Ok(object) = T::deserialize(value) {
        return Ok(object);
    }
    let text = serde_saphyr::to_string(value).map_err(|err| err.to_string())?;
    typed(&text, message_only)
}

/// Deserializes `T`; an error names the field path where it arose and
/// `render`s the reader's message.
fn typed<T: DeserializeOwned>(
    text: &str,
    render: impl FnOnce(&serde_saphyr::Error) -> String,
) -> Result<T, String> {
    let mut path = None;
    let options = serde_saphyr::options! { with_snippet: false };
    serde_saphyr::with_deserializer_from_str_with_options(text, options, |de| {
        serde_path_to_error::deserialize(de).map_err(|err| {
            // An empty path (an error at the top) would print as ".".
            if err.path().iter().next().is_some() {
                path = Some(err.path().to_string());
            }
            err.into_inner()
        })
    })
    .map_err(|err| match path {
        Some(path) => format!("{path}: {}", render(&err)),
        None => render(&err),
    })
}

/// The message with the file's line and column ("... at line 8, column 11").
fn located(err: &serde_saphyr::Error, doc: DocumentText<'_>) -> String {
    for_users(err.render_with_options(serde_saphyr::render_options! {
        snippets: SnippetMode::Off,
        line_offset: doc.first_line.saturating_sub(1) as u64,
    }))
}

/// The reader's advice to programmers ("set DuplicateKeyPolicy in Options
/// if acceptable") is no advice to a user, who must fix the file.
fn for_users(message: String) -> String {
    message.replace(", set DuplicateKeyPolicy in Options if acceptable", "")
}

/// The message without any location. Called directly, the formatter does
/// not neutralize control characters as rendering does, so do it here.
fn message_only(err: &serde_saphyr::Error) -> String {
    for_users(
        DefaultMessageFormatter
            .format_message(err)
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect(),
    )
}
