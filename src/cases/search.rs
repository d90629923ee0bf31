//! What the store keeps for search (schema version 9): the full-text index of messages
//! (SQLite FTS5, table `message_search`) and the banned IP as a sortable key (`ip_key`),
//! and the code step of the migration that fills both for rows stored before it.
//!
//! A message is indexed with its subject and its readable text
//! ([`crate::extract::readable`], the same text the case page shows), in the transaction
//! that records it; retention takes the text out again when it drops the raw bytes.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use rusqlite::{params, Connection};

use super::StoreError;
use crate::extract::readable;

/// The sortable key of an IP: a family byte (4 or 6) and the address's bytes in network
/// order. Byte order is address order, so a CIDR block is one contiguous range of keys, and
/// the families never mix (an IPv6 block never takes in IPv4 cases, as [`crate::desk::IpMatch`]
/// does not).
pub fn ip_key(ip: IpAddr) -> Vec<u8> {
    match ip {
        IpAddr::V4(v4) => [&[4u8][..], &v4.octets()].concat(),
        IpAddr::V6(v6) => [&[6u8][..], &v6.octets()].concat(),
    }
}

/// The first and last key of the block `addr/prefix` (prefix counted in the address's own
/// family: 0–32 for IPv4, 0–128 for IPv6).
pub fn ip_key_range(addr: IpAddr, prefix: u8) -> (Vec<u8>, Vec<u8>) {
    match addr {
        IpAddr::V4(v4) => {
            let host = u32::MAX.checked_shr(u32::from(prefix.min(32))).unwrap_or(0);
            let low = u32::from(v4) & !host;
            (ip_key(Ipv4Addr::from(low).into()), ip_key(Ipv4Addr::from(low | host).into()))
        }
        IpAddr::V6(v6) => {
            let host = u128::MAX.checked_shr(u32::from(prefix.min(128))).unwrap_or(0);
            let low = u128::from(v6) & !host;
            (ip_key(Ipv6Addr::from(low).into()), ip_key(Ipv6Addr::from(low | host).into()))
        }
    }
}

/// Why a search text cannot be a query.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SearchError {
    #[error("the search has no words to look for")]
    Empty,
    #[error("the search is too long (at most {MAX_TERMS} words and {MAX_CHARS} characters)")]
    TooLong,
    #[error("the search has an unclosed quote: close it with \"")]
    Unclosed,
}

pub const MAX_TERMS: usize = 16;
pub const MAX_CHARS: usize = 256;

/// A person's search text as an FTS5 MATCH expression that cannot be anything but a list
/// of terms, all of which must match. Every word is quoted, so FTS5 operators (`AND`, `OR`,
/// `NOT`, `NEAR`, `:` column filters, `^`, parentheses) are plain words; `"a phrase"` stays a
/// phrase; `word*` is a prefix search. Words with nothing to index (punctuation) are dropped.
pub fn match_expression(text: &str) -> Result<String, SearchError> {
    if text.chars().count() > MAX_CHARS {
        return Err(SearchError::TooLong);
    }
    let mut terms: Vec<String> = Vec::new();
    let mut rest = text.trim();
    while !rest.is_empty() {
        let (term, phrase, after) = if let Some(r) = rest.strip_prefix('"') {
            let end = r.find('"').ok_or(SearchError::Unclosed)?;
            (&r[..end], true, &r[end + 1..])
        } else {
            // A quote inside a word is part of the word (quoted below), not a phrase.
            let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
            (&rest[..end], false, &rest[end..])
        };
        rest = after.trim_start();
        let (word, prefix) = match term.strip_suffix('*') {
            Some(w) if !phrase => (w, true),
            _ => (term, false),
        };
        // A term FTS5 would tokenise to nothing matches nothing: leave it out.
        if !word.chars().any(char::is_alphanumeric) {
            continue;
        }
        // Inside FTS5 quotes only `"` is special, written twice.
        let quoted = format!("\"{}\"", word.replace('"', "\"\""));
        terms.push(if prefix { format!("{quoted}*") } else { quoted });
    }
    if terms.is_empty() {
        return Err(SearchError::Empty);
    }
    if terms.len() > MAX_TERMS {
        return Err(SearchError::TooLong);
    }
    Ok(terms.join(" "))
}

/// Add a message to the index (its subject, and the readable text of `raw` when the bytes
/// are at hand).
pub(crate) fn index_message(conn: &Connection, id: i64, subject: Option<&str>, raw: Option<&[u8]>) -> Result<(), StoreError> {
    let body = raw.map(|r| readable::decode(r).text);
    conn.prepare_cached("INSERT INTO message_search (rowid, subject, body) VALUES (?1, ?2, ?3)")?
        .execute(params![id, subject.unwrap_or(""), body.as_deref().unwrap_or("")])?;
    Ok(())
}

