//! Object IDs: 64 lowercase hex characters, looked up by exact ID, by name, or by a
//! unique ID prefix, in that order, as dockerd does.

pub fn is_full_id(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// The 12-character short form shown by `ls` and used for hostnames.
pub fn short(id: &str) -> &str {
    &id[..id.len().min(12)]
}

/// What a reference resolved to.
#[derive(Debug, PartialEq, Eq)]
pub enum Lookup<T> {
    Found(T),
    NotFound,
    Ambiguous,
}

/// Resolve `key` among `(id, name, item)` triples: exact ID, then exact name, then a
/// unique ID prefix.
pub fn resolve<'a, T, I>(key: &str, items: I) -> Lookup<T>
where
    I: IntoIterator<Item = (&'a str, &'a str, T)>,
    T: Clone,
{
    let items: Vec<_> = items.into_iter().collect();
    if let Some((_, _, t)) = items.iter().find(|(id, _, _)| *id == key) {
        return Lookup::Found(t.clone());
    }
    if let Some((_, _, t)) = items.iter().find(|(_, name, _)| *name == key) {
        return Lookup::Found(t.clone());
    }
    if key.is_empty() {
        return Lookup::NotFound;
    }
    let mut hits = items.iter().filter(|(id, _, _)| id.starts_with(key));
    match (hits.next(), hits.next()) {
        (Some((_, _, t)), None) => Lookup::Found(t.clone()),
        (Some(_), Some(_)) => Lookup::Ambiguous,
        _ => Lookup::NotFound,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_id_then_name_then_unique_prefix() {
        let items = [("abc1", "web", 1), ("abd2", "abc1x", 2), ("ffff", "db", 3)];
        let it = || items.iter().map(|(a, b, c)| (*a, *b, *c));
        assert_eq!(resolve("abc1", it()), Lookup::Found(1));
        assert_eq!(resolve("db", it()), Lookup::Found(3));
        assert_eq!(resolve("ff", it()), Lookup::Found(3));
        assert_eq!(resolve("ab", it()), Lookup::Ambiguous);
        assert_eq!(resolve("zz", it()), Lookup::NotFound);
        assert_eq!(resolve("", it()), Lookup::NotFound);
    }
}
