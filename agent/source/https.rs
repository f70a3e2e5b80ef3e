//! Stage 2, fetch over HTTPS (SPEC §1, §7.2): a GET with `If-None-Match` on the last ETag,
//! through reqwest with rustls; 304 means unchanged. Plain `http://` is accepted for loopback
//! addresses only, for tests. I/O; the URL check and the status mapping are pure and tested
//! below.

use std::net::IpAddr;
use std::time::Duration;

use reqwest::header::{ETAG, IF_NONE_MATCH};
use reqwest::{StatusCode, Url};

use super::{
    extend_within_limit, fetch_within, timeout_error, Error, Fetched, MapBytes, MapSource,
};

/// The role map at an `https://` URL.
#[derive(Debug)]
pub struct HttpsSource {
    client: reqwest::Client,
    url: Url,
    /// The URL as written in agent.toml, for messages.
    raw_url: String,
    timeout: Duration,
}

/// What an HTTP status means for a fetch.
#[derive(Debug, PartialEq, Eq)]
enum Answer {
    /// 2xx: the body is the map.
    Map,
    /// 304: unchanged since the ETag we sent.
    NotModified,
    /// Anything else, with the reason for `Error::Refused`.
    Refused(String),
}

impl HttpsSource {
    /// A source for `url` whose fetches each give up after `timeout`.
    ///
    /// # Errors
    /// `Error::BadUrl` for a URL that does not parse, is not `https://` (or `http://` on a
    /// loopback address), or carries credentials; `Error::Unreachable` when the TLS client
    /// cannot be set up.
    pub fn try_new(url: &str, timeout: Duration) -> Result<Self, Error> {
        let parsed = parse_http_url(url)?;
        let client = reqwest::Client::builder()
            .connect_timeout(timeout)
            .user_agent(concat!("rolecall/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|err| Error::unreachable(url, err))?;
        Ok(Self {
            client,
            url: parsed,
            raw_url: url.to_owned(),
            timeout,
        })
    }

    /// The map URL, as written in agent.toml.
    pub fn url(&self) -> &str {
        &self.raw_url
    }

    async fn get(&self, last_etag: Option<&str>) -> Result<Fetched, Error> {
        let mut request = self.client.get(self.url.clone());
        if let Some(etag) = last_etag {
            request = request.header(IF_NONE_MATCH, etag);
        }
        let response = request
            .send()
            .await
            .map_err(|err| self.request_error(err))?;
        match answer(response.status()) {
            Answer::NotModified => return Ok(Fetched::NotModified),
            Answer::Refused(reason) => {
                return Err(Error::Refused {
                    url: self.raw_url.clone(),
                    reason,
                })
            }
            Answer::Map => {}
        }
        let etag = response
            .headers()
            .get(ETAG)
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned);
        let bytes = self.read_body(response).await?;
        Ok(Fetched::Map(MapBytes {
            bytes,
            etag,
            version: None,
            sha256: None,
        }))
    }

    /// The body, refused as soon as it grows past [`super::MAX_MAP_BYTES`].
    async fn read_body(&self, mut response: reqwest::Response) -> Result<Vec<u8>, Error> {
        let mut bytes = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|err| self.request_error(err))?
        {
            extend_within_limit(&self.raw_url, &mut bytes, &chunk)?;
        }
        Ok(bytes)
    }

    fn request_error(&self, err: reqwest::Error) -> Error {
        if err.is_timeout() {
            return timeout_error(&self.raw_url, self.timeout);
        }
        Error::unreachable(&self.raw_url, err)
    }
}

impl MapSource for HttpsSource {
    async fn fetch(&self, last_etag: Option<&str>) -> Result<Fetched, Error> {
        fetch_within(&self.raw_url, self.timeout, last_etag, self.get(last_etag)).await
    }
}

/// What `status` means for a fetch.
fn answer(status: StatusCode) -> Answer {
    if status == StatusCode::NOT_MODIFIED {
        Answer::NotModified
    } else if status.is_success() {
        Answer::Map
    } else {
        Answer::Refused(format!("HTTP {status}"))
    }
}

/// Parse an `https://` URL, or an `http://` one on a loopback address.
fn parse_http_url(url: &str) -> Result<Url, Error> {
    let bad = |reason: &str| Error::BadUrl {
        url: url.to_owned(),
        reason: reason.to_owned(),
    };
    let parsed = Url::parse(url).map_err(|err| bad(&err.to_string()))?;
    if parsed.host_str().is_none() {
        return Err(bad("the URL has no host"));
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        // They would end up in logs and status; a private map belongs in S3.
        return Err(bad("credentials in the URL are not accepted"));
    }
    match parsed.scheme() {
        "https" => Ok(parsed),
        "http" if is_loopback(&parsed) => Ok(parsed),
        "http" => Err(bad(
            "plain http:// is accepted on loopback addresses only; use https://",
        )),
        _ => Err(bad("expected https://")),
    }
}

fn is_loopback(url: &Url) -> bool {
    match url.host_str() {
        Some("localhost") => true,
        Some(host) => host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
            .is_ok_and(|ip| ip.is_loopback()),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_map_to_answers() {
        assert_eq!(answer(StatusCode::OK), Answer::Map);
        assert_eq!(answer(StatusCode::NOT_MODIFIED), Answer::NotModified);
        assert_eq!(
            answer(StatusCode::NOT_FOUND),
            Answer::Refused("HTTP 404 Not Found".to_owned())
        );
        assert!(matches!(
            answer(StatusCode::INTERNAL_SERVER_ERROR),
            Answer::Refused(_)
        ));
    }

    #[test]
    fn https_and_loopback_http_are_accepted() {
        for url in [
            "https://config.example.com/rolemap.toml",
            "http://127.0.0.1:8080/rolemap.toml",
            "http://127.8.9.10/rolemap.toml",
            "http://[::1]:8080/rolemap.toml",
            "http://localhost/rolemap.toml",
        ] {
            assert!(parse_http_url(url).is_ok(), "{url}");
        }
    }

    #[test]
    fn other_urls_are_refused() {
        crate::source::tests::assert_bad_urls(
            parse_http_url,
            &[
                "http://config.example.com/rolemap.toml",
                "http://10.0.0.1/rolemap.toml",
                "https://user:secret@config.example.com/rolemap.toml",
                "ftp://config.example.com/rolemap.toml",
                "https://",
                "not a url",
            ],
        );
    }
}
