//! Tests of CRI log parsing and of `read_log` over real files.

use std::io::Write;
use std::path::{Path, PathBuf};

use futures::StreamExt;

use super::*;

#[test]
fn log_paths_follow_the_var_log_pods_layout() {
    let dir = pod_log_dir(Path::new("/logs"), "default", "web-1", "u-1");
    assert_eq!(dir, PathBuf::from("/logs/default_web-1_u-1"));
    assert_eq!(container_log_relpath("app", 2), PathBuf::from("app/2.log"));
}

fn ts(i: u32) -> String {
    format!("2016-10-06T00:17:{i:02}.669794202Z")
}

fn full(i: u32, content: &str) -> String {
    format!("{} stdout F {content}\n", ts(i))
}

fn write_log(dir: &Path, lines: &[String]) -> PathBuf {
    let path = dir.join("0.log");
    std::fs::write(&path, lines.concat()).expect("write log");
    path
}

async fn collect(path: PathBuf, opts: LogOptions) -> String {
    let chunks: Vec<_> = read_log(path, opts, CancellationToken::new())
        .collect()
        .await;
    let mut out = Vec::new();
    for c in chunks {
        out.extend_from_slice(&c.expect("chunk"));
    }
    String::from_utf8(out).expect("utf8")
}

#[test]
fn parse_cri_line_reads_fields_and_tags() {
    let l = parse_cri_line(b"2016-10-06T00:17:09.669794202Z stdout F log content\n").unwrap();
    assert_eq!(l.stream, "stdout");
    assert!(!l.partial);
    assert_eq!(l.content, b"log content");
    assert_eq!(l.timestamp.timestamp_subsec_nanos(), 669794202);
    let p = parse_cri_line(b"2016-10-06T00:17:09.5+02:00 stderr P:x part").unwrap();
    assert!(p.partial);
    assert_eq!(p.stream, "stderr");
    let empty = parse_cri_line(b"2016-10-06T00:17:09Z stdout F").unwrap();
    assert_eq!(empty.content, b"");
    assert!(parse_cri_line(b"garbage").is_err());
    assert!(parse_cri_line(b"2016-10-06T00:17:09Z stdin F x").is_err());
}

#[test]
fn format_rfc3339_nano_trims_zeros_like_go() {
    let t = DateTime::parse_from_rfc3339("2016-10-06T00:17:09.669794200Z").unwrap();
    assert_eq!(format_rfc3339_nano(&t), "2016-10-06T00:17:09.6697942Z");
    let t = DateTime::parse_from_rfc3339("2016-10-06T00:17:09+02:00").unwrap();
    assert_eq!(format_rfc3339_nano(&t), "2016-10-06T00:17:09+02:00");
}

#[test]
fn parse_since_seconds_or_time_but_not_both() {
    let now = DateTime::parse_from_rfc3339("2024-01-01T00:10:00Z")
        .unwrap()
        .with_timezone(&Utc);
    let s = parse_since(Some("60"), None, now).unwrap().unwrap();
    assert_eq!(s.to_rfc3339(), "2024-01-01T00:09:00+00:00");
    let t = parse_since(None, Some("2024-01-01T00:05:00Z"), now)
        .unwrap()
        .unwrap();
    assert_eq!(t.to_rfc3339(), "2024-01-01T00:05:00+00:00");
    assert!(parse_since(Some("0"), None, now).is_err());
    assert!(parse_since(Some("1"), Some("2024-01-01T00:05:00Z"), now).is_err());
    assert!(parse_since(None, Some("yesterday"), now).is_err());
    assert_eq!(parse_since(None, None, now).unwrap(), None);
}

