//! Credentials, read from the environment or from files, never from the
//! pipeline configuration, and never printed.
//!
//! For a service `S` (`INFLUXDB`, `MQTT`), the worker reads
//! `MILLRACE_S_USERNAME` / `MILLRACE_S_PASSWORD`, or the files named by
//! `MILLRACE_S_USERNAME_FILE` / `MILLRACE_S_PASSWORD_FILE` (a mounted Secret).

use std::fmt;

/// A username and password. `Debug` hides the password.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials").field("username", &self.username).field("password", &"<redacted>").finish()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    #[error("cannot read {variable} file {path}: {source}")]
    File { variable: String, path: String, source: std::io::Error },
    #[error("{present} is set but {missing} is not: set both or neither")]
    Half { present: String, missing: String },
}

/// Reads the credentials of `service` (e.g. `"INFLUXDB"`); `None` when
/// neither username nor password is configured.
pub fn from_env(service: &str) -> Result<Option<Credentials>, CredentialsError> {
    from_lookup(service, |k| std::env::var(k).ok())
}

fn from_lookup(service: &str, get: impl Fn(&str) -> Option<String>) -> Result<Option<Credentials>, CredentialsError> {
    let read = |name: &str| -> Result<Option<String>, CredentialsError> {
        let var = format!("MILLRACE_{service}_{name}");
        if let Some(v) = get(&var) {
            return Ok(Some(v));
        }
        let file_var = format!("{var}_FILE");
        match get(&file_var) {
            Some(path) => std::fs::read_to_string(&path)
                .map(|s| Some(s.trim_end_matches(['\n', '\r']).to_string()))
                .map_err(|source| CredentialsError::File { variable: file_var, path, source }),
            None => Ok(None),
        }
    };
    match (read("USERNAME")?, read("PASSWORD")?) {
        (Some(username), Some(password)) => Ok(Some(Credentials { username, password })),
        (None, None) => Ok(None),
        (Some(_), None) => Err(CredentialsError::Half {
            present: format!("MILLRACE_{service}_USERNAME"),
            missing: format!("MILLRACE_{service}_PASSWORD"),
        }),
        (None, Some(_)) => Err(CredentialsError::Half {
            present: format!("MILLRACE_{service}_PASSWORD"),
            missing: format!("MILLRACE_{service}_USERNAME"),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn from_variables_or_files_and_never_in_debug() {
        let dir = tempfile::tempdir().unwrap();
        let pw = dir.path().join("pw");
        std::fs::write(&pw, "s3cret\n").unwrap();
        let env = HashMap::from([
            ("MILLRACE_INFLUXDB_USERNAME".to_string(), "admin".to_string()),
            ("MILLRACE_INFLUXDB_PASSWORD_FILE".to_string(), pw.display().to_string()),
        ]);
        let c = from_lookup("INFLUXDB", |k| env.get(k).cloned()).unwrap().unwrap();
        assert_eq!(c, Credentials { username: "admin".into(), password: "s3cret".into() });
        assert!(!format!("{c:?}").contains("s3cret"));
        assert!(from_lookup("MQTT", |k| env.get(k).cloned()).unwrap().is_none());
    }

    #[test]
    fn half_a_pair_is_an_error_naming_the_missing_variable() {
        let e = from_lookup("MQTT", |k| (k == "MILLRACE_MQTT_USERNAME").then(|| "u".to_string())).unwrap_err();
        assert!(e.to_string().contains("MILLRACE_MQTT_PASSWORD is not"), "{e}");
    }
}
