//! Bearer-token authentication from a static token file
//! (`<data-dir>/auth/tokens.csv`, Kubernetes' `--token-auth-file` format:
//! `token,user,uid[,"group1,group2"]`). The admin token is created on first start.

use anyhow::Context;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct User {
    pub name: String,
    pub groups: Vec<String>,
}

pub struct Tokens {
    by_token: HashMap<String, User>,
    admin: String,
}

impl Tokens {
    pub fn path(data_dir: &Path) -> PathBuf {
        data_dir.join("auth").join("tokens.csv")
    }

    /// Loads the token file, creating it with a fresh admin token when missing.
    pub fn load_or_create(data_dir: &Path) -> anyhow::Result<Self> {
        let path = Self::path(data_dir);
        if !path.exists() {
            std::fs::create_dir_all(path.parent().expect("has a parent"))?;
            let token = random_token();
            let line = format!("{token},admin,admin,\"system:masters\"\n");
            use std::io::Write;
            use std::os::unix::fs::OpenOptionsExt;
            std::fs::OpenOptions::new().create_new(true).write(true).mode(0o600).open(&path)?.write_all(line.as_bytes())?;
        }
        let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
        let mut by_token = HashMap::new();
        let mut admin = None;
        for (n, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty() && !l.starts_with('#')) {
            let (token, rest) = line.split_once(',').with_context(|| format!("{}:{}: expected token,user,uid", path.display(), n + 1))?;
            let mut fields = rest.splitn(3, ',');
            let name = fields.next().unwrap_or_default().to_string();
            let _uid = fields.next();
            let groups: Vec<String> =
                fields.next().map(|g| g.trim_matches('"').split(',').map(str::to_string).collect()).unwrap_or_default();
            if name.is_empty() {
                anyhow::bail!("{}:{}: the user name is empty", path.display(), n + 1);
            }
            if admin.is_none() && groups.iter().any(|g| g == "system:masters") {
                admin = Some(token.to_string());
            }
            by_token.insert(token.to_string(), User { name, groups });
        }
        let admin = admin.with_context(|| format!("{} holds no token in group system:masters", path.display()))?;
        Ok(Self { by_token, admin })
    }

    pub fn admin_token(&self) -> &str {
        &self.admin
    }

    /// The user an `Authorization` header names, if its token is known.
    pub fn authenticate(&self, header: Option<&str>) -> Option<&User> {
        let token = header?.strip_prefix("Bearer ")?.trim();
        // Compare every known token in full so timing does not reveal a prefix.
        let mut found = None;
        for (known, user) in &self.by_token {
            if constant_time_eq(known.as_bytes(), token.as_bytes()) {
                found = Some(user);
            }
        }
        found
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn random_token() -> String {
    use rand::Rng;
    let mut rng = rand::rng();
    (0..32).map(|_| format!("{:02x}", rng.random::<u8>())).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_start_creates_an_admin_token_that_authenticates_and_others_do_not() {
        let dir = tempfile::tempdir().unwrap();
        let tokens = Tokens::load_or_create(dir.path()).unwrap();
        let header = format!("Bearer {}", tokens.admin_token());
        assert_eq!(tokens.authenticate(Some(&header)).unwrap().name, "admin");
        assert!(tokens.authenticate(Some("Bearer nope")).is_none());
        assert!(tokens.authenticate(None).is_none());
        // The same token after a restart.
        let again = Tokens::load_or_create(dir.path()).unwrap();
        assert_eq!(again.admin_token(), tokens.admin_token());
    }
}