/// Take a message out of the index (deleted, or indexed again).
pub(crate) fn unindex_message(conn: &Connection, id: i64) -> Result<(), StoreError> {
    conn.prepare_cached("DELETE FROM message_search WHERE rowid = ?1")?.execute([id])?;
    Ok(())
}

/// Case `case` was opened by `sender`: a sender not seen before enters the substring
/// index (`case_senders`, one row per sender, rowid = its oldest case).
pub(crate) fn index_sender(conn: &Connection, case: i64, sender: &str) -> Result<(), StoreError> {
    let oldest: Option<i64> =
        conn.prepare_cached("SELECT min(id) FROM cases WHERE sender = ?1")?.query_row([sender], |r| r.get(0))?;
    if oldest.is_none_or(|o| o == case) {
        conn.prepare_cached("INSERT INTO case_senders (rowid, sender) VALUES (?1, ?2)")?.execute(params![case, sender])?;
    }
    Ok(())
}

/// Case `case` of `sender` was deleted: if it was the sender's row in the substring index,
/// the row moves to the sender's next oldest case, or goes with the sender's last case
/// (the address is personal data: retention must not leave it behind).
pub(crate) fn unindex_sender(conn: &Connection, case: i64, sender: &str) -> Result<(), StoreError> {
    let oldest: Option<i64> =
        conn.prepare_cached("SELECT min(id) FROM cases WHERE sender = ?1")?.query_row([sender], |r| r.get(0))?;
    if oldest.is_none_or(|o| o > case) {
        conn.prepare_cached("DELETE FROM case_senders WHERE rowid = ?1")?.execute([case])?;
        if let Some(o) = oldest {
            conn.prepare_cached("INSERT INTO case_senders (rowid, sender) VALUES (?1, ?2)")?.execute(params![o, sender])?;
        }
    }
    Ok(())
}

/// Shortest part of a sender the trigram index can look up (one trigram).
pub const MIN_SUBSTRING: usize = 3;

/// A substring of a sender as a `case_senders` MATCH expression: one quoted string, which
/// the trigram tokenizer matches wherever it occurs. `None` when too short to look up.
pub fn substring_expression(part: &str) -> Option<String> {
    (part.chars().count() >= MIN_SUBSTRING).then(|| format!("\"{}\"", part.replace('"', "\"\"")))
}

/// Messages indexed per progress line of the backfill.
const PROGRESS_EVERY: i64 = 50_000;

