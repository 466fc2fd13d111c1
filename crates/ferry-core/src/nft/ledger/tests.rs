use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::*;

fn els(items: &[(SetName, &str, Option<&str>)]) -> Elements {
    let mut e = Elements::default();
    for (set, k, v) in items {
        e.put(*set, k.to_string(), v.map(str::to_string));
    }
    e
}

type Added = (SetName, String, Option<String>);

fn sorted(d: &Delta) -> (Vec<Slot>, Vec<Added>) {
    let (mut del, mut add) = (d.delete.clone(), d.add.clone());
    del.sort();
    add.sort();
    (del, add)
}

#[test]
fn a_source_added_replaced_and_removed() {
    let mut l: Ledger<&str> = Ledger::default();
    let a = els(&[(SetName::PubAny, "tcp . 8080", Some("10.0.0.2 . 80"))]);
    let d = l.delta_for(&[("a", a.clone())]);
    assert_eq!(d.add.len(), 1);
    assert!(d.delete.is_empty());
    l.replace(vec![("a", a)]);

    // The same port now goes to another address: a delete and an add.
    let a2 = els(&[(SetName::PubAny, "tcp . 8080", Some("10.0.0.3 . 80"))]);
    let d = l.delta_for(&[("a", a2.clone())]);
    assert_eq!(d.delete, vec![(SetName::PubAny, "tcp . 8080".to_string())]);
    assert_eq!(d.add[0].2.as_deref(), Some("10.0.0.3 . 80"));
    l.replace(vec![("a", a2)]);

    // Unchanged elements make no delta.
    let same = l.by_source["a"].clone();
    assert!(l.delta_for(&[("a", same)]).is_empty());

    let d = l.delta_for(&[("a", Elements::default())]);
    assert_eq!(d.delete.len(), 1);
    l.replace(vec![("a", Elements::default())]);
    assert_eq!(l.all().count(), 0);
    assert!(l.by_source.is_empty() && l.held.is_empty());
}

#[test]
fn a_key_two_sources_hold_stays_until_both_let_go() {
    let shared = els(&[(SetName::Bridges, "\"br0\"", None)]);
    let mut l = Ledger::of([("a", shared.clone()), ("b", shared.clone())]);
    assert!(l.delta_for(&[("a", Elements::default())]).is_empty());
    l.replace(vec![("a", Elements::default())]);
    assert_eq!(l.all().count(), 1);
    assert_eq!(l.delta_for(&[("b", Elements::default())]).delete.len(), 1);
}

/// A random source: a few elements from a small universe, so that sources overlap.
/// Values are a function of the key, as in ferry (a key means one thing).
fn random_elements(rng: &mut StdRng) -> Elements {
    let mut e = Elements::default();
    for _ in 0..rng.gen_range(0..4) {
        let set = SetName::ALL[rng.gen_range(0..SetName::ALL.len())];
        let k = rng.gen_range(0..12);
        let v = (set == SetName::PubAny).then(|| format!("v{}", k % 3));
        e.put(set, format!("k{k}"), v);
    }
    e
}

fn full(sources: &HashMap<u32, Elements>) -> Elements {
    let mut all = Elements::default();
    for e in sources.values() {
        all.extend(e.clone());
    }
    all
}

#[test]
fn replacing_sources_matches_recomputing_everything() {
    for seed in 0..8 {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut truth: HashMap<u32, Elements> = HashMap::new();
        let mut l: Ledger<u32> = Ledger::default();
        for step in 0..300 {
            let changes: Vec<(u32, Elements)> = (0..rng.gen_range(1..4))
                .map(|_| (rng.gen_range(0..10), random_elements(&mut rng)))
                .collect();
            // A batch names each source once (as ferryd's keys do).
            let mut seen = std::collections::HashSet::new();
            let changes: Vec<_> = changes
                .into_iter()
                .filter(|(s, _)| seen.insert(*s))
                .collect();
            let before = full(&truth);
            for (s, e) in &changes {
                truth.insert(*s, e.clone());
            }
            let after = full(&truth);
            let d = l.delta_for(&changes);
            assert_eq!(
                sorted(&d),
                sorted(&before.delta(&after)),
                "seed {seed} step {step}: delta"
            );
            l.replace(changes);
            assert_eq!(l.all(), &after, "seed {seed} step {step}: elements");
        }
    }
}
