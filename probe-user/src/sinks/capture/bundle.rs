//! The bundle directory: created new (mode 0700), never an existing path
//! or a symlink; its files created inside it with O_EXCL|O_NOFOLLOW (mode
//! 0600) relative to the directory's own descriptor, so nothing can swap a
//! path under us. A bundle that never held a capture is removed again.

use std::{
    ffi::CString,
    fs::File,
    io,
    os::{
        fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
        unix::{ffi::OsStrExt as _, fs::DirBuilderExt as _},
    },
    path::{Path, PathBuf},
};

pub const DIR_MODE: u32 = 0o700;
pub const FILE_MODE: u32 = 0o600;

/// Why a bundle could not be started: one line each.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error(
        "{0} already exists: capture writes a new directory and never reuses or overwrites one"
    )]
    Exists(PathBuf),
    #[error("{0} is a symbolic link: refusing to follow it")]
    Symlink(PathBuf),
    #[error("cannot create {path}: the parent directory does not exist")]
    NoParent { path: PathBuf },
    #[error("cannot create {path}: {source}")]
    Create {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// An open bundle directory and the files created in it.
#[derive(Debug)]
pub struct Bundle {
    path: PathBuf,
    dir: OwnedFd,
    files: Vec<String>,
}

impl Bundle {
    /// Creates `path` as a new directory (mode 0700). Refuses an existing
    /// path of any kind, a dangling symlink included, without touching it.
    pub fn create(path: &Path) -> Result<Bundle, BundleError> {
        if let Ok(meta) = std::fs::symlink_metadata(path) {
            return Err(if meta.file_type().is_symlink() {
                BundleError::Symlink(path.into())
            } else {
                BundleError::Exists(path.into())
            });
        }
        // mkdir itself is the atomic check: EEXIST if anything appeared since.
        if let Err(e) = std::fs::DirBuilder::new().mode(DIR_MODE).create(path) {
            return Err(match e.kind() {
                io::ErrorKind::AlreadyExists => match std::fs::symlink_metadata(path) {
                    Ok(m) if m.file_type().is_symlink() => BundleError::Symlink(path.into()),
                    _ => BundleError::Exists(path.into()),
                },
                io::ErrorKind::NotFound => BundleError::NoParent { path: path.into() },
                _ => BundleError::Create {
                    path: path.into(),
                    source: e,
                },
            });
        }
        let opened = open_dir(path).and_then(|dir| {
            // The umask may have narrowed the mode; make it exactly 0700.
            // SAFETY: valid descriptor.
            cvt(unsafe { libc::fchmod(dir.as_raw_fd(), DIR_MODE) })?;
            Ok(dir)
        });
        match opened {
            Ok(dir) => Ok(Bundle {
                path: path.into(),
                dir,
                files: Vec::new(),
            }),
            Err(source) => {
                let _ = std::fs::remove_dir(path);
                Err(BundleError::Create {
                    path: path.into(),
                    source,
                })
            }
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Creates `name` (a plain file name) inside the bundle, mode 0600.
    pub fn create_file(&mut self, name: &str) -> io::Result<File> {
        if name.is_empty() || name.contains('/') || name == "." || name == ".." {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("bad bundle file name {name:?}"),
            ));
        }
        let c_name =
            CString::new(name).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let flags =
            libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW | libc::O_CLOEXEC;
        // SAFETY: valid directory descriptor and NUL-terminated name.
        let fd = unsafe {
            libc::openat(
                self.dir.as_raw_fd(),
                c_name.as_ptr(),
                flags,
                FILE_MODE as libc::c_uint,
            )
        };
        cvt(fd).map_err(|e| {
            io::Error::new(e.kind(), format!("{}: {e}", self.path.join(name).display()))
        })?;
        // SAFETY: openat returned a new descriptor that nothing else owns.
        let file = unsafe { File::from_raw_fd(fd) };
        self.files.push(name.to_string());
        // SAFETY: valid descriptor.
        cvt(unsafe { libc::fchmod(file.as_raw_fd(), FILE_MODE) })?;
        Ok(file)
    }

    /// The files created so far, in order.
    pub fn files(&self) -> &[String] {
        &self.files
    }

    /// Removes what this bundle created (its files, then the directory),
    /// for a capture that never started.
    pub fn discard(self) -> io::Result<()> {
        for name in &self.files {
            let c_name = CString::new(name.as_str())
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
            // SAFETY: valid directory descriptor and NUL-terminated name.
            cvt(unsafe { libc::unlinkat(self.dir.as_raw_fd(), c_name.as_ptr(), 0) })?;
        }
        drop(self.dir);
        std::fs::remove_dir(&self.path)
    }
}

fn open_dir(path: &Path) -> io::Result<OwnedFd> {
    let c_path = CString::new(path.as_os_str().as_bytes())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let flags = libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC;
    // SAFETY: NUL-terminated path.
    let fd = cvt(unsafe { libc::open(c_path.as_ptr(), flags) })?;
    // SAFETY: open returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn cvt(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::os::unix::fs::{PermissionsExt as _, symlink};

    use super::*;

    /// A scratch directory removed on drop.
    pub(crate) struct Scratch(pub PathBuf);

    impl Scratch {
        pub fn new(tag: &str) -> Scratch {
            static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
            let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let p = std::env::temp_dir()
                .join(format!("netprobe-bundle-{tag}-{}-{n}", std::process::id()));
            std::fs::create_dir_all(&p).unwrap();
            Scratch(p)
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn mode(p: &Path) -> u32 {
        std::fs::symlink_metadata(p).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn new_directory_and_files_get_private_modes() {
        let s = Scratch::new("modes");
        let out = s.0.join("b");
        let mut b = Bundle::create(&out).unwrap();
        std::io::Write::write_all(&mut b.create_file("events.jsonl").unwrap(), b"x\n").unwrap();
        b.create_file("report.md").unwrap();
        assert_eq!(mode(&out), 0o700);
        assert_eq!(mode(&out.join("events.jsonl")), 0o600);
        assert_eq!(mode(&out.join("report.md")), 0o600);
        assert_eq!(b.files(), ["events.jsonl", "report.md"]);
        // A name is created once.
        assert_eq!(
            b.create_file("report.md").unwrap_err().kind(),
            io::ErrorKind::AlreadyExists
        );
        assert!(b.create_file("../escape").is_err());
        assert!(!s.0.join("escape").exists());
    }

    #[test]
    fn existing_paths_are_refused_untouched() {
        let s = Scratch::new("exists");
        let dir = s.0.join("dir");
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(dir.join("keep"), b"old").unwrap();
        let err = Bundle::create(&dir).unwrap_err();
        assert!(matches!(err, BundleError::Exists(_)), "{err}");
        assert!(err.to_string().contains("already exists"), "{err}");
        assert_eq!(std::fs::read(dir.join("keep")).unwrap(), b"old");

        let file = s.0.join("file");
        std::fs::write(&file, b"old").unwrap();
        assert!(matches!(
            Bundle::create(&file).unwrap_err(),
            BundleError::Exists(_)
        ));
        assert_eq!(std::fs::read(&file).unwrap(), b"old");
    }

    #[test]
    fn symlinks_are_refused_not_followed() {
        let s = Scratch::new("symlink");
        let target = s.0.join("target");
        std::fs::create_dir(&target).unwrap();
        let link = s.0.join("link");
        symlink(&target, &link).unwrap();
        let err = Bundle::create(&link).unwrap_err();
        assert!(matches!(err, BundleError::Symlink(_)), "{err}");
        assert_eq!(std::fs::read_dir(&target).unwrap().count(), 0);

        // A dangling link: mkdir would not follow it, but it is refused anyway.
        let dangling = s.0.join("dangling");
        symlink(s.0.join("nowhere"), &dangling).unwrap();
        assert!(matches!(
            Bundle::create(&dangling).unwrap_err(),
            BundleError::Symlink(_)
        ));
        assert!(!s.0.join("nowhere").exists());
    }

    #[test]
    fn missing_or_bad_parent_is_one_clear_error() {
        let s = Scratch::new("parent");
        let err = Bundle::create(&s.0.join("no/such/b")).unwrap_err();
        assert!(matches!(err, BundleError::NoParent { .. }), "{err}");
        assert!(!s.0.join("no").exists());
        std::fs::write(s.0.join("f"), b"").unwrap();
        let err = Bundle::create(&s.0.join("f/b")).unwrap_err();
        assert!(err.to_string().starts_with("cannot create"), "{err}");
        assert!(!err.to_string().contains('\n'));
    }

    #[test]
    fn discard_removes_exactly_what_it_made() {
        let s = Scratch::new("discard");
        let out = s.0.join("b");
        let mut b = Bundle::create(&out).unwrap();
        b.create_file("a").unwrap();
        b.create_file("b").unwrap();
        b.discard().unwrap();
        assert!(!out.exists());
        assert!(s.0.exists());
    }
}
