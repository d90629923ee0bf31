//! Staff accounts: a name, an optional e-mail, a role and an argon2id password hash.
//! Passwords never touch a command line or a log; only their PHC-format hash is stored.

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use rand_core::OsRng;
use jiff::Timestamp;
use rusqlite::{params, OptionalExtension};
use serde::Serialize;

use super::{DeskError, Role};
use crate::cases::{Store, StoreError};

/// Shortest password accepted.
pub const MIN_PASSWORD: usize = 10;

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Account {
    pub name: String,
    pub email: Option<String>,
    pub role: Role,
    pub created_at: String,
    /// Whether the account has an API token (`staff token`).
    pub api_token: bool,
}

/// A staff name: what the history records, so plain and short.
pub fn check_name(name: &str) -> Result<(), DeskError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | '@'));
    if ok {
        Ok(())
    } else {
        Err(DeskError::Invalid(format!(
            "{name:?}: a staff name is 1 to 64 letters, digits, '.', '-', '_' or '@'"
        )))
    }
}

fn hash(password: &str) -> Result<String, DeskError> {
    if password.chars().count() < MIN_PASSWORD {
        return Err(DeskError::Invalid(format!("the password is too short (at least {MIN_PASSWORD} characters)")));
    }
    let salt = SaltString::generate(&mut OsRng);
    // Argon2::default() is argon2id with the RFC 9106 second recommended parameters.
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| DeskError::Invalid(format!("hashing the password: {e}")))
}

/// A hash to verify against when the name is unknown, so that a wrong name costs the same
/// time as a wrong password (no user enumeration by timing).
static DUMMY: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(|| hash("not a password, never matches").unwrap_or_default());

pub fn add(store: &Store, name: &str, email: Option<&str>, role: Role, password: &str, now: Timestamp) -> Result<Account, DeskError> {
    check_name(name)?;
    let h = hash(password)?;
    let n = store
        .connection()
        .execute(
            "INSERT INTO staff (name, email, role, password_hash, created_at) VALUES (?1, ?2, ?3, ?4, ?5) \
             ON CONFLICT (name) DO NOTHING",
            params![name, email, role.as_str(), h, now.as_second()],
        )
        .map_err(StoreError::from)?;
    if n == 0 {
        return Err(DeskError::Refused(format!("staff {name} exists already (use `staff passwd` to change the password)")));
    }
    Ok(Account { name: name.into(), email: email.map(str::to_string), role, created_at: now.to_string(), api_token: false })
}

pub fn list(store: &Store) -> Result<Vec<Account>, DeskError> {
    let mut st = store
        .connection()
        .prepare(
            "SELECT name, email, role, created_at, EXISTS (SELECT 1 FROM api_tokens t WHERE t.staff = staff.name) \
             FROM staff ORDER BY name",
        )
        .map_err(StoreError::from)?;
    let rows = st
        .query_map([], |r| {
            let role: String = r.get(2)?;
            Ok(Account {
                name: r.get(0)?,
                email: r.get(1)?,
                role: role.parse().unwrap_or(Role::Viewer),
                created_at: Timestamp::from_second(r.get(3)?).map(|t| t.to_string()).unwrap_or_default(),
                api_token: r.get(4)?,
            })
        })
        .map_err(StoreError::from)?;
    Ok(rows.collect::<Result<_, _>>().map_err(StoreError::from)?)
}

pub fn passwd(store: &Store, name: &str, password: &str) -> Result<(), DeskError> {
    let h = hash(password)?;
    let n = store
        .connection()
        .execute("UPDATE staff SET password_hash = ?2 WHERE name = ?1", params![name, h])
        .map_err(StoreError::from)?;
    if n == 0 {
        return Err(DeskError::Invalid(format!("no staff member {name}")));
    }
    // A new password ends every session opened with the old one.
    store.connection().execute("DELETE FROM web_sessions WHERE staff = ?1", [name]).map_err(StoreError::from)?;
    Ok(())
}

pub fn remove(store: &Store, name: &str) -> Result<(), DeskError> {
    let n = store.connection().execute("DELETE FROM staff WHERE name = ?1", [name]).map_err(StoreError::from)?;
    if n == 0 {
        return Err(DeskError::Invalid(format!("no staff member {name}")));
    }
    Ok(())
}