#[test]
fn log_options_from_query_reads_kubectl_parameters() {
    let o = LogOptions::from_query(
        "container=app&follow=true&tailLines=10&timestamps=true&limitBytes=500&sinceTime=2024-01-01T00%3A05%3A00Z",
    )
    .unwrap();
    assert!(o.follow && o.timestamps);
    assert_eq!(o.tail_lines, Some(10));
    assert_eq!(o.limit_bytes, Some(500));
    assert_eq!(
        o.since_time.map(|t| t.to_rfc3339()).as_deref(),
        Some("2024-01-01T00:05:00+00:00")
    );
    assert!(LogOptions::from_query("tailLines=x").is_err());
    assert!(LogOptions::from_query("follow=maybe").is_err());
}

#[tokio::test]
async fn read_log_whole_file_prints_content_only() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_log(
        dir.path(),
        &[
            full(1, "one"),
            format!("{} stderr F two\n", ts(2)),
            full(3, ""),
        ],
    );
    assert_eq!(collect(path, LogOptions::default()).await, "one\ntwo\n\n");
}

#[tokio::test]
async fn read_log_partial_lines_join_with_one_timestamp() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_log(
        dir.path(),
        &[
            format!("{} stdout P hello \n", ts(1)),
            format!("{} stdout P big \n", ts(2)),
            full(3, "world"),
            full(4, "next"),
        ],
    );
    assert_eq!(
        collect(path.clone(), LogOptions::default()).await,
        "hello big world\nnext\n"
    );
    let opts = LogOptions {
        timestamps: true,
        ..Default::default()
    };
    assert_eq!(
        collect(path, opts).await,
        format!("{} hello big world\n{} next\n", ts(1), ts(4))
    );
}

#[tokio::test]
async fn read_log_tail_counts_joined_lines() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_log(
        dir.path(),
        &[
            full(1, "a"),
            full(2, "b"),
            format!("{} stdout P c1\n", ts(3)),
            full(4, "c2"),
            full(5, "d"),
        ],
    );
    let tail = |n| LogOptions {
        tail_lines: Some(n),
        ..Default::default()
    };
    assert_eq!(collect(path.clone(), tail(2)).await, "c1c2\nd\n");
    assert_eq!(collect(path.clone(), tail(1)).await, "d\n");
    assert_eq!(collect(path.clone(), tail(3)).await, "b\nc1c2\nd\n");
    assert_eq!(collect(path.clone(), tail(4)).await, "a\nb\nc1c2\nd\n");
    assert_eq!(collect(path.clone(), tail(0)).await, "");
    assert_eq!(collect(path.clone(), tail(10)).await, "a\nb\nc1c2\nd\n");
    assert_eq!(collect(path, tail(-1)).await, "a\nb\nc1c2\nd\n");
}

#[test]
fn find_tail_start_large_file_reads_back_across_blocks() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big.log");
    let mut f = std::fs::File::create(&path).unwrap();
    let long = "x".repeat(1000);
    for i in 0..1000u32 {
        f.write_all(full(i % 60, &format!("{i} {long}")).as_bytes())
            .unwrap();
    }
    drop(f);
    let mut f = std::fs::File::open(&path).unwrap();
    let size = f.metadata().unwrap().len();
    let start = find_tail_start(&mut f, 3).unwrap();
    let mut rest = String::new();
    f.seek(SeekFrom::Start(start)).unwrap();
    f.read_to_string(&mut rest).unwrap();
    assert_eq!(rest.lines().count(), 3);
    assert!(rest.lines().next().unwrap().contains(" F 997 "), "{start}");
    assert!(size - start < 4000);
    // a last line without its newline still counts
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .unwrap();
    f.write_all(format!("{} stdout F tail-end", ts(9)).as_bytes())
        .unwrap();
    let mut f = std::fs::File::open(&path).unwrap();
    let start = find_tail_start(&mut f, 1).unwrap();
    let mut rest = String::new();
    f.seek(SeekFrom::Start(start)).unwrap();
    f.read_to_string(&mut rest).unwrap();
    assert!(
        rest.ends_with("tail-end") && rest.lines().count() == 1,
        "{rest}"
    );
}

