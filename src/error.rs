//! The one error type of the library. Library code returns it and never prints; `main` prints it.
//!
//! Every variant names what was wrong (file, tensor, field, op) and, where the user can act, a hint.

use std::fmt;
use std::path::{Path, PathBuf};

#[derive(Debug)]
pub enum Error {
    /// A file could not be read or written.
    Io { path: PathBuf, source: std::io::Error },
    /// A JSON file (config, input cases, dataset) could not be parsed or has the wrong structure.
    Json { path: PathBuf, what: String },
    /// A config field is missing, has the wrong type, or disagrees with another source.
    Config { path: PathBuf, field: String, what: String },
    /// The checkpoint asks for something this implementation does not compute (sliding window, rope scaling…).
    Unsupported { path: PathBuf, what: String },
    /// A weight file is truncated or corrupt, or a tensor is missing, mis-shaped or of an unsupported dtype.
    Weights { path: PathBuf, tensor: String, what: String },
    /// tokenizer.json could not be loaded, or encoding/decoding failed.
    Tokenizer { path: PathBuf, what: String },
    /// Bad user input that is not a file: token id out of range, prompt too long, bad option value.
    Input { what: String },
    /// A dataset or cases file has a malformed record.
    Data { path: PathBuf, record: usize, what: String },
    /// A buffer passed to an op has the wrong length (a caller bug or a mis-sized batch).
    Shape { op: &'static str, arg: &'static str, expected: usize, got: usize },
    /// A run would not fit in memory; `needed_bytes` is the estimate.
    OutOfMemory { what: String, needed_bytes: u64, available_bytes: u64 },
    /// A CUDA driver call failed.
    Cuda(cudarc::driver::DriverError),
    /// A kernel launch failed (found by a DRPO_SYNC=1 synchronisation right after it).
    Kernel { name: &'static str, source: cudarc::driver::DriverError },
    /// NVRTC rejected a kernel family; `log` is the compiler's text.
    Nvrtc { family: String, log: String },
    /// No CUDA driver / NVRTC library / device on this machine.
    NoDevice { why: String },
    /// A command that compiles kernels (`drpo kernels`) found no NVRTC library; no GPU is involved.
    NoNvrtc { why: String },
    /// A result about to be written or printed holds NaN or ±inf (`at`: where inside it).
    NonFinite { what: String, at: String, value: f64 },
    /// A run folder (`drpo train --out`, `drpo sft --out`) is locked by another process, or is neither
    /// fresh nor a complete run; `what` says what is missing and what the user can do.
    RunFolder { path: PathBuf, what: String },
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub fn io(path: impl AsRef<Path>, source: std::io::Error) -> Self {
        Error::Io { path: path.as_ref().to_path_buf(), source }
    }
    pub fn json(path: impl AsRef<Path>, what: impl fmt::Display) -> Self {
        Error::Json { path: path.as_ref().to_path_buf(), what: what.to_string() }
    }
    pub fn config(path: impl AsRef<Path>, field: impl Into<String>, what: impl Into<String>) -> Self {
        Error::Config { path: path.as_ref().to_path_buf(), field: field.into(), what: what.into() }
    }
    pub fn weights(path: impl AsRef<Path>, tensor: impl Into<String>, what: impl Into<String>) -> Self {
        Error::Weights { path: path.as_ref().to_path_buf(), tensor: tensor.into(), what: what.into() }
    }
    pub fn input(what: impl Into<String>) -> Self {
        Error::Input { what: what.into() }
    }
    pub fn data(path: impl AsRef<Path>, record: usize, what: impl Into<String>) -> Self {
        Error::Data { path: path.as_ref().to_path_buf(), record, what: what.into() }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Io { path, source } => write!(f, "{}: {source}", path.display()),
            Error::Json { path, what } => write!(f, "{}: invalid JSON: {what}", path.display()),
            Error::Config { path, field, what } => write!(f, "{}: field `{field}`: {what}", path.display()),
            Error::Unsupported { path, what } => write!(f, "{}: unsupported: {what}", path.display()),
            Error::Weights { path, tensor, what } => {
                if tensor.is_empty() {
                    write!(f, "{}: {what}", path.display())
                } else {
                    write!(f, "{}: tensor `{tensor}`: {what}", path.display())
                }
            }
            Error::Tokenizer { path, what } => write!(f, "{}: tokenizer: {what}", path.display()),
            Error::Input { what } => write!(f, "invalid input: {what}"),
            Error::Data { path, record, what } => write!(f, "{}: record {record}: {what}", path.display()),
            Error::Shape { op, arg, expected, got } => {
                write!(f, "{op}: `{arg}` has {got} elements, expected {expected}")
            }
            Error::OutOfMemory { what, needed_bytes, available_bytes } => write!(
                f,
                "{what} needs about {:.2} GiB but only {:.2} GiB is available\n  hint: lower the batch size, \
                 the number of samples or the maximum number of new tokens",
                *needed_bytes as f64 / (1u64 << 30) as f64,
                *available_bytes as f64 / (1u64 << 30) as f64
            ),
            Error::Cuda(e) => {
                write!(f, "CUDA driver error: {e}")?;
                if format!("{e:?}").contains("UNSUPPORTED_PTX_VERSION") {
                    write!(f, "\n  hint: the driver is older than the NVRTC that built the PTX")?;
                }
                Ok(())
            }
            Error::Kernel { name, source } => write!(f, "kernel `{name}` failed: {source}"),
            Error::Nvrtc { family, log } => write!(f, "NVRTC could not compile `{family}.cu`:\n{log}"),
            Error::NoDevice { why } => write!(
                f,
                "no usable CUDA GPU: {why}\n  hint: use `--device cpu`, or `--device auto` to fall back to the CPU"
            ),
            Error::NoNvrtc { why } => write!(f, "NVRTC is needed to compile the kernels (no GPU or driver is): {why}"),
            Error::NonFinite { what, at, value } => {
                let at = if at.is_empty() { String::new() } else { format!(" at `{at}`") };
                write!(f, "{what}: {value}{at}; stopped without writing it (a non-finite number is never a result)")
            }
            Error::RunFolder { path, what } => write!(f, "{}: {what}", path.display()),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io { source, .. } => Some(source),
            Error::Cuda(e) | Error::Kernel { source: e, .. } => Some(e),
            _ => None,
        }
    }
}

