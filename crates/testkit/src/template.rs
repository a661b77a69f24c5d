//! The template data directory, initialised once per machine and MariaDB version.
//!
//! Layout: `<temp root>/outflow-testkit-tpl-<kit version>-<server version>-<hash>-u<euid>/`
//! holding `data/` (a data directory fresh from `mariadb-install-db`, plus the kit's superuser)
//! and the marker file `ready`.
//!
//! Invariants and recovery:
//! - A template directory only ever appears by an atomic `rename` of a fully built directory,
//!   so a reader never sees a half-built one. Builders work in a uniquely named sibling.
//! - Several processes (nextest runs each test in its own) may build at once; the first
//!   rename wins and the others throw their copy away and use the winner's.
//! - Anything that changes what a template contains must bump [`TEMPLATE_VERSION`], which is
//!   part of the name, so old templates are simply ignored.
//! - If the template is damaged (e.g. a temp cleaner removed files), it is renamed aside and
//!   rebuilt.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;

use crate::config::INNODB_LOG_FILE_SIZE;
use crate::util::{find_program, run_checked, user_args};
use crate::KitError;

/// Bump when the template's content changes (users, redo log size, install options).
pub const TEMPLATE_VERSION: u32 = 1;

/// The superuser created in every template, for TCP connections (`'outflow'@'%'`).
pub const SUPERUSER: &str = "outflow";
/// The superuser's password.
pub const SUPERUSER_PASSWORD: &str = "outflow";

const MARKER: &str = "ready";

/// Run by `mariadbd --bootstrap`, which takes one statement per line. Bootstrap starts with
/// grant tables disabled; `FLUSH PRIVILEGES` loads them so that CREATE USER works. The
/// host-specific root entries are dropped because `skip-name-resolve` warns about each one at
/// every start.
const BOOTSTRAP_SQL: &str = "FLUSH PRIVILEGES;
DELETE FROM mysql.global_priv WHERE host NOT IN ('localhost', '127.0.0.1', '::1', '%');
DELETE FROM mysql.proxies_priv WHERE host NOT IN ('localhost', '127.0.0.1', '::1', '%');
FLUSH PRIVILEGES;
CREATE USER 'outflow'@'%' IDENTIFIED BY 'outflow';
GRANT ALL PRIVILEGES ON *.* TO 'outflow'@'%' WITH GRANT OPTION;
";

/// The template path once known; guarded so threads of one process build it at most once.
static TEMPLATE: Mutex<Option<PathBuf>> = Mutex::new(None);

/// The directory under which the kit puts templates and servers.
///
/// Unix socket paths are limited to about 107 bytes, so a long `TMPDIR` is replaced by `/tmp`.
pub(crate) fn temp_root() -> PathBuf {
    let dir = std::env::temp_dir();
    if dir.as_os_str().len() <= 60 {
        dir
    } else {
        PathBuf::from("/tmp")
    }
}

/// The data directory inside the template, built if needed.
pub(crate) fn template_data_dir() -> Result<PathBuf, KitError> {
    // A panic elsewhere while holding the lock leaves the Option intact, so poisoning is safe
    // to ignore.
    let mut guard = TEMPLATE.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(dir) = guard.as_ref() {
        return Ok(dir.join("data"));
    }
    let dir = ensure_template()?;
    let data = dir.join("data");
    *guard = Some(dir);
    Ok(data)
}

fn ensure_template() -> Result<PathBuf, KitError> {
    let mariadbd = find_program("mariadbd");
    let mut version_cmd = Command::new(&mariadbd);
    version_cmd.arg("--version");
    let version = run_checked(&mut version_cmd)?;
    let version = String::from_utf8_lossy(&version.stdout).trim().to_string();
    let root = temp_root();
    let final_dir = root.join(template_name(&version));

    if is_complete(&final_dir) {
        return Ok(final_dir);
    }
    if final_dir.exists() {
        // Damaged: move it aside first, because removing in place could race with a process
        // that is copying from it right now (that copy fails and its test reports why).
        let trash = root.join(format!(
            ".outflow-testkit-trash-{}-{}",
            std::process::id(),
            unique_suffix()
        ));
        if std::fs::rename(&final_dir, &trash).is_ok() {
            // Best effort: a leftover only wastes temp space.
            let _ = std::fs::remove_dir_all(&trash);
        }
    }

    let build = tempfile::Builder::new()
        .prefix(".outflow-testkit-build-")
        .tempdir_in(&root)
        .map_err(|e| KitError::io("creating template build directory in", &root, e))?;
    build_into(build.path())?;

    match std::fs::rename(build.path(), &final_dir) {
        Ok(()) => {
            // Now owned by the final name; do not let the TempDir guard delete it.
            let _ = build.keep();
            Ok(final_dir)
        }
        Err(_) if is_complete(&final_dir) => Ok(final_dir), // another process won the race
        Err(e) => Err(KitError::io(
            "renaming template into place at",
            &final_dir,
            e,
        )),
    }
}

