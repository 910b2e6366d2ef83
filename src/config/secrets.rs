//! The settings of PROTOCOL.md §7 that hold secrets or guard the edge: secrets read from files
//! (`…_FILE`), encryption keys, trusted proxies, the TLS pair.

use std::collections::HashMap;
use std::path::PathBuf;

use base64::Engine;

use super::{ConfigError, Problems, err};

/// Settings that hold a secret: each may be given as a file by the same name with `_FILE`
/// appended, and none is ever printed (URLs only through `redact_url`).
pub const SECRET_SETTINGS: &[&str] = &[
    "TSUNAGI_JWT_SECRET",
    "TSUNAGI_ENCRYPTION_KEYS",
    "TSUNAGI_DATABASE_URL",
    "TSUNAGI_REPLICA_URLS",
    "TSUNAGI_REDIS_URL",
    "TSUNAGI_ARCHIVE_URL",
];

/// `NAME_FILE` of a secret setting (a known variable, not a misspelling).
pub fn is_secret_file_var(name: &str) -> bool {
    name.strip_suffix("_FILE")
        .is_some_and(|base| SECRET_SETTINGS.contains(&base))
}

/// Replaces every `NAME_FILE` of a secret setting by `NAME` = the file's content (one trailing
/// newline dropped, as `echo` and editors leave one). Both given is refused: which one wins
/// would be a guess. Returns the settings read from files, with their `…_FILE` variable.
pub(crate) fn read_secret_files(
    raw: &mut HashMap<String, String>,
    problems: &Problems,
) -> Vec<(&'static str, String)> {
    let mut read = Vec::new();
    for name in SECRET_SETTINGS {
        let file_var = format!("{name}_FILE");
        let Some(path) = raw.remove(&file_var).filter(|p| !p.trim().is_empty()) else {
            continue;
        };
        if raw.get(*name).is_some_and(|v| !v.is_empty()) {
            problems.push(err(
                &file_var,
                format!("{name} is set too: give one of the two"),
            ));
            continue;
        }
        // the error names the file, never its content
        let Some(text) = problems.get(
            std::fs::read_to_string(&path).map_err(|e| err(&file_var, format!("{path}: {e}"))),
        ) else {
            continue;
        };
        let value = text
            .strip_suffix("\r\n")
            .or_else(|| text.strip_suffix('\n'))
            .unwrap_or(&text);
        raw.insert((*name).to_owned(), value.to_owned());
        read.push((*name, file_var));
    }
    read
}

/// One key of `TSUNAGI_ENCRYPTION_KEYS`: its id (stored beside every value it seals) and 32 bytes.
#[derive(Clone, PartialEq, Eq)]
pub struct EncryptionKey {
    pub id: String,
    pub key: [u8; 32],
}

impl std::fmt::Debug for EncryptionKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "EncryptionKey({}, ***)", self.id)
    }
}

/// `KID:BASE64,KID:BASE64…`, the first current. A key id is 1 to 32 of `A-Z a-z 0-9 _ - .`.
pub fn parse_encryption_keys(s: &str) -> Result<Vec<EncryptionKey>, ConfigError> {
    const NAME: &str = "TSUNAGI_ENCRYPTION_KEYS";
    let mut keys: Vec<EncryptionKey> = Vec::new();
    for (i, entry) in s
        .split(',')
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .enumerate()
    {
        let n = i + 1;
        let (id, b64) = entry
            .split_once(':')
            .ok_or_else(|| err(NAME, format!("entry {n} is not KID:BASE64")))?;
        let id_ok = !id.is_empty()
            && id.len() <= 32
            && id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c));
        if !id_ok {
            return Err(err(
                NAME,
                format!("entry {n}: a key id is 1 to 32 of A-Z a-z 0-9 _ - ."),
            ));
        }
        // the key material is never repeated in a message
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(b64.trim())
            .map_err(|_| err(NAME, format!("key {id}: not valid base64")))?;
        let key: [u8; 32] = bytes
            .try_into()
            .map_err(|b: Vec<u8>| err(NAME, format!("key {id}: {} bytes, must be 32", b.len())))?;
        if keys.iter().any(|k| k.id == id) {
            return Err(err(NAME, format!("key id {id} is listed twice")));
        }
        keys.push(EncryptionKey {
            id: id.to_owned(),
            key,
        });
    }
    Ok(keys)
}

