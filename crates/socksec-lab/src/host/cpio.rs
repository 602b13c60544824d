//! A minimal writer for the `newc` cpio format the kernel unpacks as an initramfs.

use std::io::{self, Write};

const MODE_DIR: u32 = 0o040_000;
const MODE_FILE: u32 = 0o100_000;
const MODE_LINK: u32 = 0o120_000;
const MODE_CHAR: u32 = 0o020_000;

/// Streams entries into a `newc` archive; call [`Archive::finish`] to write the trailer.
pub struct Archive<W: Write> {
    out: W,
    next_ino: u32,
}

impl<W: Write> Archive<W> {
    /// An archive writing to `out`.
    pub fn new(out: W) -> Self {
        Self { out, next_ino: 1 }
    }

    fn entry(&mut self, name: &str, mode: u32, rdev: (u32, u32), data: &[u8]) -> io::Result<()> {
        let ino = self.next_ino;
        self.next_ino += 1;
        let size = u32::try_from(data.len())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "file too large for cpio"))?;
        let name_len = u32::try_from(name.len() + 1).expect("short path");
        let nlink = if mode & MODE_DIR != 0 { 2 } else { 1 };
        let header = format!(
            "070701{ino:08x}{mode:08x}{:08x}{:08x}{nlink:08x}{:08x}{size:08x}{:08x}{:08x}{:08x}{:08x}{name_len:08x}{:08x}",
            0, 0, 0, 0, 0, rdev.0, rdev.1, 0
        );
        self.out.write_all(header.as_bytes())?;
        self.out.write_all(name.as_bytes())?;
        self.out.write_all(&[0])?;
        self.pad(header.len() + name.len() + 1)?;
        self.out.write_all(data)?;
        self.pad(data.len())
    }

    fn pad(&mut self, written: usize) -> io::Result<()> {
        let n = (4 - written % 4) % 4;
        self.out.write_all(&[0; 3][..n])
    }

    /// A directory (parents must be added first).
    pub fn dir(&mut self, name: &str) -> io::Result<()> {
        self.entry(name, MODE_DIR | 0o755, (0, 0), &[])
    }

    /// A regular file with the given permission bits.
    pub fn file(&mut self, name: &str, perm: u32, data: &[u8]) -> io::Result<()> {
        self.entry(name, MODE_FILE | perm, (0, 0), data)
    }

    /// A symbolic link `name -> target`.
    pub fn symlink(&mut self, name: &str, target: &str) -> io::Result<()> {
        self.entry(name, MODE_LINK | 0o777, (0, 0), target.as_bytes())
    }

    /// A character device node.
    pub fn char_dev(&mut self, name: &str, perm: u32, major: u32, minor: u32) -> io::Result<()> {
        self.entry(name, MODE_CHAR | perm, (major, minor), &[])
    }

    /// Writes the trailer and returns the writer.
    pub fn finish(mut self) -> io::Result<W> {
        self.entry("TRAILER!!!", 0, (0, 0), &[])?;
        self.out.flush()?;
        Ok(self.out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_are_aligned_and_terminated() {
        let mut a = Archive::new(Vec::new());
        a.dir("bin").unwrap();
        a.file("bin/x", 0o755, b"hello").unwrap();
        a.symlink("sh", "bin/x").unwrap();
        let bytes = a.finish().unwrap();
        assert_eq!(bytes.len() % 4, 0);
        assert!(bytes.starts_with(b"070701"));
        let text = String::from_utf8_lossy(&bytes);
        assert!(text.contains("bin/x\0"));
        assert!(text.contains("hello"));
        assert!(text.contains("TRAILER!!!\0"));
        // Four entries, each with a 110-byte header starting with the magic.
        assert_eq!(text.matches("070701").count(), 4);
    }
}