fn is_complete(dir: &Path) -> bool {
    let data = dir.join("data");
    dir.join(MARKER).is_file()
        && data.join("ibdata1").is_file()
        && data.join("ib_logfile0").is_file()
        && data.join("mysql").join("global_priv.MAD").is_file()
}

fn build_into(dir: &Path) -> Result<(), KitError> {
    let data = dir.join("data");
    let log_size = format!("--innodb-log-file-size={INNODB_LOG_FILE_SIZE}");

    let mut install = Command::new(find_program("mariadb-install-db"));
    install
        .arg("--no-defaults")
        .arg(format!("--datadir={}", data.display()))
        .arg("--auth-root-authentication-method=normal")
        .arg("--skip-test-db")
        .args(user_args())
        .arg(&log_size)
        .stdin(Stdio::null());
    run_checked(&mut install)?;

    let mut bootstrap = Command::new(find_program("mariadbd"));
    bootstrap
        .arg("--no-defaults")
        .arg(format!("--datadir={}", data.display()))
        .arg("--bootstrap")
        .args(user_args())
        .arg(&log_size)
        .arg("--skip-log-bin")
        .arg("--skip-networking")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let what = crate::util::describe(&bootstrap);
    let mut child = bootstrap.spawn().map_err(|source| KitError::Spawn {
        program: what.clone(),
        source,
    })?;
    if let Some(mut stdin) = child.stdin.take() {
        use std::io::Write;
        stdin
            .write_all(BOOTSTRAP_SQL.as_bytes())
            .map_err(|e| KitError::io("writing bootstrap SQL for", &data, e))?;
        // Dropping stdin closes it, which ends the bootstrap session.
    }
    let output = child
        .wait_with_output()
        .map_err(|e| KitError::io("waiting for bootstrap of", &data, e))?;
    if !output.status.success() {
        return Err(KitError::Command {
            command: what,
            status: output.status.to_string(),
            output: crate::util::output_tail(&output),
        });
    }

    std::fs::write(
        dir.join(MARKER),
        format!("outflow-testkit template v{TEMPLATE_VERSION}\n"),
    )
    .map_err(|e| KitError::io("writing", dir.join(MARKER), e))?;
    if !is_complete(dir) {
        return Err(KitError::Template {
            dir: dir.to_path_buf(),
            reason: "mariadb-install-db succeeded but expected files are missing".to_string(),
        });
    }
    Ok(())
}

/// A readable, file-name-safe key for one MariaDB build and kit version.
fn template_name(version_output: &str) -> String {
    // "mariadbd  Ver 10.11.19-MariaDB-0+deb12u1 for debian-linux-gnu on x86_64 (Debian 12)"
    let short = version_output
        .split_whitespace()
        .skip_while(|w| *w != "Ver")
        .nth(1)
        .unwrap_or("unknown");
    let short: String = short
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || ".+-_".contains(c) {
                c
            } else {
                '_'
            }
        })
        .take(48)
        .collect();
    // The hash covers the full output (build, platform), the version token only helps humans.
    // Per user: another user's template would be unreadable or unwritable for us.
    let euid = crate::util::euid();
    format!(
        "outflow-testkit-tpl-{TEMPLATE_VERSION}-{short}-{:016x}-u{euid}",
        fnv1a(version_output.as_bytes())
    )
}

/// FNV-1a: stable across Rust versions, unlike `DefaultHasher`, so every test binary agrees.
fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

fn unique_suffix() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn template_name_is_stable_and_safe() {
        let v =
            "mariadbd  Ver 10.11.19-MariaDB-0+deb12u1 for debian-linux-gnu on x86_64 (Debian 12)";
        let a = template_name(v);
        assert_eq!(a, template_name(v));
        assert!(
            a.starts_with(&format!(
                "outflow-testkit-tpl-{TEMPLATE_VERSION}-10.11.19-MariaDB-0+deb12u1-"
            )),
            "{a}"
        );
        assert!(
            a.chars()
                .all(|c| c.is_ascii_alphanumeric() || ".+-_".contains(c)),
            "{a}"
        );
        assert_ne!(a, template_name("mariadbd  Ver 11.4.2-MariaDB for linux"));
    }

    #[test]
    fn fnv1a_known_value() {
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
    }

    #[test]
    fn incomplete_dirs_are_not_templates() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert!(!is_complete(dir.path()));
        std::fs::write(dir.path().join(MARKER), "x").expect("marker");
        assert!(!is_complete(dir.path()));
    }
}
