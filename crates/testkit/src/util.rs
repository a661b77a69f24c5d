//! Small process and file helpers shared by the modules.

use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::KitError;

/// Where system packages put the server and client programs when they are not on `PATH`
/// (Debian's `/usr/sbin` is often missing from a non-login root shell's `PATH`).
const EXTRA_DIRS: [&str; 4] = ["/usr/sbin", "/usr/bin", "/usr/local/sbin", "/usr/local/bin"];

/// Finds a program by name: `OUTFLOW_TESTKIT_<NAME>` (upper case, `-` as `_`) if set,
/// else `PATH`, else the usual system directories. Falls back to the bare name so the
/// spawn error names the program.
pub(crate) fn find_program(name: &str) -> PathBuf {
    let var = format!(
        "OUTFLOW_TESTKIT_{}",
        name.to_ascii_uppercase().replace('-', "_")
    );
    if let Some(path) = std::env::var_os(&var) {
        return PathBuf::from(path);
    }
    let path_dirs = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default();
    path_dirs
        .into_iter()
        .chain(EXTRA_DIRS.iter().map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
        .unwrap_or_else(|| PathBuf::from(name))
}

/// The effective user id of this process.
pub(crate) fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// True when this process runs as root; mariadbd then needs `--user=root` or it refuses to start.
pub(crate) fn running_as_root() -> bool {
    euid() == 0
}

/// `--user=root` when needed, nothing otherwise.
pub(crate) fn user_args() -> Vec<String> {
    if running_as_root() {
        vec!["--user=root".to_string()]
    } else {
        Vec::new()
    }
}

/// Human-readable command line for error messages.
pub(crate) fn describe(cmd: &Command) -> String {
    let mut text = cmd.get_program().to_string_lossy().into_owned();
    for arg in cmd.get_args() {
        text.push(' ');
        text.push_str(&arg.to_string_lossy());
    }
    text
}

/// The last `max` bytes of `text`, cut at a line start when possible.
pub(crate) fn tail_text(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut start = text.len() - max;
    while !text.is_char_boundary(start) {
        start += 1;
    }
    let cut = &text[start..];
    match cut.find('\n') {
        Some(nl) if nl + 1 < cut.len() => format!("...\n{}", &cut[nl + 1..]),
        _ => format!("...{cut}"),
    }
}

/// Combined stdout and stderr of a finished command, trimmed to its tail.
pub(crate) fn output_tail(output: &Output) -> String {
    let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
    let err = String::from_utf8_lossy(&output.stderr);
    if !err.trim().is_empty() {
        if !text.is_empty() && !text.ends_with('\n') {
            text.push('\n');
        }
        text.push_str(&err);
    }
    tail_text(&text, 6000)
}

/// Runs a command to completion and turns a non-zero exit into [`KitError::Command`].
pub(crate) fn run_checked(cmd: &mut Command) -> Result<Output, KitError> {
    let output = cmd.output().map_err(|source| KitError::Spawn {
        program: cmd.get_program().to_string_lossy().into_owned(),
        source,
    })?;
    if output.status.success() {
        Ok(output)
    } else {
        Err(KitError::Command {
            command: describe(cmd),
            status: output.status.to_string(),
            output: output_tail(&output),
        })
    }
}

/// The end of a log file from byte `from` on, limited to its last few kilobytes.
pub(crate) fn file_tail(path: &Path, from: u64) -> String {
    const MAX: u64 = 4000;
    let Ok(mut file) = std::fs::File::open(path) else {
        return format!("(no error log at {})", path.display());
    };
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let start = from.max(len.saturating_sub(MAX));
    let mut buf = Vec::new();
    if file.seek(SeekFrom::Start(start)).is_err() || file.read_to_end(&mut buf).is_err() {
        return format!("(error log {} unreadable)", path.display());
    }
    let text = String::from_utf8_lossy(&buf).into_owned();
    if start > from {
        tail_text(&text, MAX as usize)
    } else {
        text
    }
}

/// Recursively copies a directory tree of plain files and directories.
pub(crate) fn copy_tree(from: &Path, to: &Path) -> Result<(), KitError> {
    std::fs::create_dir_all(to).map_err(|e| KitError::io("creating", to, e))?;
    let entries =
        std::fs::read_dir(from).map_err(|e| KitError::io("reading directory", from, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| KitError::io("reading directory", from, e))?;
        let src = entry.path();
        let dst = to.join(entry.file_name());
        let kind = entry
            .file_type()
            .map_err(|e| KitError::io("inspecting", &src, e))?;
        if kind.is_dir() {
            copy_tree(&src, &dst)?;
        } else {
            std::fs::copy(&src, &dst)
                .map_err(|e| KitError::io("copying template file to", &dst, e))?;
        }
    }
    Ok(())
}

/// Removes a directory tree; one that is not there is already removed.
pub(crate) fn remove_tree(dir: &Path) -> Result<(), KitError> {
    match std::fs::remove_dir_all(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(KitError::io("removing", dir, e)),
        _ => Ok(()),
    }
}

/// Quotes a string as a SQL literal (MariaDB's default `sql_mode` treats `\` as an escape).
pub(crate) fn sql_literal(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('\'');
    for c in value.chars() {
        match c {
            '\'' => out.push_str("\\'"),
            '\\' => out.push_str("\\\\"),
            '\0' => out.push_str("\\0"),
            _ => out.push(c),
        }
    }
    out.push('\'');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_text_keeps_whole_lines() {
        let text = "first line\nsecond line\nthird line\n";
        assert_eq!(tail_text(text, 100), text);
        assert_eq!(tail_text(text, 15), "...\nthird line\n");
    }

    #[test]
    fn sql_literal_escapes_quotes_and_backslashes() {
        assert_eq!(sql_literal("a'b\\c"), "'a\\'b\\\\c'");
    }

    #[test]
    fn file_tail_reads_from_offset() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("log");
        std::fs::write(&path, "old run\nnew run\n").expect("write");
        assert_eq!(file_tail(&path, 8), "new run\n");
        assert!(file_tail(&dir.path().join("missing"), 0).contains("no error log"));
    }
}
