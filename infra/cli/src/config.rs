//! Where the admin API is and how to authenticate, from flags, the environment and a
//! profile file, in that order of precedence.
//!
//! The profile file (`--config`, `WINMDM_CONFIG`, default `~/.config/winmdm/config`) has
//! INI sections named after profiles (`--profile`, `WINMDM_PROFILE`, default `default`):
//!
//! ```text
//! [default]
//! api_url = http://127.0.0.1:8080/admin/v1
//! data_dir = /srv/winmdm/.winmdm
//!
//! [prod]
//! api_url = https://abc123.execute-api.eu-west-1.amazonaws.com/admin/v1
//! auth = sigv4
//! region = eu-west-1
//! aws_profile = operations
//! ```

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::error::CliError;

pub const DEFAULT_API_URL: &str = "http://127.0.0.1:8080/admin/v1";

/// One profile's settings.
pub type Profile = HashMap<String, String>;

pub fn default_config_path() -> Option<PathBuf> {
    if let Some(x) = std::env::var_os("XDG_CONFIG_HOME") {
        return Some(PathBuf::from(x).join("winmdm/config"));
    }
    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config/winmdm/config"))
}

/// Reads `name` from the profile file; a missing file is an empty profile, a missing
/// profile in an existing file is an error (unless it is `default`).
pub fn load_profile(path: Option<&Path>, name: &str) -> Result<Profile, CliError> {
    let explicit = path.is_some();
    let Some(path) = path.map(Path::to_path_buf).or_else(default_config_path) else {
        return Ok(Profile::new());
    };
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !explicit => {
            return Ok(Profile::new());
        }
        Err(e) => {
            return Err(CliError::Usage(format!(
                "cannot read {}: {e}",
                path.display()
            )));
        }
    };
    let profiles = parse(&text);
    match profiles.get(name) {
        Some(p) => Ok(p.clone()),
        None if name == "default" => Ok(Profile::new()),
        None => Err(CliError::Usage(format!(
            "no profile [{name}] in {}",
            path.display()
        ))),
    }
}

fn parse(text: &str) -> HashMap<String, Profile> {
    let mut out: HashMap<String, Profile> = HashMap::new();
    let mut current = String::from("default");
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(section) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            current = section
                .trim()
                .trim_start_matches("profile ")
                .trim()
                .to_owned();
            out.entry(current.clone()).or_default();
        } else if let Some((k, v)) = line.split_once('=') {
            out.entry(current.clone())
                .or_default()
                .insert(k.trim().to_owned(), v.trim().to_owned());
        }
    }
    out
}

/// The admin API base URL, ending in `/admin/v1/`.
pub fn api_base(url: &str) -> Result<url::Url, CliError> {
    let mut s = url.trim().trim_end_matches('/').to_owned();
    if !s.ends_with("/admin/v1") {
        s.push_str("/admin/v1");
    }
    s.push('/');
    url::Url::parse(&s).map_err(|e| CliError::Usage(format!("--api-url {url:?} is not a URL: {e}")))
}

/// The region of an API Gateway URL (`<id>.execute-api.<region>.amazonaws.com`).
pub fn region_from_url(url: &url::Url) -> Option<String> {
    let host = url.host_str()?;
    let rest = host.split(".execute-api.").nth(1)?;
    rest.split('.').next().map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_profiles_and_urls() {
        let p = parse("api_url = a\n[prod]\napi_url = b\n# c\nauth=sigv4\n[profile x]\nregion = r");
        assert_eq!(p["default"]["api_url"], "a");
        assert_eq!(p["prod"]["auth"], "sigv4");
        assert_eq!(p["x"]["region"], "r");
        assert_eq!(
            api_base("http://h:1").unwrap().as_str(),
            "http://h:1/admin/v1/"
        );
        assert_eq!(
            api_base("http://h:1/admin/v1/").unwrap().as_str(),
            "http://h:1/admin/v1/"
        );
        let u = api_base("https://abc.execute-api.eu-west-1.amazonaws.com").unwrap();
        assert_eq!(region_from_url(&u).as_deref(), Some("eu-west-1"));
    }
}
