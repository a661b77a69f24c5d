//! The spool's only way to the disk, so that a test can put a simulated disk underneath and cut
//! the power between a write and its fsync.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

/// File-system operations the spool needs. Paths are those of segment files and of the spool
/// directory.
pub trait SpoolIo: Send + Sync + 'static {
    /// An open segment file that is appended to.
    type Writer: SegmentWriter;

    /// Creates `dir` and its parents if missing.
    fn create_dir_all(&self, dir: &Path) -> io::Result<()>;
    /// Names of the entries of `dir`.
    fn list(&self, dir: &Path) -> io::Result<Vec<String>>;
    /// Creates (or empties) `path` for appending.
    fn create(&self, path: &Path) -> io::Result<Self::Writer>;
    /// Opens the existing `path` for appending at its end.
    fn open_append(&self, path: &Path) -> io::Result<Self::Writer>;
    /// Length of `path` in bytes.
    fn len(&self, path: &Path) -> io::Result<u64>;
    /// Reads the whole of `path`.
    fn read_all(&self, path: &Path) -> io::Result<Vec<u8>>;
    /// Fills `buf` from `path` at `offset`; fails if the file is shorter.
    fn read_at(&self, path: &Path, offset: u64, buf: &mut [u8]) -> io::Result<()>;
    /// Removes `path`.
    fn remove(&self, path: &Path) -> io::Result<()>;
    /// Makes creations and removals in `dir` durable.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
    /// Takes the exclusive lock on the spool directory `dir` (which exists), held until the
    /// returned guard drops or the process dies.
    fn lock_dir(&self, dir: &Path) -> Result<DirLock, LockError>;
}

/// Name of the lock file in a spool directory.
pub const LOCK_FILE: &str = "spool.lock";

/// An exclusive hold on a spool directory; dropping it releases the lock.
#[derive(Debug)]
pub struct DirLock {
    _file: Option<File>,
}

/// Why a spool directory could not be locked.
#[derive(Debug)]
pub enum LockError {
    /// Another open spool holds the lock: another process, or another `Spool` in this one.
    Busy {
        /// The holder's process id, as it wrote it in the lock file, if readable.
        holder: Option<u32>,
    },
    /// The lock file could not be opened or locked.
    Io(io::Error),
}

/// A segment file open for appending.
pub trait SegmentWriter: Send + 'static {
    /// Appends `buf` at the end of the file.
    fn append(&mut self, buf: &[u8]) -> io::Result<()>;
    /// Makes everything appended so far durable (fdatasync).
    fn sync(&mut self) -> io::Result<()>;
    /// Cuts the file to `len` bytes; later appends go after it.
    fn truncate(&mut self, len: u64) -> io::Result<()>;
}

/// The real file system.
#[derive(Debug, Clone, Copy, Default)]
pub struct FsIo;

/// A segment file on the real file system.
#[derive(Debug)]
pub struct FsWriter {
    file: File,
}

impl SpoolIo for FsIo {
    type Writer = FsWriter;

    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        std::fs::create_dir_all(dir)
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in std::fs::read_dir(dir)? {
            names.push(entry?.file_name().to_string_lossy().into_owned());
        }
        Ok(names)
    }

    fn create(&self, path: &Path) -> io::Result<FsWriter> {
        let file = OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .open(path)?;
        Ok(FsWriter { file })
    }

    fn open_append(&self, path: &Path) -> io::Result<FsWriter> {
        let file = OpenOptions::new().append(true).open(path)?;
        Ok(FsWriter { file })
    }

    fn len(&self, path: &Path) -> io::Result<u64> {
        Ok(std::fs::metadata(path)?.len())
    }

    fn read_all(&self, path: &Path) -> io::Result<Vec<u8>> {
        std::fs::read(path)
    }

    fn read_at(&self, path: &Path, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        File::open(path)?.read_exact_at(buf, offset)
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_file(path)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        File::open(dir)?.sync_all()
    }

    /// flock(2) on `spool.lock`: the kernel releases it when the file is closed, so also when
    /// the holder is killed, and a stale lock file never blocks a restart. flock locks belong
    /// to the open file, so a second `Spool` on the same directory in this process is refused
    /// as well. The holder writes its pid into the file for the refusal to name.
    fn lock_dir(&self, dir: &Path) -> Result<DirLock, LockError> {
        let path = dir.join(LOCK_FILE);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(LockError::Io)?;
        // SAFETY: flock only takes a file descriptor, which `file` keeps open for the whole
        // call; it touches no memory of ours. Tested by `second_open_of_a_directory_is_refused`.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc != 0 {
            let error = io::Error::last_os_error();
            if error.kind() != io::ErrorKind::WouldBlock {
                return Err(LockError::Io(error));
            }
            let mut text = String::new();
            let holder = file
                .read_to_string(&mut text)
                .ok()
                .and_then(|_| text.trim().parse().ok());
            return Err(LockError::Busy { holder });
        }
        file.set_len(0)
            .and_then(|()| file.write_all(format!("{}\n", std::process::id()).as_bytes()))
            .map_err(LockError::Io)?;
        Ok(DirLock { _file: Some(file) })
    }
}

