//! `vigia serve --check`: the configuration a `serve` would run with, loaded and validated
//! the same way, summarised without starting anything. A deployment runs it before rolling
//! out (an init container, `docker compose run`, CI) so a bad setting fails there, with
//! the setting named, rather than as a crash-looping pod.

use std::fmt::Write as _;

use crate::config::Config;

/// A few lines a person can compare with what they meant to deploy. Passwords in URLs
/// are masked and the bootstrap token is only said to be set: this goes to logs.
pub fn summary(config: &Config) -> String {
    let roles = crate::roles::parse(&config.roles)
        .map(|r| r.describe())
        .unwrap_or_else(|e| format!("invalid: {e}"));
    let mut out = String::from("configuration is valid\n");
    let rows: [(&str, String); 10] = [
        ("listen", config.listen.to_string()),
        ("data_dir", config.data_dir.display().to_string()),
        ("roles", roles),
        ("store", mask_password(&config.store)),
        (
            "store_read_url",
            config
                .store_read_url
                .as_deref()
                .map_or_else(|| "unset".to_string(), mask_password),
        ),
        ("bus", mask_password(&config.bus)),
        ("fanout", mask_password(&config.fanout)),
        (
            "durability",
            format!("{:?}", config.durability).to_lowercase(),
        ),
        (
            "workers",
            format!(
                "{} × batches of {}",
                config.workers.count, config.workers.batch_size
            ),
        ),
        (
            "bootstrap_token",
            if config.bootstrap_token.is_some() {
                "set".into()
            } else {
                "unset (generated on first start)".into()
            },
        ),
    ];
    for (key, value) in rows {
        let _ = writeln!(out, "  {key:<15} {value}");
    }
    out
}

/// `scheme://user:secret@host/…` → `scheme://user:***@host/…`; anything else unchanged.
pub fn mask_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    // The userinfo ends at the last `@` before the path: a password may itself hold `@`
    // only percent-encoded, but be lenient and take the last one in the authority.
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    let Some(at) = authority.rfind('@') else {
        return url.to_string();
    };
    let userinfo = &authority[..at];
    let Some((user, _password)) = userinfo.split_once(':') else {
        return url.to_string();
    };
    format!("{scheme}://{user}:***{}", &rest[at..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_masked_and_nothing_else() {
        for (url, masked) in [
            (
                "postgres://vigia:s3cret@db:5432/vigia",
                "postgres://vigia:***@db:5432/vigia",
            ),
            ("redis://:pw@redis:6379/0", "redis://:***@redis:6379/0"),
            ("mysql://u:p@ss@h/db?x=1", "mysql://u:***@h/db?x=1"),
            ("nats://nats:4222", "nats://nats:4222"),
            ("postgres://vigia@db/vigia", "postgres://vigia@db/vigia"),
            ("sqlite", "sqlite"),
            ("memory", "memory"),
        ] {
            assert_eq!(mask_password(url), masked, "{url}");
        }
    }

    #[test]
    fn the_summary_names_the_settings_and_hides_the_token() {
        let config = Config {
            store: "postgres://vigia:s3cret@db/vigia".into(),
            roles: "api,ingest".into(),
            bootstrap_token: Some("do-not-print-me".into()),
            ..Config::default()
        };
        let text = summary(&config);
        for needle in [
            "configuration is valid",
            "ingest,api",
            "vigia:***@db",
            "set",
        ] {
            assert!(text.contains(needle), "{needle} in {text}");
        }
        assert!(!text.contains("s3cret") && !text.contains("do-not-print-me"));
    }
}