/// The code step of schema version 9, inside the migration's transaction: index every
/// message already stored and give every case its `ip_key`. One row in memory at a time
/// (keyset batches by id), with progress in the log for a large database.
pub(crate) fn backfill(conn: &Connection) -> Result<(), StoreError> {
    let total: i64 = conn.query_row("SELECT count(*) FROM messages", [], |r| r.get(0))?;
    if total >= PROGRESS_EVERY {
        tracing::info!(messages = total, "schema 9: indexing the stored messages for search (once)");
    }
    let mut last = 0i64;
    let mut done = 0i64;
    loop {
        let batch: Vec<(i64, Option<String>, Option<Vec<u8>>)> = {
            let mut st =
                conn.prepare_cached("SELECT id, subject, raw FROM messages WHERE id > ?1 ORDER BY id LIMIT 500")?;
            let rows = st.query_map([last], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
            rows.collect::<Result<_, _>>()?
        };
        let Some(&(id, _, _)) = batch.last() else { break };
        last = id;
        for (id, subject, raw) in &batch {
            index_message(conn, *id, subject.as_deref(), raw.as_deref())?;
            done += 1;
            if done % PROGRESS_EVERY == 0 {
                tracing::info!(done, total, "schema 9: messages indexed");
            }
        }
    }
    let mut last = 0i64;
    loop {
        let batch: Vec<(i64, String)> = {
            let mut st = conn.prepare_cached(
                "SELECT id, ip FROM cases WHERE id > ?1 AND ip IS NOT NULL ORDER BY id LIMIT 5000",
            )?;
            let rows = st.query_map([last], |r| Ok((r.get(0)?, r.get(1)?)))?;
            rows.collect::<Result<_, _>>()?
        };
        let Some((id, _)) = batch.last() else { break };
        last = *id;
        let mut up = conn.prepare_cached("UPDATE cases SET ip_key = ?2 WHERE id = ?1")?;
        for (id, ip) in &batch {
            // An IP that does not parse (written by hand in the shell) has no key: it is
            // still found by the exact-address filter.
            if let Ok(ip) = ip.parse::<IpAddr>() {
                up.execute(params![id, ip_key(ip)])?;
            }
        }
    }
    if total >= PROGRESS_EVERY {
        tracing::info!(messages = total, "schema 9: search index complete");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bundled_sqlite_has_fts5_with_contentless_delete() {
        let c = Connection::open_in_memory().unwrap();
        c.execute_batch(
            "CREATE VIRTUAL TABLE t USING fts5(a, content = '', contentless_delete = 1);
             INSERT INTO t (rowid, a) VALUES (1, 'please delist 203.0.113.7'), (2, 'ciao');
             DELETE FROM t WHERE rowid = 2;",
        )
        .unwrap();
        let hits = |q: &str| -> Vec<i64> {
            let mut st = c.prepare("SELECT rowid FROM t WHERE t MATCH ?1").unwrap();
            st.query_map([q], |r| r.get(0)).unwrap().map(Result::unwrap).collect()
        };
        assert_eq!(hits("\"delist\""), [1]);
        assert_eq!(hits("\"203.0.113.7\""), [1], "an IP is a phrase of its numbers");
        assert!(hits("\"ciao\"").is_empty(), "deleted");
    }

    #[test]
    fn search_text_becomes_quoted_terms() {
        assert_eq!(match_expression("  delist  please ").unwrap(), r#""delist" "please""#);
        assert_eq!(match_expression("acme AND NOT x").unwrap(), r#""acme" "AND" "NOT" "x""#);
        assert_eq!(match_expression(r#""banned sender" deli*"#).unwrap(), r#""banned sender" "deli"*"#);
        assert_eq!(match_expression(r#"sub:x a"b"#).unwrap(), r#""sub:x" "a""b""#);
        assert_eq!(match_expression("* - ( ) 203.0.113.7").unwrap(), r#""203.0.113.7""#);
        assert_eq!(match_expression("*"), Err(SearchError::Empty));
        assert_eq!(match_expression("   "), Err(SearchError::Empty));
        assert_eq!(match_expression(r#""open"#), Err(SearchError::Unclosed));
        assert_eq!(match_expression(&"a ".repeat(17)), Err(SearchError::TooLong));
        assert_eq!(match_expression(&"a".repeat(300)), Err(SearchError::TooLong));
    }

    #[test]
    fn every_search_text_is_a_valid_query() {
        let c = Connection::open_in_memory().unwrap();
        c.execute_batch(
            "CREATE VIRTUAL TABLE t USING fts5(a, b, content = '', contentless_delete = 1);
             INSERT INTO t (rowid, a, b) VALUES (1, 'x', 'AND or NOT near');",
        )
        .unwrap();
        for text in ["AND", "OR NOT", "NEAR(a b)", "a:b", "^x", "(", ")", "\"\"\" x", "x\"y", "*x*", "a - b", "日本語", "{a b}: c", "'; DROP TABLE t; --"] {
            if let Ok(q) = match_expression(text) {
                let r: rusqlite::Result<i64> = c.query_row("SELECT count(*) FROM t WHERE t MATCH ?1", [&q], |r| r.get(0));
                assert!(r.is_ok(), "{text:?} → {q:?}: {r:?}");
            }
        }
        let n: i64 = c.query_row("SELECT count(*) FROM t WHERE t MATCH ?1", [match_expression("and not").unwrap()], |r| r.get(0)).unwrap();
        assert_eq!(n, 1, "operators are words");
    }

    #[test]
    fn the_migration_indexes_stored_messages_and_keys_stored_cases() {
        use crate::cases::schema::{migrate, migrations};
        let mut c = Connection::open_in_memory().unwrap();
        let all = migrations().unwrap();
        migrate(&mut c, &all[..8]).unwrap();
        let html = "From: a@example.com\r\nSubject: =?utf-8?q?D=C3=A9listage?=\r\nContent-Type: text/html\r\n\r\n\
                    <p>Bitte <b>entsperren</b></p><script>tracker()</script>";
        c.execute_batch(&format!(
            "INSERT INTO messages (id, source_kind, path, subject, received_at, size, sha256, raw, outcome)
             VALUES (1, 'file', 'a', 'Délistage', 0, 1, 'a', CAST('{html}' AS BLOB), 'processed'),
                    (2, 'file', 'b', 'no bytes', 0, 1, 'b', NULL, 'processed');
             INSERT INTO cases (id, ip, sender, state, opened_at, resolved_at) VALUES
                    (1, '2001:db8::7', 'a@example.com', 'rejected', 0, 1),
                    (2, 'not an ip', 'a@example.com', 'rejected', 0, 1);"
        ))
        .unwrap();
        migrate(&mut c, &all).unwrap();
        let hits = |q: &str| -> Vec<i64> {
            let mut st = c.prepare("SELECT rowid FROM message_search WHERE message_search MATCH ?1 ORDER BY rowid").unwrap();
            st.query_map([match_expression(q).unwrap()], |r| r.get(0)).unwrap().map(Result::unwrap).collect()
        };
        assert_eq!(hits("entsperren"), [1], "the HTML body, as text");
        assert!(hits("tracker").is_empty() && hits("script").is_empty(), "no script text, no markup");
        assert_eq!(hits("delistage"), [1]);
        assert_eq!(hits("bytes"), [2], "a message without bytes by its subject");
        let keys: Vec<Option<Vec<u8>>> =
            c.prepare("SELECT ip_key FROM cases ORDER BY id").unwrap().query_map([], |r| r.get(0)).unwrap().map(Result::unwrap).collect();
        assert_eq!(keys, [Some(ip_key("2001:db8::7".parse().unwrap())), None]);
    }

    #[test]
    fn a_part_of_a_sender_is_found_by_the_trigram_index_once_per_sender() {
        use crate::cases::store::tests::new_case;
        use crate::cases::{NewCase, Store, StoreOptions};
        let mut s = Store::open_in_memory(StoreOptions::default()).unwrap();
        let now = jiff::Timestamp::from_second(1_740_000_000).unwrap();
        let tx = s.transaction().unwrap();
        for (i, sender) in ["Alice@Shop.Example.com", "bob@example.org", "o\"dd@example.net", "alice@shop.example.COM"].iter().enumerate() {
            tx.open_case(&NewCase { sender: sender.to_string(), ..new_case(&format!("192.0.2.{i}"), None) }, now).unwrap();
        }
        tx.commit().unwrap();
        let c = s.connection();
        let hits = |part: &str| -> Vec<i64> {
            let q = substring_expression(part).unwrap();
            let mut st = c.prepare("SELECT rowid FROM case_senders WHERE case_senders MATCH ?1 ORDER BY rowid").unwrap();
            st.query_map([q], |r| r.get(0)).unwrap().map(Result::unwrap).collect()
        };
        assert_eq!(hits("shop.EXAMPLE"), [1], "one row for both cases of alice (any case)");
        assert_eq!(hits("example"), [1, 2, 3]);
        assert_eq!(hits("@example.org"), [2]);
        assert_eq!(hits("o\"dd"), [3]);
        assert!(hits("xample.de").is_empty());
        assert_eq!(substring_expression("ab"), None);
        // Deleting alice's oldest case moves her row to the next; deleting bob's only case
        // takes bob out.
        for (case, sender) in [(1, "Alice@Shop.Example.com"), (2, "bob@example.org")] {
            c.execute("DELETE FROM events WHERE case_id = ?1", [case]).unwrap();
            c.execute("DELETE FROM cases WHERE id = ?1", [case]).unwrap();
            unindex_sender(c, case, sender).unwrap();
        }
        assert_eq!(hits("example"), [3, 4]);
        assert_eq!(hits("shop.example"), [4]);
    }

    #[test]
    fn ip_keys_sort_in_address_order_and_blocks_are_ranges() {
        let k = |s: &str| ip_key(s.parse().unwrap());
        assert!(k("10.0.0.255") < k("10.0.1.0") && k("9.255.255.255") < k("10.0.0.0"));
        let (lo, hi) = ip_key_range("203.0.113.77".parse().unwrap(), 24);
        assert_eq!((&lo, &hi), (&k("203.0.113.0"), &k("203.0.113.255")));
        assert!(k("203.0.114.0") > hi && k("203.0.112.255") < lo);
        let (lo, hi) = ip_key_range("2001:db8::".parse().unwrap(), 32);
        assert!(lo <= k("2001:db8:ffff::1") && k("2001:db8:ffff::1") <= hi && k("2001:db9::") > hi);
        let (lo, hi) = ip_key_range("::".parse().unwrap(), 0);
        assert!(k("10.1.2.3") < lo || k("10.1.2.3") > hi, "IPv4 keys are outside every IPv6 block");
        let (lo, hi) = ip_key_range("0.0.0.0".parse().unwrap(), 0);
        assert!(lo <= k("255.255.255.255") && k("255.255.255.255") <= hi && k("2001:db8::1") > hi);
        assert!(k("::ffff:10.1.2.3") > hi, "nor IPv6 keys in an IPv4 block");
        assert_eq!(ip_key_range("192.0.2.1".parse().unwrap(), 32), (k("192.0.2.1"), k("192.0.2.1")));
    }
}
