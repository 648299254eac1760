//! `GET /containerLogs/{namespace}/{pod}/{container}`: a container run's
//! CRI-format log files (see `runtime::process::logs`) turned back into the
//! text the container wrote, as the kubelet serves it to `kubectl logs`.
//!
//! Options are kubelet's: `previous` reads the run before the latest,
//! `sinceSeconds`/`sinceTime` drop older entries, `tailLines` keeps the last
//! lines, `timestamps` prefixes each line with its time (RFC 3339, always
//! nine fraction digits, as the kubelet prints it), `limitBytes` cuts the
//! output, and `follow` keeps sending what is appended until the run ends
//! (or the client leaves). A run's rotated file (`<attempt>.log.1`) comes
//! before its current one; following goes across rotations.
//!
//! The reading is plain blocking file I/O in a [`LogReader`], driven in
//! small steps on tokio's blocking threads; following polls, as a file the
//! supervisor appends to is not worth an inotify watch per reader.

use super::{Failure, State, query_pairs};
use crate::runtime::{ContainerState, RuntimeError};
use axum::body::Body;
use axum::extract::{Path as UrlPath, RawQuery, State as Shared};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use jiff::Timestamp;
use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, ErrorKind, Read};
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// How often a follower looks for new entries.
const FOLLOW_POLL: Duration = Duration::from_millis(100);
/// How much of a file one step reads; also about the largest chunk sent.
const STEP: usize = 64 * 1024;

/// kubelet's log options, from the query string.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LogOptions {
    pub follow: bool,
    pub previous: bool,
    pub timestamps: bool,
    pub tail_lines: Option<usize>,
    /// Entries older than this are left out (`sinceSeconds` or `sinceTime`).
    pub since: Option<Timestamp>,
    pub limit_bytes: Option<u64>,
}

impl LogOptions {
    /// Parses the query as the kubelet does, refusing what the API server's
    /// validation of `PodLogOptions` would refuse.
    pub fn parse(query: &str, now: Timestamp) -> Result<Self, String> {
        let mut opts = Self::default();
        let (mut since_seconds, mut since_time) = (None, None);
        for (key, value) in query_pairs(query) {
            let number = |what: &str| value.parse::<i64>().map_err(|_| format!("invalid {what} {value:?}: not an integer"));
            match key.as_str() {
                "follow" => opts.follow = flag(&value),
                "previous" => opts.previous = flag(&value),
                "timestamps" => opts.timestamps = flag(&value),
                "tailLines" => {
                    let n = number("tailLines")?;
                    opts.tail_lines = Some(usize::try_from(n).map_err(|_| format!("tailLines must be 0 or greater, got {n}"))?);
                }
                "limitBytes" => {
                    let n = number("limitBytes")?;
                    opts.limit_bytes =
                        Some(u64::try_from(n).ok().filter(|&n| n > 0).ok_or(format!("limitBytes must be greater than 0, got {n}"))?);
                }
                "sinceSeconds" => {
                    let n = number("sinceSeconds")?;
                    since_seconds =
                        Some(u64::try_from(n).ok().filter(|&n| n > 0).ok_or(format!("sinceSeconds must be greater than 0, got {n}"))?);
                }
                "sinceTime" => {
                    since_time = Some(value.parse::<Timestamp>().map_err(|e| format!("invalid sinceTime {value:?}: {e}"))?);
                }
                _ => {}
            }
        }
        opts.since = match (since_seconds, since_time) {
            (Some(_), Some(_)) => return Err("at most one of sinceTime or sinceSeconds may be specified".into()),
            (Some(seconds), None) => Some(now - Duration::from_secs(seconds)),
            (None, time) => time,
        };
        Ok(opts)
    }
}

fn flag(value: &str) -> bool {
    matches!(value, "true" | "1" | "True" | "TRUE")
}

/// One entry of a CRI log file.
#[derive(Clone, Debug, PartialEq)]
pub struct Entry {
    pub time: Timestamp,
    /// A piece of a longer line; the line goes on in the next entry.
    pub partial: bool,
    pub text: Vec<u8>,
}

/// Parses `<RFC 3339 time> <stdout|stderr> <F|P> <text>` (no newline).
pub fn parse_entry(line: &[u8]) -> Option<Entry> {
    let mut parts = line.splitn(4, |&b| b == b' ');
    let time = std::str::from_utf8(parts.next()?).ok()?.parse::<Timestamp>().ok()?;
    let _stream = parts.next().filter(|s| matches!(*s, b"stdout" | b"stderr"))?;
    let partial = match parts.next()? {
        b"P" => true,
        b"F" => false,
        _ => return None,
    };
    Some(Entry { time, partial, text: parts.next().unwrap_or_default().to_vec() })
}

