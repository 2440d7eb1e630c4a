//! Reading an input file (license, policy, configuration, key) that an administrator
//! names: only a regular file, and only up to a size.
//!
//! A FIFO would block the reader until something writes to it (a reload, and with it a
//! shutdown, would hang), `/dev/zero` would be read until memory runs out, and a huge file
//! costs memory in proportion. So the file is opened without blocking (`O_NONBLOCK`, which
//! matters only for FIFOs and devices), must be a regular file, and must not exceed the
//! limit, checked both before reading and while reading (a file that grows meanwhile).

use std::io::{self, Read};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// Largest license file read, in bytes (16 MiB: about 50,000 signed FEATURE lines).
pub const MAX_LICENSE_FILE: u64 = 16 << 20;
/// Largest policy (options) file read, in bytes.
pub const MAX_POLICY_FILE: u64 = 16 << 20;
/// Largest configuration file read, in bytes.
pub const MAX_CONFIG_FILE: u64 = 1 << 20;
/// Largest key file read, in bytes.
pub const MAX_KEY_FILE: u64 = 64 << 10;

/// Reads `path` as UTF-8 text if it is a regular file of at most `max` bytes; otherwise an
/// error that says which of these it is not.
pub fn read_text_file(path: &Path, max: u64) -> io::Result<String> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)?;
    let meta = file.metadata()?;
    let kind = meta.file_type();
    if !kind.is_file() {
        use std::os::unix::fs::FileTypeExt;
        let what = if kind.is_dir() {
            "a directory"
        } else if kind.is_fifo() {
            "a FIFO"
        } else if kind.is_char_device() || kind.is_block_device() {
            "a device"
        } else if kind.is_socket() {
            "a socket"
        } else {
            "not a regular file"
        };
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("is {what}, not a regular file"),
        ));
    }
    let too_big = |size: u64| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("is {size} bytes, more than the {max} bytes allowed"),
        )
    };
    if meta.len() > max {
        return Err(too_big(meta.len()));
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    file.take(max + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > max {
        return Err(too_big(bytes.len() as u64));
    }
    String::from_utf8(bytes)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "is not UTF-8 text"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_regular_files_within_the_limit_are_read() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("a.lic");
        std::fs::write(&file, "FEATURE x\n").unwrap();
        assert_eq!(read_text_file(&file, 100).unwrap(), "FEATURE x\n");
        let err = read_text_file(&file, 4).unwrap_err().to_string();
        assert!(err.contains("more than the 4 bytes"), "{err}");
        let err = read_text_file(dir.path(), 100).unwrap_err().to_string();
        assert!(err.contains("directory"), "{err}");
        let err = read_text_file(Path::new("/dev/zero"), 100)
            .unwrap_err()
            .to_string();
        assert!(err.contains("device"), "{err}");
        let fifo = dir.path().join("fifo");
        assert!(
            std::process::Command::new("mkfifo")
                .arg(&fifo)
                .status()
                .unwrap()
                .success()
        );
        // Returns at once, without a writer.
        let err = read_text_file(&fifo, 100).unwrap_err().to_string();
        assert!(err.contains("FIFO"), "{err}");
    }
}
