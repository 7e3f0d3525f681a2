//! Turning a requested dataset name into a file under the connector's root, refusing every
//! way out of it.
//!
//! A name is `/`-separated and relative. Refused before touching the disk: empty, NUL,
//! backslashes (a Windows separator), absolute paths (`/x`, `C:\x`, `C:/x`), `.`, `..` and
//! empty components, and any of those spelled with percent escapes (decoded up to three
//! times, so `%2e%2e`, `%252e%252e` and overlong UTF-8 like `%c0%ae` are caught). Then the
//! path is canonicalised — every symlink resolved — and must still lie under the
//! (canonical) root and be a regular file. The file is finally opened with `O_NOFOLLOW`, so
//! a last component swapped for a symlink after the check is refused too. (A directory
//! above it swapped between the check and the open is not caught: the root is the
//! operator's, not the requester's.)

use std::fs::File;
use std::path::{Path, PathBuf};

/// Why a name is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathRefusal {
    #[error("the dataset name is empty")]
    Empty,
    #[error("the dataset name holds a NUL byte")]
    Nul,
    #[error("the dataset name holds a backslash")]
    Backslash,
    #[error("the dataset name is an absolute path")]
    Absolute,
    #[error("the dataset name holds a `.`, `..` or empty component")]
    DotComponent,
    #[error("the dataset name spells a path escape in percent encoding")]
    EncodedTraversal,
    #[error("the dataset name resolves outside the root (through a symlink)")]
    OutsideRoot,
    #[error("no regular file by that name under the root")]
    Missing,
    #[error("not a regular file")]
    NotRegularFile,
    #[error("the file cannot be read: {0}")]
    Io(String),
}

impl PathRefusal {
    /// Whether the refusal is a traversal attempt (400) rather than a missing file (404).
    pub fn is_traversal(&self) -> bool {
        !matches!(
            self,
            PathRefusal::Missing | PathRefusal::NotRegularFile | PathRefusal::Io(_)
        )
    }
}

/// How many rounds of percent decoding are checked (`%25252e` is three).
const DECODE_ROUNDS: usize = 3;

/// Checks `name` without touching the disk.
pub fn check_name(name: &str) -> Result<(), PathRefusal> {
    check_plain(name)?;
    let mut text = name.to_owned();
    for _ in 0..DECODE_ROUNDS {
        if !text.contains('%') {
            break;
        }
        match decode_percent(&text) {
            // Not an escape (e.g. `50%.csv`): the name is taken literally.
            Decoded::NotEncoded => break,
            Decoded::NotUtf8 => return Err(PathRefusal::EncodedTraversal),
            Decoded::Text(decoded) => {
                if check_plain(&decoded).is_err() {
                    return Err(PathRefusal::EncodedTraversal);
                }
                text = decoded;
            }
        }
    }
    Ok(())
}

fn check_plain(name: &str) -> Result<(), PathRefusal> {
    if name.is_empty() {
        return Err(PathRefusal::Empty);
    }
    if name.contains('\0') {
        return Err(PathRefusal::Nul);
    }
    if name.contains('\\') {
        return Err(PathRefusal::Backslash);
    }
    let bytes = name.as_bytes();
    let drive = bytes.len() >= 2 && bytes[0].is_ascii_alphabetic() && bytes[1] == b':';
    if name.starts_with('/') || drive {
        return Err(PathRefusal::Absolute);
    }
    if name
        .split('/')
        .any(|part| part.is_empty() || part == "." || part == "..")
    {
        return Err(PathRefusal::DotComponent);
    }
    Ok(())
}

enum Decoded {
    NotEncoded,
    NotUtf8,
    Text(String),
}