/// The time as the kubelet prints it: UTC, nine fraction digits.
fn format_time(time: Timestamp) -> String {
    jiff::fmt::temporal::DateTimePrinter::new().precision(Some(9)).timestamp_to_string(&time)
}

/// Which file a reader is in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// `<log>.1`, read once, first.
    Rotated,
    /// `<log>`, followed across rotations.
    Current,
}

/// Entries of one run's log files, in order, as far as they are written.
struct EntryReader {
    path: PathBuf,
    phase: Phase,
    /// The open file and its inode (to notice the file being rotated away).
    file: Option<(File, u64)>,
    /// Bytes after the last complete line read.
    partial_line: Vec<u8>,
}

impl EntryReader {
    fn new(path: PathBuf) -> Self {
        Self { path, phase: Phase::Rotated, file: None, partial_line: Vec::new() }
    }

    fn rotated_path(&self) -> PathBuf {
        let mut rotated = self.path.clone().into_os_string();
        rotated.push(".1");
        rotated.into()
    }

    /// Up to about [`STEP`] bytes of complete entries, and whether the
    /// reader is at the end of what is written now.
    fn read(&mut self) -> io::Result<(Vec<Entry>, bool)> {
        let mut buf = vec![0u8; STEP];
        loop {
            if self.file.is_none() {
                let path = match self.phase {
                    Phase::Rotated => self.rotated_path(),
                    Phase::Current => self.path.clone(),
                };
                match File::open(&path) {
                    Ok(file) => {
                        let inode = file.metadata()?.ino();
                        self.file = Some((file, inode));
                    }
                    Err(e) if e.kind() == ErrorKind::NotFound && self.phase == Phase::Rotated => {
                        self.phase = Phase::Current;
                        continue;
                    }
                    // Not written yet (a run that has just started).
                    Err(e) if e.kind() == ErrorKind::NotFound => return Ok((Vec::new(), true)),
                    Err(e) => return Err(io::Error::new(e.kind(), format!("opening {}: {e}", path.display()))),
                }
            }
            let (file, inode) = self.file.as_mut().expect("opened above");
            let n = file.read(&mut buf)?;
            if n > 0 {
                return Ok((self.entries(&buf[..n]), false));
            }
            // The end of this file: go on to the current file, or to the
            // one that replaced it when it was rotated away.
            let rotated_away = match self.phase {
                Phase::Rotated => true,
                Phase::Current => std::fs::metadata(&self.path).map(|m| m.ino() != *inode).unwrap_or(false),
            };
            if !rotated_away {
                return Ok((Vec::new(), true));
            }
            // A last read: the writer may have appended before rotating.
            let n = file.read(&mut buf)?;
            if n > 0 {
                return Ok((self.entries(&buf[..n]), false));
            }
            self.file = None;
            self.phase = Phase::Current;
            self.partial_line.clear();
        }
    }

    /// The complete lines of what was read so far, parsed; unparseable
    /// lines are skipped.
    fn entries(&mut self, data: &[u8]) -> Vec<Entry> {
        self.partial_line.extend_from_slice(data);
        let Some(end) = self.partial_line.iter().rposition(|&b| b == b'\n') else { return Vec::new() };
        let complete: Vec<u8> = self.partial_line.drain(..=end).collect();
        complete.split(|&b| b == b'\n').filter(|line| !line.is_empty()).filter_map(parse_entry).collect()
    }
}

/// What a reader sends next: text, and whether it has caught up with the
/// files (or is done: see [`LogReader::done`]).
#[derive(Debug, Default)]
pub struct Chunk {
    pub data: Vec<u8>,
    pub caught_up: bool,
}

/// A run's log as the client asked for it, produced step by step.
pub struct LogReader {
    entries: EntryReader,
    opts: LogOptions,
    /// The last entry rendered ended a line (the next one gets a timestamp).
    at_line_start: bool,
    /// Bytes sent so far, against `limitBytes`.
    sent: u64,
    /// `tailLines` is applied once, to what was written before the request.
    tail_pending: bool,
}

impl LogReader {
    /// A reader of the log file at `path` (its rotated file first).
    pub fn new(path: PathBuf, opts: LogOptions) -> Self {
        let tail_pending = opts.tail_lines.is_some();
        Self { entries: EntryReader::new(path), opts, at_line_start: true, sent: 0, tail_pending }
    }