impl SegmentWriter for FsWriter {
    fn append(&mut self, buf: &[u8]) -> io::Result<()> {
        self.file.write_all(buf)
    }

    fn sync(&mut self) -> io::Result<()> {
        self.file.sync_data()
    }

    fn truncate(&mut self, len: u64) -> io::Result<()> {
        // The file is opened in append mode, so later writes land at the new end.
        self.file.set_len(len)
    }
}

/// An in-memory disk that remembers what was made durable and what was not, for crash tests.
///
/// Every operation counts towards an optional budget; once it is spent, operations fail as if
/// the machine had died at that instant. [`MemIo::crash`] then models the power cut: unsynced
/// file bytes are kept only in part (a random prefix, with random zeroed bytes, as pages reach
/// the disk in any order), and unsynced directory changes each survive or not at random.
#[derive(Debug, Clone, Default)]
pub struct MemIo {
    state: Arc<Mutex<MemState>>,
}

#[derive(Debug, Default)]
struct MemState {
    files: BTreeMap<PathBuf, MemFile>,
    /// Names whose existence is durable.
    durable_names: BTreeSet<PathBuf>,
    /// Files removed since the last directory sync: a crash may bring them back.
    removed: BTreeMap<PathBuf, MemFile>,
    ops_left: Option<u64>,
    ops: u64,
}

#[derive(Debug, Default, Clone)]
struct MemFile {
    data: Vec<u8>,
    /// Prefix of `data` that is known to be on disk.
    durable_len: usize,
}

/// A segment file on a [`MemIo`] disk.
#[derive(Debug)]
pub struct MemWriter {
    io: MemIo,
    path: PathBuf,
}

fn dead() -> io::Error {
    io::Error::other("simulated crash: the disk is gone")
}

impl MemIo {
    /// An empty disk with no failure budget.
    pub fn new() -> MemIo {
        MemIo::default()
    }

    fn lock(&self) -> MutexGuard<'_, MemState> {
        // A poisoned lock only means another test thread panicked; the state is still usable.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn op(&self) -> io::Result<MutexGuard<'_, MemState>> {
        let mut state = self.lock();
        state.ops += 1;
        match &mut state.ops_left {
            Some(0) => Err(dead()),
            Some(left) => {
                *left -= 1;
                Ok(state)
            }
            None => Ok(state),
        }
    }

    /// Lets `n` more operations succeed, then fails every one after; `None` removes the limit.
    pub fn fail_after(&self, n: Option<u64>) {
        self.lock().ops_left = n;
    }

    /// Operations performed so far (including failed ones).
    pub fn ops(&self) -> u64 {
        self.lock().ops
    }

    /// Cuts the power: keeps what was durable and, at random, part of what was not. `rand`
    /// returns uniformly random numbers. Lifts any failure budget.
    pub fn crash(&self, rand: &mut dyn FnMut() -> u64) {
        let mut state = self.lock();
        let MemState {
            files,
            durable_names,
            removed,
            ..
        } = &mut *state;
        let paths: BTreeSet<PathBuf> = files.keys().chain(durable_names.iter()).cloned().collect();
        for path in paths {
            let exists = files.contains_key(&path);
            let was_durable = durable_names.contains(&path);
            // An unsynced create or remove reaches the disk, or not.
            let survives = if exists == was_durable {
                exists
            } else {
                rand().is_multiple_of(2)
            };
            if !survives {
                files.remove(&path);
                durable_names.remove(&path);
                continue;
            }
            durable_names.insert(path.clone());
            if !exists {
                let back = removed.remove(&path).unwrap_or_default();
                files.insert(path.clone(), back);
            }
            let file = files.entry(path).or_default();
            let durable = file.durable_len.min(file.data.len());
            let pending = file.data.len() - durable;
            let keep = if pending == 0 {
                0
            } else {
                (rand() % (pending as u64 + 1)) as usize
            };
            file.data.truncate(durable + keep);
            for byte in &mut file.data[durable..] {
                if rand().is_multiple_of(8) {
                    *byte = 0;
                }
            }
            file.durable_len = file.data.len();
        }
        removed.clear();
        state.ops_left = None;
    }

    /// Flips one bit of `path` at `offset`, to model damage the spool did not cause.
    pub fn flip_bit(&self, path: &Path, offset: usize) {
        if let Some(file) = self.lock().files.get_mut(path) {
            if let Some(byte) = file.data.get_mut(offset) {
                *byte ^= 1;
            }
        }
    }

    /// Writes `bytes` as the whole durable content of `path`.
    pub fn put(&self, path: &Path, bytes: &[u8]) {
        let mut state = self.lock();
        state.files.insert(
            path.to_path_buf(),
            MemFile {
                data: bytes.to_vec(),
                durable_len: bytes.len(),
            },
        );
        state.durable_names.insert(path.to_path_buf());
    }

    /// The current content of `path`, if it exists.
    pub fn get(&self, path: &Path) -> Option<Vec<u8>> {
        self.lock().files.get(path).map(|f| f.data.clone())
    }
}

