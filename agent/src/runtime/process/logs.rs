//! Container logs: stdout and stderr, line by line, into one file per run
//! in the CRI log format, with size-based rotation.
//!
//! The format is the one the kubelet reads from every CRI runtime (and so
//! what `kubectl logs` will need): `<RFC3339Nano> <stream> <tag> <text>`,
//! where the tag is `F` for a full line and `P` for a piece of a line longer
//! than [`MAX_LINE`] (more pieces follow, the last one `F`). The supervisor
//! writes the files itself, so rotation is simply done by the writer: past
//! [`MAX_FILE`] bytes the file becomes `<file>.1` (replacing an older one)
//! and a new file starts. A full disk must never block the container, so
//! write errors are reported once and the pipe keeps being drained.

use jiff::Timestamp;
use std::fs::{self, File, OpenOptions};
use std::io::{self, ErrorKind, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Rotate a log file once it would grow past this (kubelet's default
/// `containerLogMaxSize`).
pub const MAX_FILE: u64 = 10 * 1024 * 1024;
/// Lines longer than this are split into `P` pieces (containerd's limit).
pub const MAX_LINE: usize = 16 * 1024;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    fn as_str(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

/// One run's log file, shared by its stdout and stderr readers.
pub struct LogFile {
    path: PathBuf,
    file: File,
    size: u64,
    max: u64,
    failed: bool,
}

impl LogFile {
    /// Opens (appending) or creates `path` and its directory.
    pub fn open(path: &Path, max: u64) -> io::Result<Self> {
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir)?;
        }
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        let size = file.metadata()?.len();
        Ok(Self { path: path.to_path_buf(), file, size, max, failed: false })
    }

    /// Appends one entry, rotating first if it would not fit.
    pub fn write_entry(&mut self, stream: Stream, partial: bool, text: &[u8]) -> io::Result<()> {
        let mut entry = format!("{} {} {} ", Timestamp::now(), stream.as_str(), if partial { 'P' } else { 'F' }).into_bytes();
        entry.extend_from_slice(text);
        entry.push(b'\n');
        if self.size > 0 && self.size + entry.len() as u64 > self.max {
            self.rotate()?;
        }
        self.file.write_all(&entry)?;
        self.size += entry.len() as u64;
        Ok(())
    }

    fn rotate(&mut self) -> io::Result<()> {
        let mut rotated = self.path.clone().into_os_string();
        rotated.push(".1");
        fs::rename(&self.path, &rotated)?;
        self.file = OpenOptions::new().create(true).append(true).open(&self.path)?;
        self.size = 0;
        Ok(())
    }

    /// Writes, reporting the first failure to stderr (the supervisor's log)
    /// and dropping entries until writing works again.
    fn write_or_report(&mut self, stream: Stream, partial: bool, text: &[u8]) {
        match self.write_entry(stream, partial, text) {
            Ok(()) => self.failed = false,
            Err(e) if !self.failed => {
                self.failed = true;
                eprintln!("{}: writing container log {}: {e}", Timestamp::now(), self.path.display());
            }
            Err(_) => {}
        }
    }
}

/// Copies `reader` (a container's stdout or stderr pipe) into `log` line by
/// line until end of file, i.e. until every process holding the pipe's
/// write end has exited.
pub fn forward(mut reader: impl Read, stream: Stream, log: &Mutex<LogFile>) {
    let mut buf = vec![0u8; 32 * 1024];
    let mut pending: Vec<u8> = Vec::new();
    let emit = |text: &[u8], partial: bool| log.lock().unwrap_or_else(|e| e.into_inner()).write_or_report(stream, partial, text);
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => {
                eprintln!("{}: reading a container's {}: {e}", Timestamp::now(), stream.as_str());
                break;
            }
        };
        pending.extend_from_slice(&buf[..n]);
        let mut start = 0;
        while let Some(end) = pending[start..].iter().position(|&b| b == b'\n') {
            emit(&pending[start..start + end], false);
            start += end + 1;
        }
        while pending.len() - start >= MAX_LINE {
            emit(&pending[start..start + MAX_LINE], true);
            start += MAX_LINE;
        }
        pending.drain(..start);
    }
    if !pending.is_empty() {
        emit(&pending, false);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(path: &Path) -> Vec<(String, String, String)> {
        fs::read_to_string(path)
            .unwrap()
            .lines()
            .map(|line| {
                let mut parts = line.splitn(4, ' ');
                let ts = parts.next().unwrap();
                ts.parse::<Timestamp>().unwrap_or_else(|e| panic!("{ts:?} is not RFC 3339: {e}"));
                (parts.next().unwrap().to_string(), parts.next().unwrap().to_string(), parts.next().unwrap_or("").to_string())
            })
            .collect()
    }

    #[test]
    fn lines_are_written_in_cri_format() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("app/0.log");
        let log = Mutex::new(LogFile::open(&path, MAX_FILE).unwrap());
        forward(&b"one\n\ntwo\nno newline"[..], Stream::Stdout, &log);
        forward(&b"oops\n"[..], Stream::Stderr, &log);
        let expect =
            [("stdout", "F", "one"), ("stdout", "F", ""), ("stdout", "F", "two"), ("stdout", "F", "no newline"), ("stderr", "F", "oops")];
        let expect: Vec<_> = expect.iter().map(|(a, b, c)| (a.to_string(), b.to_string(), c.to_string())).collect();
        assert_eq!(entries(&path), expect);
    }

    #[test]
    fn long_lines_are_split_into_partial_pieces() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.log");
        let log = Mutex::new(LogFile::open(&path, MAX_FILE).unwrap());
        let mut input = vec![b'x'; MAX_LINE * 2 + 5];
        input.push(b'\n');
        forward(&input[..], Stream::Stdout, &log);
        let tags: Vec<_> = entries(&path).into_iter().map(|(_, tag, text)| (tag, text.len())).collect();
        assert_eq!(tags, [("P".to_string(), MAX_LINE), ("P".to_string(), MAX_LINE), ("F".to_string(), 5)]);
    }

    #[test]
    fn files_rotate_keeping_one_older_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.log");
        let log = Mutex::new(LogFile::open(&path, 200).unwrap());
        let input: String = (0..20).map(|i| format!("line {i:02}\n")).collect();
        forward(input.as_bytes(), Stream::Stdout, &log);
        let current = entries(&path);
        let older = entries(&dir.path().join("0.log.1"));
        assert!(fs::metadata(&path).unwrap().len() <= 200);
        assert_eq!(current.last().unwrap().2, "line 19");
        // Every line is in one of the two files or was rotated away, in order.
        let kept: Vec<_> = older.iter().chain(&current).map(|e| e.2.clone()).collect();
        let first: usize = kept[0][5..].parse().unwrap();
        assert_eq!(kept, (first..20).map(|i| format!("line {i:02}")).collect::<Vec<_>>());
        assert!(first > 0, "20 lines of ~45 bytes cannot fit in two 200-byte files");
    }
}
