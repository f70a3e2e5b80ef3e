//! The S3 side of a snapshot: one multipart upload (create, parts, complete or abort), the
//! listing and deletions of retention, and the client from the SDK's default chain. I/O.

use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{ChecksumAlgorithm, CompletedMultipartUpload, CompletedPart};
use aws_sdk_s3::Client;

use super::naming::expired;
use super::Error;

/// The request `$op` of the SDK client for `$upload`: its bucket, key and upload id set.
macro_rules! upload_request {
    ($upload:expr, $op:ident) => {
        $upload
            .client
            .$op()
            .bucket($upload.bucket)
            .key($upload.key)
            .upload_id(&$upload.id)
    };
}

/// One multipart upload in progress.
pub(super) struct Upload<'a> {
    client: &'a Client,
    bucket: &'a str,
    key: &'a str,
    id: String,
    pub(super) parts: Vec<CompletedPart>,
    pub(super) stored: u64,
}

impl<'a> Upload<'a> {
    pub(super) async fn start(
        client: &'a Client,
        bucket: &'a str,
        key: &'a str,
    ) -> Result<Upload<'a>, Error> {
        let created = client
            .create_multipart_upload()
            .bucket(bucket)
            .key(key)
            .content_type("application/gzip")
            // Declared up front: S3 refuses parts whose checksum type the upload did not
            // announce, and the SDK adds a CRC32 to every part by default.
            .checksum_algorithm(ChecksumAlgorithm::Crc32)
            .send()
            .await
            .map_err(|e| s3_error("starting the upload of", bucket, key, e))?;
        let id = created.upload_id().unwrap_or_default().to_string();
        Ok(Upload {
            client,
            bucket,
            key,
            id,
            parts: Vec::new(),
            stored: 0,
        })
    }

    pub(super) async fn part(&mut self, bytes: Vec<u8>) -> Result<(), Error> {
        let number = i32::try_from(self.parts.len() + 1).unwrap_or(i32::MAX);
        let size = bytes.len() as u64;
        let sent = upload_request!(self, upload_part)
            .part_number(number)
            .checksum_algorithm(ChecksumAlgorithm::Crc32)
            .body(ByteStream::from(bytes))
            .send()
            .await
            .map_err(|e| s3_error("uploading a part of", self.bucket, self.key, e))?;
        self.parts.push(
            CompletedPart::builder()
                .part_number(number)
                .set_e_tag(sent.e_tag().map(str::to_string))
                .set_checksum_crc32(sent.checksum_crc32().map(str::to_string))
                .build(),
        );
        self.stored += size;
        Ok(())
    }

    pub(super) async fn complete(&self) -> Result<(), Error> {
        let parts = CompletedMultipartUpload::builder()
            .set_parts(Some(self.parts.clone()))
            .build();
        upload_request!(self, complete_multipart_upload)
            .multipart_upload(parts)
            .send()
            .await
            .map_err(|e| s3_error("completing the upload of", self.bucket, self.key, e))?;
        Ok(())
    }

    /// Best effort: the error that led here is the one reported.
    pub(super) async fn abort(&self) {
        let aborted = upload_request!(self, abort_multipart_upload).send().await;
        let path = format!("s3://{}/{}", self.bucket, self.key);
        match aborted {
            Ok(_) => tracing::info!(path = %path, "snapshot upload aborted"),
            Err(e) => {
                tracing::warn!(path = %path, error = %crate::text::chain(&e), "aborting the snapshot upload failed")
            }
        }
    }
}

fn s3_error(
    action: &'static str,
    bucket: &str,
    key: &str,
    source: impl std::error::Error + Send + Sync + 'static,
) -> Error {
    Error::S3 {
        action,
        bucket: bucket.to_string(),
        key: key.to_string(),
        source: Box::new(source),
    }
}

/// Delete all but the newest `keep` snapshots of `product` under `prefix`; the deleted keys.
pub(super) async fn retention(
    client: &Client,
    bucket: &str,
    prefix: &str,
    product: &str,
    keep: usize,
) -> Result<Vec<String>, Error> {
    let listed = format!("{prefix}{product}-");
    let mut keys = Vec::new();
    let mut pages = client
        .list_objects_v2()
        .bucket(bucket)
        .prefix(&listed)
        .into_paginator()
        .send();
    while let Some(page) = pages.next().await {
        let page = page.map_err(|e| s3_error("listing", bucket, &listed, e))?;
        keys.extend(
            page.contents()
                .iter()
                .filter_map(|o| o.key().map(str::to_string)),
        );
    }
    let doomed = expired(&keys, prefix, product, keep);
    for key in &doomed {
        client
            .delete_object()
            .bucket(bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| s3_error("deleting", bucket, key, e))?;
        tracing::info!(product = %product, path = %format!("s3://{bucket}/{key}"), "old snapshot deleted");
    }
    Ok(doomed)
}
