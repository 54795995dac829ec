//! Checks of deploy/Containerfile without a container engine: every stage
//! a `COPY --from` names exists before it, every COPY source exists in the
//! build context and is not excluded by the ignore file, and the builder
//! installs what `cargo xtask setup` installs (toolchain, LLVM major,
//! bpf-linker version). hadolint lints the rest.

use std::path::{Component, Path};

/// One instruction, continuation lines joined.
#[derive(Debug, PartialEq)]
pub struct Instruction {
    /// 1-based line where it starts.
    pub line: usize,
    pub keyword: String,
    pub args: String,
}

/// The instructions of a Containerfile (comments and blank lines dropped,
/// `\` continuations joined, comment lines inside them skipped).
pub fn instructions(text: &str) -> Vec<Instruction> {
    let mut out = Vec::new();
    let mut pending: Option<(usize, String)> = None;
    for (index, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.starts_with('#') || (line.is_empty() && pending.is_none()) {
            continue;
        }
        let (continues, body) = match line.strip_suffix('\\') {
            Some(body) => (true, body.trim_end()),
            None => (false, line),
        };
        let (start, mut joined) = pending.take().unwrap_or((index + 1, String::new()));
        if !joined.is_empty() {
            joined.push(' ');
        }
        joined.push_str(body);
        if continues {
            pending = Some((start, joined));
            continue;
        }
        if let Some((keyword, args)) = joined.split_once(char::is_whitespace) {
            out.push(Instruction {
                line: start,
                keyword: keyword.to_ascii_uppercase(),
                args: args.trim().to_owned(),
            });
        } else if !joined.is_empty() {
            out.push(Instruction {
                line: start,
                keyword: joined.to_ascii_uppercase(),
                args: String::new(),
            });
        }
    }
    out
}

/// Problems with stages and COPY sources; `context` is the build context
/// (the repository root), `ignored` the ignore file's patterns.
pub fn problems(text: &str, context: &Path, ignored: &[String]) -> Vec<String> {
    let mut stages: Vec<Option<String>> = Vec::new();
    let mut found = Vec::new();
    for inst in instructions(text) {
        let at = format!("Containerfile line {}", inst.line);
        match inst.keyword.as_str() {
            "FROM" => {
                let words: Vec<&str> = inst
                    .args
                    .split_whitespace()
                    .filter(|w| !w.starts_with("--"))
                    .collect();
                let name = match words.as_slice() {
                    [_, r#as, name] if r#as.eq_ignore_ascii_case("as") => {
                        Some(name.to_ascii_lowercase())
                    }
                    [_] => None,
                    _ => {
                        found.push(format!(
                            "{at}: FROM takes `image [AS name]`, not {:?}",
                            inst.args
                        ));
                        None
                    }
                };
                if let Some(name) = &name
                    && stages.iter().flatten().any(|s| s == name)
                {
                    found.push(format!("{at}: a second stage named {name:?}"));
                }
                stages.push(name);
            }
            "COPY" | "ADD" if stages.is_empty() => {
                found.push(format!("{at}: {} before any FROM", inst.keyword));
            }
            "COPY" | "ADD" => {
                found.extend(copy_problems(&at, &inst.args, &stages, context, ignored))
            }
            _ => {}
        }
    }
    if stages.is_empty() {
        found.push("Containerfile: no FROM, so no stage".to_owned());
    }
    found
}

fn copy_problems(
    at: &str,
    args: &str,
    stages: &[Option<String>],
    context: &Path,
    ignored: &[String],
) -> Vec<String> {
    let words: Vec<String> = if args.starts_with('[') {
        serde_json::from_str(args).unwrap_or_default()
    } else {
        args.split_whitespace().map(str::to_owned).collect()
    };
    let (flags, paths): (Vec<&String>, Vec<&String>) =
        words.iter().partition(|w| w.starts_with("--"));
    if paths.len() < 2 {
        return vec![format!(
            "{at}: COPY needs a source and a destination, got {args:?}"
        )];
    }
    if let Some(from) = flags.iter().find_map(|f| f.strip_prefix("--from=")) {
        let earlier = stages
            .iter()
            .flatten()
            .any(|s| s.eq_ignore_ascii_case(from))
            || from.parse::<usize>().is_ok_and(|i| i + 1 < stages.len());
        // An image reference (registry/name:tag) is also allowed by COPY --from.
        let image = from.contains('/') || from.contains(':');
        return if earlier || image {
            Vec::new()
        } else {
            vec![format!("{at}: COPY --from={from} names no earlier stage")]
        };
    }
    paths[..paths.len() - 1]
        .iter()
        .filter_map(|source| source_problem(at, source, context, ignored))
        .collect()
}

fn source_problem(at: &str, source: &str, context: &Path, ignored: &[String]) -> Option<String> {
    let relative = Path::new(source.trim_start_matches("./"));
    if relative.is_absolute() || relative.components().any(|c| c == Component::ParentDir) {
        return Some(format!(
            "{at}: COPY source {source} is outside the build context"
        ));
    }
    if source.contains(['*', '?', '[']) {
        return None;
    }
    if let Some(pattern) = ignored.iter().find(|pattern| excludes(pattern, relative)) {
        return Some(format!(
            "{at}: COPY source {source} is excluded by the ignore file's {pattern:?}"
        ));
    }
    (!context.join(relative).exists()).then(|| {
        format!(
            "{at}: COPY source {source} does not exist in the build context {}",
            context.display()
        )
    })
}

/// The ignore file's patterns (comments and blank lines dropped).
pub fn ignore_patterns(text: &str) -> Vec<String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| l.trim_end_matches('/').to_owned())
        .collect()
}

/// Whether `pattern` excludes `path` itself or a directory holding it:
/// `a/b` (a path from the context root) or `**/b` (a name at any depth).
fn excludes(pattern: &str, path: &Path) -> bool {
    match pattern.strip_prefix("**/") {
        Some(name) => path.components().any(|c| c.as_os_str() == name),
        None => path.starts_with(pattern),
    }
}

/// The builder must install what setup installs: the pinned toolchain's
/// image, the LLVM major bpf-linker links against, the same bpf-linker.
pub fn pin_problems(text: &str, channel: &str, llvm_bin: &str, bpf_linker: &str) -> Vec<String> {
    let llvm = llvm_bin
        .split('/')
        .find(|part| part.starts_with("llvm-"))
        .unwrap_or(llvm_bin);
    [
        (
            format!("rust:{channel}-"),
            "the toolchain of rust-toolchain.toml",
        ),
        (format!("{llvm}-dev"), "the LLVM setup installs"),
        (
            llvm_bin.to_owned(),
            "LLVM's bin directory on PATH, as setup sets it",
        ),
        (
            format!("bpf-linker --version \"^{bpf_linker}\""),
            "setup's bpf-linker version",
        ),
        (
            format!("--features {llvm}"),
            "bpf-linker built for that LLVM",
        ),
    ]
    .into_iter()
    .filter(|(needle, _)| !text.contains(needle.as_str()))
    .map(|(needle, what)| format!("Containerfile: no {needle:?} ({what})"))
    .collect()
}

/// The `channel` rust-toolchain.toml pins.
pub fn toolchain_channel(toml: &str) -> Option<String> {
    toml.lines().find_map(|line| {
        let value = line
            .trim()
            .strip_prefix("channel")?
            .trim()
            .strip_prefix('=')?;
        Some(value.trim().trim_matches('"').to_owned())
    })
}
