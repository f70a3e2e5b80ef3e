//! Reading one secret through the SDK's own clients (SPEC §10): `GetParameter` with
//! decryption for `ssm:`, `GetSecretValue` for `secretsmanager:`, each built from the same
//! SDK configuration as the S3 source (`source::s3::sdk_config`: credential chain, region,
//! `AWS_ENDPOINT_URL_SSM` / `AWS_ENDPOINT_URL_SECRETS_MANAGER` / `AWS_ENDPOINT_URL`). The
//! SDK retries throttling and transient errors itself; a read also ends at a deadline. I/O.

use std::time::Duration;

use aws_sdk_ssm::error::{ProvideErrorMetadata, SdkError};

use super::reference::{Reference, Store, Value};

/// The two clients, built once per process on the first secret read.
#[derive(Debug, Clone)]
pub(super) struct Clients {
    ssm: aws_sdk_ssm::Client,
    secretsmanager: aws_sdk_secretsmanager::Client,
}

impl Clients {
    /// Both clients from the shared SDK configuration.
    pub async fn new() -> Clients {
        let config = crate::source::s3::sdk_config().await;
        Clients {
            ssm: aws_sdk_ssm::Client::new(&config),
            secretsmanager: aws_sdk_secretsmanager::Client::new(&config),
        }
    }

    /// Read `reference` within `deadline`. The error says why, never a value.
    pub async fn read(&self, reference: &Reference, deadline: Duration) -> Result<Value, String> {
        let read = async {
            match reference.store {
                Store::Ssm => self.ssm_value(&reference.name).await,
                Store::SecretsManager => self.secretsmanager_value(&reference.name).await,
            }
        };
        let text = tokio::time::timeout(deadline, read)
            .await
            .map_err(|_| format!("no answer within {} ms", deadline.as_millis()))??;
        let text = match &reference.key {
            Some(key) => json_field(text, key)?,
            None => text,
        };
        Value::new(text).map_err(str::to_string)
    }

    async fn ssm_value(&self, name: &str) -> Result<String, String> {
        let out = self
            .ssm
            .get_parameter()
            .name(name)
            .with_decryption(true)
            .send()
            .await
            .map_err(|e| failure(&e))?;
        out.parameter
            .and_then(|p| p.value)
            .ok_or_else(|| "the answer holds no value".to_string())
    }

    async fn secretsmanager_value(&self, id: &str) -> Result<String, String> {
        let out = self
            .secretsmanager
            .get_secret_value()
            .secret_id(id)
            .send()
            .await
            .map_err(|e| failure(&e))?;
        out.secret_string
            .ok_or_else(|| "the secret has no SecretString (binary secrets are not read)".into())
    }
}

/// `HTTP 400 ParameterNotFound: message` for an answer, the transport's error chain when
/// the service did not answer. Neither can hold the value: there is none.
fn failure<E, R>(err: &SdkError<E, R>) -> String
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    match err {
        SdkError::ServiceError(service) => {
            let code = service.err().code().unwrap_or("(no error code)");
            match service.err().message() {
                Some(message) => format!("{code}: {message}"),
                None => code.to_string(),
            }
        }
        other => crate::text::chain(other),
    }
}

/// The string field `key` of the JSON object `text` (a Secrets Manager secret holding
/// `{"username": …, "password": …}`). The error names the key, never the text.
fn json_field(text: String, key: &str) -> Result<String, String> {
    let object: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(&text).map_err(|_| "its value is not a JSON object".to_string())?;
    match object.get(key) {
        Some(serde_json::Value::String(s)) => Ok(s.clone()),
        Some(_) => Err(format!("its JSON field {key:?} is not a string")),
        None => Err(format!("its JSON object has no field {key:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_json_field_is_taken_and_errors_never_quote_the_value() {
        let text = r#"{"username":"tv","password":"hunter2"}"#.to_string();
        assert_eq!(json_field(text.clone(), "password").unwrap(), "hunter2");
        let missing = json_field(text, "pass").unwrap_err();
        assert!(!missing.contains("hunter2"), "{missing}");
        let not_json = json_field("hunter2".into(), "password").unwrap_err();
        assert!(!not_json.contains("hunter2"), "{not_json}");
    }
}
