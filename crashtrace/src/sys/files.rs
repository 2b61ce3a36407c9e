//! Opening files that users control, as root, without being blocked, redirected or
//! handed something that is not a plain file; and sealed private copies of them.

use std::{
    ffi::CString,
    fs::File,
    io,
    os::{
        fd::{AsRawFd as _, FromRawFd as _},
        unix::{ffi::OsStrExt as _, fs::MetadataExt as _},
    },
    path::Path,
};

/// The first open of a path a user may control takes no more than a handle (O_PATH):
/// it does not open a FIFO (whose open blocks until a writer comes) or a device (whose
/// open can act), and follows no symlink in the last component. Only a handle on a
/// regular file is then opened for reading, through its /proc/self/fd link: the same
/// inode, whatever happens to the path meanwhile.
const PATH_FLAGS: libc::c_int = libc::O_PATH | libc::O_NOFOLLOW | libc::O_CLOEXEC;

fn c_path(p: &Path) -> io::Result<CString> {
    CString::new(p.as_os_str().as_bytes()).map_err(|_| io::ErrorKind::InvalidInput.into())
}

/// Opens for reading the regular file a handle (O_PATH) refers to.
fn reopen_regular(handle: i32) -> io::Result<File> {
    // SAFETY: handle is a fresh descriptor we own.
    let handle = unsafe { File::from_raw_fd(handle) };
    if !handle.metadata()?.file_type().is_file() {
        return Err(io::Error::other("not a regular file"));
    }
    let link = c_path(Path::new(&format!("/proc/self/fd/{}", handle.as_raw_fd())))?;
    // SAFETY: plain syscall on a NUL-terminated path.
    let fd = unsafe {
        libc::open(
            link.as_ptr(),
            libc::O_RDONLY | libc::O_CLOEXEC | libc::O_NOCTTY,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh descriptor we own.
    Ok(unsafe { File::from_raw_fd(fd) })
}

/// Opens a regular file by path: no symlink as the last component, nothing but a
/// regular file opened (see PATH_FLAGS).
pub fn open_plain(path: &Path) -> io::Result<File> {
    let c = c_path(path)?;
    // SAFETY: plain syscall on a NUL-terminated path.
    let fd = unsafe { libc::open(c.as_ptr(), PATH_FLAGS) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    reopen_regular(fd)
}

/// Opens the file at `path` only if it is the one with this device and inode (what the
/// kernel reported for a mapping): checked on the handle, before anything is opened for
/// reading, so a path that means another file here (a container's path read on the
/// host, a file replaced since) is never opened.
pub fn open_identified(path: &Path, dev: (u32, u32), ino: u64) -> io::Result<File> {
    let c = c_path(path)?;
    // SAFETY: plain syscall on a NUL-terminated path.
    let fd = unsafe { libc::open(c.as_ptr(), PATH_FLAGS) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh descriptor we own.
    let handle = unsafe { File::from_raw_fd(fd) };
    let md = handle.metadata()?;
    if md.ino() != ino || (libc::major(md.dev()), libc::minor(md.dev())) != dev {
        return Err(io::Error::other("another file than the one mapped"));
    }
    reopen_regular(std::os::fd::IntoRawFd::into_raw_fd(handle))
}

/// Opens `rel` below the directory `dir` with no symlink anywhere on the way and no
/// `..` out of it (openat2's RESOLVE_NO_SYMLINKS | RESOLVE_BENEATH): a user who owns a
/// directory below cannot point it elsewhere.
pub fn open_beneath(dir: &Path, rel: &Path) -> io::Result<File> {
    let d = File::open(dir)?;
    let c = c_path(rel)?;
    // SAFETY: open_how is plain old data; all-zero is its "nothing set".
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = PATH_FLAGS as u64;
    how.resolve = libc::RESOLVE_NO_SYMLINKS | libc::RESOLVE_BENEATH | libc::RESOLVE_NO_MAGICLINKS;
    // SAFETY: openat2 with a valid dirfd, NUL-terminated path and a sized open_how.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            d.as_raw_fd(),
            c.as_ptr(),
            &how as *const libc::open_how,
            std::mem::size_of::<libc::open_how>(),
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    reopen_regular(fd as i32)
}

/// Whether only root can change this file or directory: root owns it and neither group
/// nor others may write it.
pub fn root_only(md: &std::fs::Metadata) -> bool {
    md.uid() == 0 && md.mode() & 0o022 == 0
}

/// A sealed memory file holding `bytes` (a journal entry too big for a datagram).
pub fn sealed_bytes(bytes: &[u8]) -> io::Result<File> {
    let mut f = memfd("crashtrace-entry")?;
    io::Write::write_all(&mut f, bytes)?;
    seal(&f)?;
    Ok(f)
}

fn memfd(name: &str) -> io::Result<File> {
    let name = CString::new(name).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: plain syscall; the name is NUL-terminated.
    let fd =
        unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh descriptor we own.
    Ok(unsafe { File::from_raw_fd(fd) })
}

fn seal(f: &File) -> io::Result<()> {
    let seals = libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_WRITE | libc::F_SEAL_SEAL;
    // SAFETY: fcntl on our own descriptor, with no writable mapping of it left.
    if unsafe { libc::fcntl(f.as_raw_fd(), libc::F_ADD_SEALS, seals) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// A private, sealed copy of `src` (at most `limit` bytes), with `patch` applied before
/// sealing: nobody, root included, can change, grow or shrink it afterwards, so a
/// mapping of it never faults and never changes under a parser.
pub fn sealed_copy(src: &File, limit: u64, patch: impl FnOnce(&mut [u8])) -> io::Result<File> {
    let size = src.metadata()?.len();
    if size > limit {
        return Err(io::Error::other(format!(
            "{size} bytes, more than the {limit} crashtrace copies"
        )));
    }
    let mut copy = memfd("crashtrace-copy")?;
    // Read by offset, from the start whatever the descriptor's position. The source may
    // shrink or grow while it is copied: take what is there, up to the size seen.
    let mut buf = vec![0; 1 << 20];
    let mut at = 0;
    while at < size {
        let want = buf.len().min((size - at) as usize);
        let n = std::os::unix::fs::FileExt::read_at(src, &mut buf[..want], at)?;
        if n == 0 {
            break;
        }
        io::Write::write_all(&mut copy, &buf[..n])?;
        at += n as u64;
    }
    {
        let len = copy.metadata()?.len() as usize;
        if len > 0 {
            // SAFETY: our own memory file, not shared with anyone, mapped writable once.
            let mut map = unsafe { memmap2::MmapMut::map_mut(&copy) }?;
            let n = len.min(map.len());
            patch(&mut map[..n]);
        }
    }
    // The writable mapping above is gone.
    seal(&copy)?;
    Ok(copy)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_what_is_not_a_plain_file() {
        let dir = std::env::temp_dir().join(format!("ct-files-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("sub")).unwrap();
        std::fs::write(dir.join("sub/f"), b"x").unwrap();
        let fifo = c_path(&dir.join("fifo")).unwrap();
        // SAFETY: plain syscall on a NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
        std::os::unix::fs::symlink(dir.join("sub/f"), dir.join("link")).unwrap();
        std::os::unix::fs::symlink(dir.join("sub"), dir.join("dirlink")).unwrap();

        assert!(open_plain(&dir.join("sub/f")).is_ok());
        // Returns at once instead of waiting for a writer.
        assert!(open_plain(&dir.join("fifo")).is_err());
        assert!(open_plain(&dir.join("link")).is_err());
        assert!(open_plain(Path::new("/dev/null")).is_err());
        assert!(open_beneath(&dir, Path::new("sub/f")).is_ok());
        assert!(open_beneath(&dir, Path::new("dirlink/f")).is_err());
        assert!(open_beneath(&dir.join("sub"), Path::new("../sub/f")).is_err());
        assert!(open_beneath(&dir, Path::new("/etc/passwd")).is_err());
        let md = std::fs::metadata(dir.join("sub/f")).unwrap();
        let dev = (libc::major(md.dev()), libc::minor(md.dev()));
        assert!(open_identified(&dir.join("sub/f"), dev, md.ino()).is_ok());
        // Another file under the same name (a container's path seen from the host).
        assert!(open_identified(&dir.join("sub/f"), dev, md.ino() + 1).is_err());
        assert!(open_identified(&dir.join("sub/f"), (dev.0 + 1, dev.1), md.ino()).is_err());
        let fifo_md = std::fs::metadata(dir.join("fifo")).unwrap();
        assert!(open_identified(&dir.join("fifo"), dev, fifo_md.ino()).is_err());

        let mut src = File::open(dir.join("sub/f")).unwrap();
        // Copied from the start whatever the position.
        io::Read::read_exact(&mut src, &mut [0]).unwrap();
        let copy = sealed_copy(&src, 16, |b| b[0] = b'y').unwrap();
        assert_eq!(
            std::fs::read(format!("/proc/self/fd/{}", copy.as_raw_fd())).unwrap(),
            b"y"
        );
        assert!(io::Write::write_all(&mut &copy, b"z").is_err(), "sealed");
        assert!(copy.set_len(0).is_err(), "sealed");
        assert!(sealed_copy(&src, 0, |_| ()).is_err(), "over the limit");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