    /// `limitBytes` has been reached: nothing more will be sent.
    pub fn done(&self) -> bool {
        self.opts.limit_bytes.is_some_and(|limit| self.sent >= limit)
    }

    /// The next piece of output. With `tailLines`, the first call reads
    /// everything written so far and answers its last lines.
    pub fn next_chunk(&mut self) -> io::Result<Chunk> {
        if self.done() {
            return Ok(Chunk { data: Vec::new(), caught_up: true });
        }
        if self.tail_pending {
            self.tail_pending = false;
            let n = self.opts.tail_lines.unwrap_or(0);
            // Lines, each as its entries (pieces of a long line, then its end).
            let mut lines: VecDeque<Vec<Entry>> = VecDeque::new();
            let mut open_line = false;
            loop {
                let (entries, caught_up) = self.entries.read()?;
                for entry in entries.into_iter().filter(|e| self.opts.since.is_none_or(|since| e.time >= since)) {
                    let partial = entry.partial;
                    match lines.back_mut() {
                        Some(line) if open_line => line.push(entry),
                        _ => lines.push_back(vec![entry]),
                    }
                    open_line = partial;
                    if lines.len() > n {
                        lines.pop_front();
                    }
                }
                if caught_up {
                    break;
                }
            }
            let mut data = Vec::new();
            for entry in lines.iter().flatten() {
                self.render(entry, &mut data);
            }
            return Ok(Chunk { data, caught_up: true });
        }
        let (entries, caught_up) = self.entries.read()?;
        let mut data = Vec::new();
        for entry in &entries {
            if self.selected(entry) {
                self.render(entry, &mut data);
            }
        }
        Ok(Chunk { data, caught_up: caught_up || self.done() })
    }

    fn selected(&self, entry: &Entry) -> bool {
        self.opts.since.is_none_or(|since| entry.time >= since)
    }

    /// Appends one entry's text (with the time at the start of a line when
    /// asked), stopping at `limitBytes`.
    fn render(&mut self, entry: &Entry, out: &mut Vec<u8>) {
        let start = out.len();
        if self.opts.timestamps && self.at_line_start {
            out.extend_from_slice(format_time(entry.time).as_bytes());
            out.push(b' ');
        }
        out.extend_from_slice(&entry.text);
        if !entry.partial {
            out.push(b'\n');
        }
        self.at_line_start = !entry.partial;
        let mut added = (out.len() - start) as u64;
        if let Some(limit) = self.opts.limit_bytes {
            let room = limit.saturating_sub(self.sent);
            if added > room {
                out.truncate(start + room as usize);
                added = room;
            }
        }
        self.sent += added;
    }
}

/// The handler: finds the run, then streams its log.
pub(super) async fn container_logs(
    Shared(state): Shared<Arc<State>>,
    UrlPath((namespace, pod, container)): UrlPath<(String, String, String)>,
    RawQuery(query): RawQuery,
) -> Result<Response, Failure> {
    let opts = LogOptions::parse(query.as_deref().unwrap_or_default(), Timestamp::now()).map_err(Failure::bad_request)?;
    let uid = state.pod_uid(&namespace, &pod)?;
    let (latest, running) = match state.runtime.container_state(&uid, &container).await {
        Ok((attempt, ContainerState::Running { .. })) => (attempt, true),
        Ok((attempt, ContainerState::Exited { .. })) => (attempt, false),
        Err(RuntimeError::NoContainer { .. }) => {
            return Err(Failure::bad_request(format!("container \"{container}\" in pod \"{pod}\" is waiting to start")));
        }
        Err(RuntimeError::NoSandbox { .. }) => {
            return Err(Failure::not_found(format!("pod \"{pod}\" in namespace \"{namespace}\" has no sandbox on this node")));
        }
        Err(e) => return Err(Failure::internal(e.to_string())),
    };
    let attempt = if opts.previous {
        latest
            .checked_sub(1)
            .ok_or_else(|| Failure::bad_request(format!("previous terminated container \"{container}\" in pod \"{pod}\" not found")))?
    } else {
        latest
    };
    // Only the latest run can still grow.
    let follow = opts.follow && running && attempt == latest;
    let reader = LogReader::new(state.runtime.log_path(&uid, &container, attempt), opts);
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(4);
    let runtime = Arc::clone(&state.runtime);
    tokio::spawn(async move {
        let still_running =
            || async { matches!(runtime.container_state(&uid, &container).await, Ok((a, ContainerState::Running { .. })) if a == attempt) };
        if let Err(e) = pump(reader, follow, &tx, still_running).await {
            tracing::warn!(pod = %format!("{namespace}/{pod}"), container, attempt, error = %e, "reading a container log");
        }
    });
    let body = Body::from_stream(futures::stream::unfold(rx, |mut rx| async {
        let chunk = rx.recv().await?;
        Some((Ok::<_, std::convert::Infallible>(chunk), rx))
    }));
    Ok(([(header::CONTENT_TYPE, "text/plain")], body).into_response())
}

