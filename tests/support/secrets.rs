//! moto's SSM Parameter Store and Secrets Manager (the same server as S3, SPEC §8) as the
//! secret stores of SPEC §10: put, rotate and delete secrets with the SDK's own clients.

use super::s3::{block_on, Moto};

/// The agent's environment for `moto`: its S3 variables plus the service-specific
/// endpoint variables of SSM and Secrets Manager (what the SDK reads on EC2 too).
pub fn agent_env(moto: &Moto) -> Vec<(String, String)> {
    agent_env_at(moto, &moto.endpoint())
}

/// As [`agent_env`], with SSM and Secrets Manager at `endpoint` (an unreachable one).
pub fn agent_env_at(moto: &Moto, endpoint: &str) -> Vec<(String, String)> {
    let mut env = moto.agent_env();
    for key in ["AWS_ENDPOINT_URL_SSM", "AWS_ENDPOINT_URL_SECRETS_MANAGER"] {
        env.push((key.to_string(), endpoint.to_string()));
    }
    env
}

fn ssm(moto: &Moto) -> aws_sdk_ssm::Client {
    aws_sdk_ssm::Client::new(&moto.sdk_config())
}

fn secretsmanager(moto: &Moto) -> aws_sdk_secretsmanager::Client {
    aws_sdk_secretsmanager::Client::new(&moto.sdk_config())
}

/// Stores (or overwrites: a rotation) the SecureString parameter `name`.
pub fn put_parameter(moto: &Moto, name: &str, value: &str) {
    let client = ssm(moto);
    let request = client
        .put_parameter()
        .name(name)
        .value(value)
        .r#type(aws_sdk_ssm::types::ParameterType::SecureString)
        .overwrite(true);
    block_on(request.send()).unwrap_or_else(|err| panic!("putting parameter {name}: {err:?}"));
}

/// Creates the secret `id` holding `value` (a JSON object for `#key` references).
pub fn create_secret(moto: &Moto, id: &str, value: &str) {
    let client = secretsmanager(moto);
    let request = client.create_secret().name(id).secret_string(value);
    block_on(request.send()).unwrap_or_else(|err| panic!("creating secret {id}: {err:?}"));
}

/// A new version of the secret `id` (a rotation).
pub fn rotate_secret(moto: &Moto, id: &str, value: &str) {
    let client = secretsmanager(moto);
    let request = client.put_secret_value().secret_id(id).secret_string(value);
    block_on(request.send()).unwrap_or_else(|err| panic!("rotating secret {id}: {err:?}"));
}