fn not_found(path: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::NotFound,
        format!("{} not found", path.display()),
    )
}

impl SpoolIo for MemIo {
    type Writer = MemWriter;

    /// No lock: an in-memory disk belongs to the one test that made it, which reopens the
    /// spool after simulated crashes while the old handle may still be around.
    fn lock_dir(&self, _dir: &Path) -> Result<DirLock, LockError> {
        Ok(DirLock { _file: None })
    }

    fn create_dir_all(&self, _dir: &Path) -> io::Result<()> {
        self.op().map(drop)
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let state = self.op()?;
        Ok(state
            .files
            .keys()
            .filter(|p| p.parent() == Some(dir))
            .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .collect())
    }

    fn create(&self, path: &Path) -> io::Result<MemWriter> {
        let mut state = self.op()?;
        let file = state.files.entry(path.to_path_buf()).or_default();
        file.data.clear();
        file.durable_len = 0;
        Ok(MemWriter {
            io: self.clone(),
            path: path.to_path_buf(),
        })
    }

    fn open_append(&self, path: &Path) -> io::Result<MemWriter> {
        let state = self.op()?;
        if !state.files.contains_key(path) {
            return Err(not_found(path));
        }
        Ok(MemWriter {
            io: self.clone(),
            path: path.to_path_buf(),
        })
    }

    fn len(&self, path: &Path) -> io::Result<u64> {
        let state = self.op()?;
        let file = state.files.get(path).ok_or_else(|| not_found(path))?;
        Ok(file.data.len() as u64)
    }

    fn read_all(&self, path: &Path) -> io::Result<Vec<u8>> {
        let state = self.op()?;
        let file = state.files.get(path).ok_or_else(|| not_found(path))?;
        Ok(file.data.clone())
    }

    fn read_at(&self, path: &Path, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        let state = self.op()?;
        let file = state.files.get(path).ok_or_else(|| not_found(path))?;
        let start = usize::try_from(offset).map_err(io::Error::other)?;
        let src = file
            .data
            .get(start..start + buf.len())
            .ok_or_else(|| io::Error::new(io::ErrorKind::UnexpectedEof, "short read"))?;
        buf.copy_from_slice(src);
        Ok(())
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        let mut state = self.op()?;
        let file = state.files.remove(path).ok_or_else(|| not_found(path))?;
        if state.durable_names.contains(path) {
            state.removed.insert(path.to_path_buf(), file);
        }
        Ok(())
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        let mut state = self.op()?;
        let MemState {
            files,
            durable_names,
            removed,
            ..
        } = &mut *state;
        removed.retain(|p, _| p.parent() != Some(dir));
        durable_names.retain(|p| p.parent() != Some(dir) || files.contains_key(p));
        durable_names.extend(files.keys().filter(|p| p.parent() == Some(dir)).cloned());
        Ok(())
    }
}

impl SegmentWriter for MemWriter {
    fn append(&mut self, buf: &[u8]) -> io::Result<()> {
        let mut state = self.io.op()?;
        let file = state
            .files
            .get_mut(&self.path)
            .ok_or_else(|| not_found(&self.path))?;
        file.data.extend_from_slice(buf);
        Ok(())
    }

    fn sync(&mut self) -> io::Result<()> {
        let mut state = self.io.op()?;
        let file = state
            .files
            .get_mut(&self.path)
            .ok_or_else(|| not_found(&self.path))?;
        file.durable_len = file.data.len();
        Ok(())
    }

    fn truncate(&mut self, len: u64) -> io::Result<()> {
        let mut state = self.io.op()?;
        let file = state
            .files
            .get_mut(&self.path)
            .ok_or_else(|| not_found(&self.path))?;
        let len = usize::try_from(len).map_err(io::Error::other)?;
        file.data.truncate(len);
        file.durable_len = file.durable_len.min(len);
        Ok(())
    }
}