/// `TSUNAGI_TRUSTED_PROXIES`: comma-separated CIDRs (a bare address is a /32 or /128).
pub fn parse_trusted_proxies(s: &str) -> Result<Vec<ipnet::IpNet>, ConfigError> {
    s.split(',')
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .map(|e| {
            e.parse::<ipnet::IpNet>()
                .or_else(|_| e.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                .map_err(|_| {
                    err(
                        "TSUNAGI_TRUSTED_PROXIES",
                        format!("`{e}` is not a CIDR or address"),
                    )
                })
        })
        .collect()
}

/// The listener's certificate chain and private key (PEM files), both or neither.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

pub fn tls_files(cert: &str, key: &str) -> Result<Option<TlsFiles>, ConfigError> {
    let (cert, key) = (cert.trim(), key.trim());
    match (cert.is_empty(), key.is_empty()) {
        (true, true) => Ok(None),
        (false, true) => Err(err(
            "TSUNAGI_TLS_KEY",
            "TSUNAGI_TLS_CERT is set: give the key too",
        )),
        (true, false) => Err(err(
            "TSUNAGI_TLS_CERT",
            "TSUNAGI_TLS_KEY is set: give the certificate too",
        )),
        (false, false) => {
            for (name, path) in [("TSUNAGI_TLS_CERT", cert), ("TSUNAGI_TLS_KEY", key)] {
                std::fs::metadata(path).map_err(|e| err(name, format!("{path}: {e}")))?;
            }
            Ok(Some(TlsFiles {
                cert: cert.into(),
                key: key.into(),
            }))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_parse_and_bad_ones_name_the_key_not_the_material() {
        let k = base64::engine::general_purpose::STANDARD.encode([7u8; 32]);
        let keys = parse_encryption_keys(&format!("k2:{k}, k1:{k}")).unwrap();
        assert_eq!(
            keys.iter().map(|k| k.id.as_str()).collect::<Vec<_>>(),
            ["k2", "k1"]
        );
        assert_eq!(keys[0].key, [7u8; 32]);
        let short = base64::engine::general_purpose::STANDARD.encode([7u8; 16]);
        let e = parse_encryption_keys(&format!("k1:{short}")).unwrap_err();
        assert!(
            e.problem.contains("16 bytes") && !e.problem.contains(&short),
            "{e}"
        );
        assert!(parse_encryption_keys(&format!("k1:{k},k1:{k}")).is_err());
        assert!(parse_encryption_keys("nokey").is_err());
        assert!(parse_encryption_keys(&format!("bad id:{k}")).is_err());
        assert!(parse_encryption_keys("").unwrap().is_empty());
        assert!(!format!("{:?}", keys[0]).contains("7"));
    }

    #[test]
    fn secret_files_replace_their_setting() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("jwt");
        std::fs::write(&path, "from-a-file-0123456789\n").unwrap();
        let mut raw = HashMap::from([(
            "TSUNAGI_JWT_SECRET_FILE".to_owned(),
            path.display().to_string(),
        )]);
        let read = read_secret_files(&mut raw, &Problems::default());
        assert_eq!(
            read,
            [("TSUNAGI_JWT_SECRET", "TSUNAGI_JWT_SECRET_FILE".to_owned())]
        );
        assert_eq!(raw["TSUNAGI_JWT_SECRET"], "from-a-file-0123456789");
        assert!(!raw.contains_key("TSUNAGI_JWT_SECRET_FILE"));
        // both given, and an unreadable file: each reported, by the variable's name
        raw.insert("TSUNAGI_JWT_SECRET_FILE".into(), path.display().to_string());
        raw.insert("TSUNAGI_REDIS_URL_FILE".into(), "/nonexistent/x".into());
        let problems = Problems::default();
        assert!(read_secret_files(&mut raw, &problems).is_empty());
        let names: Vec<String> = problems.into_vec().into_iter().map(|e| e.name).collect();
        assert_eq!(names, ["TSUNAGI_JWT_SECRET_FILE", "TSUNAGI_REDIS_URL_FILE"]);
        assert!(is_secret_file_var("TSUNAGI_DATABASE_URL_FILE"));
        assert!(!is_secret_file_var("TSUNAGI_LISTEN_FILE"));
    }

    #[test]
    fn proxies_are_cidrs_or_addresses() {
        let p = parse_trusted_proxies("10.0.0.0/8, 127.0.0.1,::1").unwrap();
        assert_eq!(p.len(), 3);
        assert!(p[1].contains(&"127.0.0.1".parse::<std::net::IpAddr>().unwrap()));
        assert_eq!(
            parse_trusted_proxies("10.0.0.0/33").unwrap_err().name,
            "TSUNAGI_TRUSTED_PROXIES"
        );
    }
}