#[tokio::test]
async fn read_log_since_skips_older_lines_and_timestamps_prefix() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_log(
        dir.path(),
        &[full(1, "old"), full(5, "new"), full(6, "newer")],
    );
    let since = DateTime::parse_from_rfc3339(&ts(5))
        .unwrap()
        .with_timezone(&Utc);
    let opts = LogOptions {
        since_time: Some(since),
        timestamps: true,
        ..Default::default()
    };
    assert_eq!(
        collect(path, opts).await,
        format!("{} new\n{} newer\n", ts(5), ts(6))
    );
}

#[tokio::test]
async fn read_log_limit_bytes_truncates_and_ends() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_log(dir.path(), &[full(1, "hello"), full(2, "world")]);
    let opts = LogOptions {
        limit_bytes: Some(8),
        follow: true,
        ..Default::default()
    };
    // follow would wait forever; the limit ends the stream
    let out = tokio::time::timeout(Duration::from_secs(5), collect(path, opts))
        .await
        .expect("limit ends the stream");
    assert_eq!(out, "hello\nwo");
}

#[tokio::test]
async fn read_log_skips_unparseable_lines() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_log(dir.path(), &[full(1, "a"), "junk\n".into(), full(2, "b")]);
    assert_eq!(collect(path, LogOptions::default()).await, "a\nb\n");
}

#[tokio::test]
async fn read_log_missing_file_is_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Box::pin(read_log(
        dir.path().join("absent.log"),
        LogOptions::default(),
        CancellationToken::new(),
    ));
    let err = s.next().await.expect("one item").expect_err("error");
    assert!(err.to_string().contains("absent.log"), "{err}");
    assert!(s.next().await.is_none());
}

async fn next<S>(s: &mut S) -> Option<Result<Bytes, LogError>>
where
    S: Stream<Item = Result<Bytes, LogError>> + Unpin,
{
    tokio::time::timeout(Duration::from_secs(5), s.next())
        .await
        .expect("no timeout")
}

#[tokio::test]
async fn read_log_follow_picks_up_appended_lines_and_ends_on_cancel() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_log(dir.path(), &[full(1, "first"), full(2, "second")]);
    let stop = CancellationToken::new();
    let opts = LogOptions {
        follow: true,
        tail_lines: Some(1),
        ..Default::default()
    };
    let mut s = Box::pin(read_log(path.clone(), opts, stop.clone()));
    let first = next(&mut s).await;
    assert_eq!(&first.unwrap().unwrap()[..], b"second\n");

    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .unwrap();
    // half a raw line first: nothing is emitted until its newline arrives
    f.write_all(format!("{} stdout F thi", ts(3)).as_bytes())
        .unwrap();
    f.flush().unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    f.write_all(b"rd\n").unwrap();
    let third = next(&mut s).await.unwrap().unwrap();
    assert_eq!(&third[..], b"third\n");

    // written just before the stop: still delivered, then the stream ends
    f.write_all(full(4, "last").as_bytes()).unwrap();
    stop.cancel();
    let mut rest = Vec::new();
    while let Some(chunk) = next(&mut s).await {
        rest.extend_from_slice(&chunk.unwrap());
    }
    assert_eq!(rest, b"last\n");
}

#[tokio::test]
async fn read_log_follow_reopens_a_rotated_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_log(dir.path(), &[full(1, "before")]);
    let stop = CancellationToken::new();
    let opts = LogOptions {
        follow: true,
        ..Default::default()
    };
    let mut s = Box::pin(read_log(path.clone(), opts, stop.clone()));
    let got = tokio::time::timeout(Duration::from_secs(5), s.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(&got[..], b"before\n");
    std::fs::rename(&path, dir.path().join("0.log.1")).unwrap();
    std::fs::write(&path, full(2, "after")).unwrap();
    let got = tokio::time::timeout(Duration::from_secs(5), s.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(&got[..], b"after\n");
    stop.cancel();
    assert!(tokio::time::timeout(Duration::from_secs(5), s.next())
        .await
        .unwrap()
        .is_none());
}
