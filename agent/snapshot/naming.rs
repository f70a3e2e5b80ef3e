//! Snapshot names and retention (issue 5): where a snapshot goes, how it is named
//! (`<prefix><product>-YYYYmmddTHHMMSSZ.sql.gz`, UTC) and which ones retention deletes. Pure.

use std::time::{Duration, UNIX_EPOCH};

use super::Error;

/// Bucket and key prefix of `s3://bucket[/prefix]`; the prefix is empty or ends with `/`.
///
/// # Errors
/// `BadUrl`.
pub fn parse_backup_url(url: &str) -> Result<(String, String), Error> {
    let bad = || Error::BadUrl {
        url: url.to_string(),
    };
    let (bucket, prefix) = crate::source::s3::split_s3_url(url).map_err(|_| bad())?;
    if prefix.starts_with('/') || prefix.contains("//") {
        return Err(bad());
    }
    let prefix = if prefix.is_empty() || prefix.ends_with('/') {
        prefix.to_string()
    } else {
        format!("{prefix}/")
    };
    Ok((bucket.to_string(), prefix))
}

/// `YYYYmmddTHHMMSSZ` (UTC) of a Unix time.
pub fn timestamp(now_unix: u64) -> String {
    let time = UNIX_EPOCH + Duration::from_secs(now_unix);
    humantime::format_rfc3339_seconds(time)
        .to_string()
        .replace(['-', ':'], "")
}

/// `<prefix><product>-YYYYmmddTHHMMSSZ.sql.gz`.
pub fn object_key(prefix: &str, product: &str, now_unix: u64) -> String {
    format!("{prefix}{product}-{}.sql.gz", timestamp(now_unix))
}

/// Whether `key` is a snapshot of `product` under `prefix` (and not, say, of a product
/// whose name starts the same, or a file someone else put there).
pub fn is_snapshot_key(key: &str, prefix: &str, product: &str) -> bool {
    let Some(stamp) = key
        .strip_prefix(prefix)
        .and_then(|k| k.strip_prefix(product))
        .and_then(|k| k.strip_prefix('-'))
        .and_then(|k| k.strip_suffix(".sql.gz"))
    else {
        return false;
    };
    let b = stamp.as_bytes();
    b.len() == 16
        && b[8] == b'T'
        && b[15] == b'Z'
        && b[..8].iter().chain(&b[9..15]).all(u8::is_ascii_digit)
}

/// The snapshots of `product` among `keys` beyond the newest `keep`, oldest first. Names
/// sort by time, so the order of the names is the order of the snapshots.
pub fn expired(keys: &[String], prefix: &str, product: &str, keep: usize) -> Vec<String> {
    let mut ours: Vec<&String> = keys
        .iter()
        .filter(|k| is_snapshot_key(k, prefix, product))
        .collect();
    ours.sort();
    let excess = ours.len().saturating_sub(keep);
    ours.into_iter().take(excess).cloned().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_utc_timestamps() {
        // 2024-02-29T13:05:09Z
        assert_eq!(timestamp(1_709_211_909), "20240229T130509Z");
        assert_eq!(
            object_key("videos/", "videos", 1_709_211_909),
            "videos/videos-20240229T130509Z.sql.gz"
        );
    }

    #[test]
    fn backup_urls_split_into_bucket_and_prefix() {
        let split = |u| parse_backup_url(u).expect(u);
        assert_eq!(
            split("s3://fleet-backups/videos/"),
            ("fleet-backups".into(), "videos/".into())
        );
        assert_eq!(
            split("s3://fleet-backups/a/b"),
            ("fleet-backups".into(), "a/b/".into())
        );
        assert_eq!(
            split("s3://fleet-backups"),
            ("fleet-backups".into(), String::new())
        );
        for bad in [
            "https://x/y",
            "s3://ab/",
            "s3://bucket//x",
            "s3://bucket/a//b",
        ] {
            assert!(parse_backup_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn only_this_products_snapshots_count() {
        assert!(is_snapshot_key(
            "p/videos-20240229T130509Z.sql.gz",
            "p/",
            "videos"
        ));
        assert!(!is_snapshot_key(
            "p/videos-old-20240229T130509Z.sql.gz",
            "p/",
            "videos"
        ));
        assert!(!is_snapshot_key(
            "p/videos-20240229T130509Z.sql",
            "p/",
            "videos"
        ));
        assert!(!is_snapshot_key(
            "p/videos-2024022xT130509Z.sql.gz",
            "p/",
            "videos"
        ));
        assert!(!is_snapshot_key(
            "q/videos-20240229T130509Z.sql.gz",
            "p/",
            "videos"
        ));
        assert!(!is_snapshot_key("p/README", "p/", "videos"));
    }

    #[test]
    fn retention_keeps_the_newest() {
        let keys: Vec<String> = [
            "p/videos-20240103T000000Z.sql.gz",
            "p/videos-20240101T000000Z.sql.gz",
            "p/videos-notes.txt",
            "p/videos-20240102T000000Z.sql.gz",
            "p/videos-20240104T000000Z.sql.gz",
        ]
        .map(String::from)
        .to_vec();
        assert_eq!(
            expired(&keys, "p/", "videos", 2),
            [
                "p/videos-20240101T000000Z.sql.gz",
                "p/videos-20240102T000000Z.sql.gz"
            ]
        );
        assert!(expired(&keys, "p/", "videos", 4).is_empty());
        assert!(expired(&keys, "p/", "videos", 10).is_empty());
    }
}