/// The account's role if `password` is right; `None` for a wrong name or password (the
/// caller cannot tell which, on purpose).
pub fn verify(store: &Store, name: &str, password: &str) -> Result<Option<Role>, DeskError> {
    let row: Option<(String, String)> = store
        .connection()
        .query_row("SELECT password_hash, role FROM staff WHERE name = ?1", [name], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()
        .map_err(StoreError::from)?;
    let (h, role) = match row {
        Some(x) => x,
        None => (DUMMY.clone(), String::new()),
    };
    let ok = PasswordHash::new(&h).is_ok_and(|p| Argon2::default().verify_password(password.as_bytes(), &p).is_ok());
    Ok(if ok { role.parse().ok() } else { None })
}

/// The role of an existing account (proxy mode, sessions).
pub fn role_of(store: &Store, name: &str) -> Result<Option<Role>, DeskError> {
    let role: Option<String> = store
        .connection()
        .query_row("SELECT role FROM staff WHERE name = ?1", [name], |r| r.get(0))
        .optional()
        .map_err(StoreError::from)?;
    Ok(role.and_then(|r| r.parse().ok()))
}

/// For the demo database only: when it has no staff accounts yet, make the agent `demo` with
/// a random one-time password and return the password (to print). Once any account exists,
/// nothing is made (`None`).
pub fn demo_account(db: &std::path::Path) -> Result<Option<String>, DeskError> {
    let store = Store::open(db, crate::cases::StoreOptions::default())?;
    let n: i64 = store.connection().query_row("SELECT count(*) FROM staff", [], |r| r.get(0)).map_err(StoreError::from)?;
    if n > 0 {
        return Ok(None);
    }
    let mut b = [0u8; 9];
    rand_core::RngCore::fill_bytes(&mut OsRng, &mut b);
    let password: String = b.iter().map(|x| format!("{x:02x}")).collect();
    add(&store, "demo", None, Role::Agent, &password, Timestamp::now())?;
    Ok(Some(password))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cases::StoreOptions;

    #[test]
    fn accounts_hash_with_argon2id_and_verify() {
        let s = Store::open_in_memory(StoreOptions::default()).unwrap();
        let now: Timestamp = "2025-03-01T10:00:00Z".parse().unwrap();
        add(&s, "ann", Some("ann@example.net"), Role::Agent, "a long password", now).unwrap();
        add(&s, "vera", None, Role::Viewer, "another password", now).unwrap();
        let h: String = s.connection().query_row("SELECT password_hash FROM staff WHERE name = 'ann'", [], |r| r.get(0)).unwrap();
        assert!(h.starts_with("$argon2id$") && !h.contains("a long password"), "{h}");
        assert_eq!(verify(&s, "ann", "a long password").unwrap(), Some(Role::Agent));
        assert_eq!(verify(&s, "vera", "another password").unwrap(), Some(Role::Viewer));
        assert_eq!(verify(&s, "ann", "wrong password").unwrap(), None);
        assert_eq!(verify(&s, "nobody", "a long password").unwrap(), None);
        assert!(matches!(add(&s, "ann", None, Role::Agent, "a long password", now), Err(DeskError::Refused(_))));
        assert!(matches!(add(&s, "bob", None, Role::Agent, "short", now), Err(DeskError::Invalid(_))));
        assert!(matches!(add(&s, "b o b", None, Role::Agent, "a long password", now), Err(DeskError::Invalid(_))));
        passwd(&s, "ann", "a new long password").unwrap();
        assert_eq!(verify(&s, "ann", "a long password").unwrap(), None);
        assert_eq!(verify(&s, "ann", "a new long password").unwrap(), Some(Role::Agent));
        let names: Vec<String> = list(&s).unwrap().into_iter().map(|a| a.name).collect();
        assert_eq!(names, ["ann", "vera"]);
        remove(&s, "vera").unwrap();
        assert!(remove(&s, "vera").is_err());
        assert_eq!(role_of(&s, "vera").unwrap(), None);
    }
}