impl From<cudarc::driver::DriverError> for Error {
    fn from(e: cudarc::driver::DriverError) -> Self {
        Error::Cuda(e)
    }
}

/// Checks a buffer length for an op; the error names the op and the argument.
pub fn check_len(op: &'static str, arg: &'static str, got: usize, expected: usize) -> Result<()> {
    if got == expected {
        Ok(())
    } else {
        Err(Error::Shape { op, arg, expected, got })
    }
}

/// Reads a whole file, naming it in the error.
pub fn read_file(path: impl AsRef<Path>) -> Result<Vec<u8>> {
    std::fs::read(path.as_ref()).map_err(|e| Error::io(path, e))
}

/// Reads and parses a JSON file, naming it in the error.
pub fn read_json(path: impl AsRef<Path>) -> Result<serde_json::Value> {
    let bytes = read_file(path.as_ref())?;
    serde_json::from_slice(&bytes).map_err(|e| Error::json(path, e))
}

/// Writes a file atomically: a temporary file in the same folder, fsync, rename over the target, then
/// fsync of the folder. A crash leaves either the old file or the new one, never a half-written one.
pub fn write_atomic(path: impl AsRef<Path>, bytes: &[u8]) -> Result<()> {
    let mut w = AtomicWriter::create(path.as_ref())?;
    w.write(bytes)?;
    w.finish()
}

/// A file written in pieces (e.g. one JSON line per evaluated response) and published atomically,
/// as [`write_atomic`] does: the pieces go to `.NAME.PID.tmp` in the target's folder, and
/// [`finish`](Self::finish) fsyncs it, renames it over the target and fsyncs the folder. Dropped
/// without `finish` (an error, a panic), the temp file is removed and the target is untouched.
pub struct AtomicWriter {
    path: PathBuf,
    tmp: PathBuf,
    file: Option<std::io::BufWriter<std::fs::File>>,
}

impl AtomicWriter {
    pub fn create(path: &Path) -> Result<Self> {
        let tmp = temp_sibling(path)?;
        let file = std::fs::File::create(&tmp).map_err(|e| Error::io(&tmp, e))?;
        Ok(AtomicWriter { path: path.to_path_buf(), tmp, file: Some(std::io::BufWriter::new(file)) })
    }

    pub fn write(&mut self, bytes: &[u8]) -> Result<()> {
        use std::io::Write;
        let file = self.file.as_mut().expect("AtomicWriter: written after finish");
        file.write_all(bytes).map_err(|e| Error::io(&self.path, e))
    }

    pub fn finish(mut self) -> Result<()> {
        let file = self.file.take().expect("AtomicWriter: finished twice");
        let synced = file.into_inner().map_err(|e| e.into_error()).and_then(|f| f.sync_all());
        if let Err(e) = synced {
            let _ = std::fs::remove_file(&self.tmp);
            return Err(Error::io(&self.path, e));
        }
        publish(&self.tmp, &self.path)
    }
}

/// `.NAME.PID.tmp` beside `path` (its folder created if needed): where an atomic write goes first.
pub fn temp_sibling(path: &Path) -> Result<PathBuf> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    Ok(dir.join(format!(".{name}.{}.tmp", std::process::id())))
}

/// Renames the finished, fsynced temp file `tmp` over `path`, then fsyncs the folder; on failure the
/// temp file is removed and `path` is untouched.
pub fn publish(tmp: &Path, path: &Path) -> Result<()> {
    if let Err(e) = std::fs::rename(tmp, path) {
        let _ = std::fs::remove_file(tmp);
        return Err(Error::io(path, e));
    }
    // the rename is durable once the folder's entry is (best effort: some file systems refuse)
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

impl Drop for AtomicWriter {
    fn drop(&mut self) {
        if self.file.take().is_some() {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}
