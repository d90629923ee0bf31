//! Per-account API tokens: a script reads `/api/cases` as a staff member without a
//! password or a session. One token per account; only its SHA-256 is stored (a 256-bit
//! random token cannot be guessed, so a slow password hash would add nothing), and it is
//! shown once, when made. A token reads the JSON API only: the web layer never accepts it
//! for a page or an action. It goes with its account (`ON DELETE CASCADE`).

use jiff::Timestamp;
use rusqlite::{params, OptionalExtension};

use super::{Actor, DeskError, Role};
use crate::cases::{sha256_hex, Store, StoreError};

/// Tokens start so, which tells a reader (and secret scanners) what they are.
pub const PREFIX: &str = "delistd_";

/// Make (or replace) the token of account `name`; the token itself, to show once.
pub fn issue(store: &Store, name: &str, now: Timestamp) -> Result<String, DeskError> {
    if super::accounts::role_of(store, name)?.is_none() {
        return Err(DeskError::Invalid(format!("no staff member {name} (see `delistd staff list`)")));
    }
    let mut b = [0u8; 32];
    rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut b);
    let token: String = std::iter::once(PREFIX.to_string()).chain(b.iter().map(|x| format!("{x:02x}"))).collect();
    store
        .connection()
        .execute(
            "INSERT INTO api_tokens (staff, token_sha256, created_at) VALUES (?1, ?2, ?3) \
             ON CONFLICT (staff) DO UPDATE SET token_sha256 = excluded.token_sha256, created_at = excluded.created_at",
            params![name, sha256_hex(token.as_bytes()), now.as_second()],
        )
        .map_err(StoreError::from)?;
    Ok(token)
}

/// Take the token of `name` away; whether there was one.
pub fn revoke(store: &Store, name: &str) -> Result<bool, DeskError> {
    let n = store.connection().execute("DELETE FROM api_tokens WHERE staff = ?1", [name]).map_err(StoreError::from)?;
    Ok(n > 0)
}

/// The account a token belongs to, as it is now (its current role); `None` for a token
/// nobody has.
pub fn actor_of(store: &Store, token: &str) -> Result<Option<Actor>, DeskError> {
    if !token.starts_with(PREFIX) {
        return Ok(None);
    }
    let row: Option<(String, String)> = store
        .connection()
        .query_row(
            "SELECT s.name, s.role FROM api_tokens t JOIN staff s ON s.name = t.staff WHERE t.token_sha256 = ?1",
            [sha256_hex(token.as_bytes())],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()
        .map_err(StoreError::from)?;
    Ok(row.map(|(name, role)| Actor { name, role: role.parse().unwrap_or(Role::Viewer) }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cases::StoreOptions;

    #[test]
    fn a_token_acts_as_its_account_until_replaced_revoked_or_the_account_goes() {
        let s = Store::open_in_memory(StoreOptions::default()).unwrap();
        let now = Timestamp::from_second(1_740_000_000).unwrap();
        crate::desk::accounts::add(&s, "vera", None, Role::Viewer, "long enough password", now).unwrap();
        assert!(matches!(issue(&s, "nobody", now), Err(DeskError::Invalid(_))));
        let t1 = issue(&s, "vera", now).unwrap();
        assert!(t1.starts_with(PREFIX) && t1.len() == PREFIX.len() + 64, "{t1}");
        assert_eq!(actor_of(&s, &t1).unwrap(), Some(Actor { name: "vera".into(), role: Role::Viewer }));
        let stored: String = s.connection().query_row("SELECT token_sha256 FROM api_tokens", [], |r| r.get(0)).unwrap();
        assert!(!stored.contains(&t1[PREFIX.len()..]), "only the hash is kept");
        let t2 = issue(&s, "vera", now).unwrap();
        assert_eq!(actor_of(&s, &t1).unwrap(), None, "replaced");
        assert!(actor_of(&s, &t2).unwrap().is_some());
        assert!(revoke(&s, "vera").unwrap() && !revoke(&s, "vera").unwrap());
        assert_eq!(actor_of(&s, &t2).unwrap(), None, "revoked");
        let t3 = issue(&s, "vera", now).unwrap();
        crate::desk::accounts::remove(&s, "vera").unwrap();
        assert_eq!(actor_of(&s, &t3).unwrap(), None, "gone with the account");
        assert_eq!(actor_of(&s, "garbage").unwrap(), None);
    }
}