fn decode_percent(text: &str) -> Decoded {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut changed = false;
    let mut i = 0;
    while i < bytes.len() {
        let escape = (bytes[i] == b'%')
            .then(|| bytes.get(i + 1..i + 3))
            .flatten()
            .and_then(|hex| std::str::from_utf8(hex).ok())
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match escape {
            Some(byte) => {
                out.push(byte);
                changed = true;
                i += 3;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    if !changed {
        return Decoded::NotEncoded;
    }
    match String::from_utf8(out) {
        Ok(text) => Decoded::Text(text),
        Err(_) => Decoded::NotUtf8,
    }
}

/// The canonical path of dataset `name` under `root`, which must itself be canonical
/// ([`canonical_root`]). Blocking: call from a blocking thread.
pub fn resolve(root: &Path, name: &str) -> Result<PathBuf, PathRefusal> {
    check_name(name)?;
    let joined = root.join(name);
    let canonical = match joined.canonicalize() {
        Ok(path) => path,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            // A dangling symlink is missing either way; but one pointing outside the root
            // must not reveal whether its target exists, so both read as missing.
            return Err(PathRefusal::Missing);
        }
        Err(err) => return Err(PathRefusal::Io(err.to_string())),
    };
    if !canonical.starts_with(root) {
        return Err(PathRefusal::OutsideRoot);
    }
    let meta = std::fs::metadata(&canonical).map_err(|err| PathRefusal::Io(err.to_string()))?;
    if !meta.is_file() {
        return Err(PathRefusal::NotRegularFile);
    }
    Ok(canonical)
}

/// Opens a path [`resolve`] returned, refusing a symlink put in its place since, and
/// anything but a regular file (a FIFO swapped in would block the reader).
pub fn open_regular(path: &Path) -> Result<File, PathRefusal> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .map_err(|err| match err.raw_os_error() {
            Some(libc::ELOOP) => PathRefusal::OutsideRoot,
            _ if err.kind() == std::io::ErrorKind::NotFound => PathRefusal::Missing,
            _ => PathRefusal::Io(err.to_string()),
        })?;
    let meta = file
        .metadata()
        .map_err(|err| PathRefusal::Io(err.to_string()))?;
    if !meta.is_file() {
        return Err(PathRefusal::NotRegularFile);
    }
    Ok(file)
}

/// The canonical form of the connector's root directory.
pub fn canonical_root(root: &Path) -> std::io::Result<PathBuf> {
    let canonical = root.canonicalize()?;
    if !canonical.is_dir() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("{} is not a directory", root.display()),
        ));
    }
    Ok(canonical)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    /// A root with files, a subdirectory, symlinks in and out, and a FIFO.
    fn fixture() -> (tempfile::TempDir, tempfile::TempDir, PathBuf) {
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("secret"), b"secret").unwrap();
        let dir = tempfile::tempdir().unwrap();
        let root = canonical_root(dir.path()).unwrap();
        std::fs::write(root.join("data.csv"), b"a,b\n").unwrap();
        std::fs::write(root.join("50%.csv"), b"x").unwrap();
        std::fs::write(root.join("a%20b.csv"), b"x").unwrap();
        std::fs::create_dir(root.join("sub")).unwrap();
        std::fs::write(root.join("sub/inner.csv"), b"x").unwrap();
        symlink(root.join("data.csv"), root.join("link_in")).unwrap();
        symlink(outside.path().join("secret"), root.join("link_out")).unwrap();
        symlink(outside.path(), root.join("dir_out")).unwrap();
        symlink("../../../../../../etc/passwd", root.join("relative_out")).unwrap();
        symlink(root.join("nowhere"), root.join("dangling")).unwrap();
        let fifo = std::ffi::CString::new(root.join("fifo").to_str().unwrap()).unwrap();
        // SAFETY: a valid NUL-terminated path; mkfifo only creates a file.
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
        (dir, outside, root)
    }

    #[test]
    fn every_traversal_form_is_refused() {
        let (_dir, _outside, root) = fixture();
        use PathRefusal::*;
        let cases: &[(&str, PathRefusal)] = &[
            ("", Empty),
            ("data.csv\0", Nul),
            ("..", DotComponent),
            ("../x", DotComponent),
            ("sub/../../x", DotComponent),
            ("sub/..", DotComponent),
            ("./data.csv", DotComponent),
            ("sub//inner.csv", DotComponent),
            ("sub/", DotComponent),
            ("/etc/passwd", Absolute),
            ("//etc/passwd", Absolute),
            ("C:\\Windows\\win.ini", Backslash),
            ("C:/Windows/win.ini", Absolute),
            ("c:x", Absolute),
            ("..\\x", Backslash),
            ("sub\\..\\..\\x", Backslash),
            ("%2e%2e/x", EncodedTraversal),
            ("%2E%2E%2Fx", EncodedTraversal),
            ("..%2fx", EncodedTraversal),
            ("sub%2f..%2f..%2fx", EncodedTraversal),
            ("%2fetc%2fpasswd", EncodedTraversal),
            ("%252e%252e%252fx", EncodedTraversal),
            ("%25252e%25252e/x", EncodedTraversal),
            ("%5c..%5cx", EncodedTraversal),
            ("%00", EncodedTraversal),
            ("%c0%ae%c0%ae/x", EncodedTraversal),
            ("%e0%80%ae%e0%80%ae/x", EncodedTraversal),
            ("link_out", OutsideRoot),
            ("dir_out/secret", OutsideRoot),
            ("relative_out", OutsideRoot),
            ("dangling", Missing),
            ("missing.csv", Missing),
            ("sub", NotRegularFile),
            ("fifo", NotRegularFile),
        ];
        for (name, expected) in cases {
            assert_eq!(resolve(&root, name).as_ref(), Err(expected), "{name:?}");
        }
        let refused_traversals = cases.iter().filter(|(_, r)| r.is_traversal()).count();
        assert_eq!(refused_traversals, 30);
    }

    #[test]
    fn regular_files_under_the_root_resolve() {
        let (_dir, _outside, root) = fixture();
        let cases = [
            ("data.csv", "data.csv"),
            ("sub/inner.csv", "sub/inner.csv"),
            ("link_in", "data.csv"),
            ("50%.csv", "50%.csv"),
            ("a%20b.csv", "a%20b.csv"),
        ];
        for (name, target) in cases {
            let path = resolve(&root, name).unwrap_or_else(|err| panic!("{name}: {err}"));
            assert_eq!(path, root.join(target), "{name}");
            open_regular(&path).unwrap();
        }
    }

    #[test]
    fn opening_refuses_a_symlink_swapped_in() {
        let (_dir, _outside, root) = fixture();
        assert_eq!(
            open_regular(&root.join("link_out")).unwrap_err(),
            PathRefusal::OutsideRoot
        );
        assert_eq!(
            open_regular(&root.join("fifo")).unwrap_err(),
            PathRefusal::NotRegularFile
        );
    }
}