/// Sends the reader's output to `tx` until it is caught up (not following)
/// or the run has ended and its log is drained (following), or the
/// receiver is gone.
async fn pump<F, Fut>(mut reader: LogReader, follow: bool, tx: &tokio::sync::mpsc::Sender<Bytes>, still_running: F) -> io::Result<()>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let mut ending = !follow;
    loop {
        let (back, chunk) = tokio::task::spawn_blocking(move || {
            let chunk = reader.next_chunk();
            (reader, chunk)
        })
        .await
        .map_err(io::Error::other)?;
        reader = back;
        let chunk = chunk?;
        if !chunk.data.is_empty() && tx.send(Bytes::from(chunk.data)).await.is_err() {
            return Ok(()); // The client left.
        }
        if reader.done() || (chunk.caught_up && ending) {
            return Ok(());
        }
        if !chunk.caught_up {
            continue;
        }
        // Caught up while following: the run's end is the log's end, once
        // what it wrote last is read (its exit is recorded after that).
        if !still_running().await {
            ending = true;
            continue;
        }
        tokio::select! {
            () = tokio::time::sleep(FOLLOW_POLL) => {}
            () = tx.closed() => return Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::io::Write;
    use std::path::Path;

    const T0: &str = "2025-01-02T03:04:05.1Z";

    /// The whole output of a reader that does not follow.
    fn read_all(path: &Path, opts: LogOptions) -> io::Result<Vec<u8>> {
        let mut reader = LogReader::new(path.to_path_buf(), opts);
        let mut out = Vec::new();
        loop {
            let chunk = reader.next_chunk()?;
            out.extend_from_slice(&chunk.data);
            if chunk.caught_up {
                return Ok(out);
            }
        }
    }

    fn line(time: &str, stream: &str, tag: &str, text: &str) -> String {
        format!("{time} {stream} {tag} {text}\n")
    }

    /// A log of `lines` entries "line N" (stdout, full) one second apart from T0.
    fn write_log(path: &Path, from: usize, to: usize) {
        let start: Timestamp = T0.parse().unwrap();
        let mut file = fs::OpenOptions::new().create(true).append(true).open(path).unwrap();
        for i in from..to {
            let time = start + Duration::from_secs(i as u64);
            file.write_all(line(&time.to_string(), "stdout", "F", &format!("line {i}")).as_bytes()).unwrap();
        }
    }

    fn text(path: &Path, opts: LogOptions) -> String {
        String::from_utf8(read_all(path, opts).unwrap()).unwrap()
    }

    fn lines(from: usize, to: usize) -> String {
        (from..to).map(|i| format!("line {i}\n")).collect()
    }

    #[test]
    fn entries_parse_and_bad_lines_do_not() {
        let e = parse_entry(b"2025-01-02T03:04:05.123456789Z stderr P a b c").unwrap();
        assert_eq!((e.partial, e.text.as_slice()), (true, &b"a b c"[..]));
        assert_eq!(parse_entry(b"2025-01-02T03:04:05Z stdout F").unwrap().text, b"");
        assert!(parse_entry(b"yesterday stdout F x").is_none());
        assert!(parse_entry(b"2025-01-02T03:04:05Z stdin F x").is_none());
        assert!(parse_entry(b"2025-01-02T03:04:05Z stdout X x").is_none());
    }

    #[test]
    fn the_rotated_file_comes_first_and_tail_spans_both() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.log");
        write_log(&dir.path().join("0.log.1"), 0, 5);
        write_log(&path, 5, 8);
        assert_eq!(text(&path, LogOptions::default()), lines(0, 8));
        assert_eq!(text(&path, LogOptions { tail_lines: Some(4), ..Default::default() }), lines(4, 8));
        assert_eq!(text(&path, LogOptions { tail_lines: Some(0), ..Default::default() }), "");
        assert_eq!(text(&path, LogOptions { tail_lines: Some(100), ..Default::default() }), lines(0, 8));
        // No file at all (a run not started yet) is an empty log.
        assert_eq!(text(&dir.path().join("9.log"), LogOptions::default()), "");
    }

    #[test]
    fn timestamps_prefix_lines_with_nine_fraction_digits() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.log");
        write_log(&path, 0, 2);
        let out = text(&path, LogOptions { timestamps: true, ..Default::default() });
        assert_eq!(out, "2025-01-02T03:04:05.100000000Z line 0\n2025-01-02T03:04:06.100000000Z line 1\n");
    }

    #[test]
    fn partial_pieces_join_into_one_line_counted_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.log");
        let log = [
            line(T0, "stdout", "F", "first"),
            line(T0, "stdout", "P", "long "),
            line(T0, "stdout", "P", "line "),
            line(T0, "stdout", "F", "ends"),
            line(T0, "stderr", "F", "oops"),
        ];
        fs::write(&path, log.concat()).unwrap();
        assert_eq!(text(&path, LogOptions::default()), "first\nlong line ends\noops\n");
        assert_eq!(text(&path, LogOptions { tail_lines: Some(2), ..Default::default() }), "long line ends\noops\n");
        let stamped = text(&path, LogOptions { tail_lines: Some(2), timestamps: true, ..Default::default() });
        assert_eq!(stamped, "2025-01-02T03:04:05.100000000Z long line ends\n2025-01-02T03:04:05.100000000Z oops\n");
    }

    #[test]
    fn since_drops_older_entries() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.log");
        write_log(&path, 0, 6);
        let since: Timestamp = "2025-01-02T03:04:08.1Z".parse().unwrap();
        assert_eq!(text(&path, LogOptions { since: Some(since), ..Default::default() }), lines(3, 6));
        assert_eq!(text(&path, LogOptions { since: Some(since), tail_lines: Some(2), ..Default::default() }), lines(4, 6));
    }

    #[test]
    fn limit_bytes_cuts_the_output_exactly() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.log");
        write_log(&path, 0, 6);
        assert_eq!(text(&path, LogOptions { limit_bytes: Some(10), ..Default::default() }), "line 0\nlin");
        assert_eq!(text(&path, LogOptions { limit_bytes: Some(1000), ..Default::default() }), lines(0, 6));
        let cut = text(&path, LogOptions { limit_bytes: Some(12), tail_lines: Some(1), ..Default::default() });
        assert_eq!(cut, "line 5\n");
    }

    #[test]
    fn a_follower_reads_appended_lines_and_goes_across_a_rotation() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.log");
        write_log(&path, 0, 2);
        let mut reader = LogReader::new(path.clone(), LogOptions { follow: true, tail_lines: Some(1), ..Default::default() });
        let mut next = || {
            let mut out = Vec::new();
            loop {
                let chunk = reader.next_chunk().unwrap();
                out.extend(chunk.data);
                if chunk.caught_up {
                    return String::from_utf8(out).unwrap();
                }
            }
        };
        assert_eq!(next(), lines(1, 2));
        assert_eq!(next(), "");
        write_log(&path, 2, 4);
        assert_eq!(next(), lines(2, 4));
        // The writer appends, rotates, and starts a new file.
        write_log(&path, 4, 5);
        fs::rename(&path, dir.path().join("0.log.1")).unwrap();
        write_log(&path, 5, 7);
        assert_eq!(next(), lines(4, 7));
        // An entry being written is sent once complete.
        let mut file = fs::OpenOptions::new().append(true).open(&path).unwrap();
        file.write_all(format!("{T0} stdout F hal").as_bytes()).unwrap();
        assert_eq!(next(), "");
        file.write_all(b"f\n").unwrap();
        assert_eq!(next(), "half\n");
    }

    #[test]
    fn options_parse_like_the_kubelets() {
        let now: Timestamp = "2025-01-02T03:04:05Z".parse().unwrap();
        let opts = LogOptions::parse("follow=true&previous=1&timestamps=true&tailLines=10&limitBytes=5&sinceSeconds=60", now).unwrap();
        let since = Some("2025-01-02T03:03:05Z".parse().unwrap());
        let expect = LogOptions { follow: true, previous: true, timestamps: true, tail_lines: Some(10), since, limit_bytes: Some(5) };
        assert_eq!(opts, expect);
        let opts = LogOptions::parse("sinceTime=2025-01-01T00%3A00%3A00Z", now).unwrap();
        assert_eq!(opts.since, Some("2025-01-01T00:00:00Z".parse().unwrap()));
        assert!(LogOptions::parse("sinceTime=2025-01-01T00:00:00Z&sinceSeconds=5", now).is_err());
        assert!(LogOptions::parse("tailLines=-1", now).is_err());
        assert!(LogOptions::parse("limitBytes=0", now).is_err());
        assert!(LogOptions::parse("tailLines=x", now).is_err());
    }
}
