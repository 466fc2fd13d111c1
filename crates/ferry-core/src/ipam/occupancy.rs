//! Which addresses of a pool are taken, as a bitmap of 64-address words, for finding
//! the next free address without testing addresses one by one.
//!
//! Addresses are numbers of either family (an IPv4 address as its `u32`, an IPv6 one as
//! its `u128`: a pool holds one family, so they never meet). Only words with a bit set
//! are kept, in a persistent ordered map: a pool's copy (the rollback copy, the record
//! of what the store holds) stays O(1), an empty /8 or /64 costs nothing, and a full
//! /16 is 1024 words. [`Occupancy::next_clear`] looks at the word
//! holding its start, then walks the stored words after it: a missing word or one with
//! a clear bit ends the walk, so the worst case in a full /16 is 1024 steps, not 65,536
//! map lookups.

/// Addresses as `u128`, bit `n % 64` of word `n / 64`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Occupancy {
    words: imbl::OrdMap<u128, u64>,
}

fn split(n: u128) -> (u128, u32) {
    (n >> 6, (n & 63) as u32)
}

impl Occupancy {
    pub fn set(&mut self, n: u128) {
        let (w, b) = split(n);
        *self.words.entry(w).or_insert(0) |= 1 << b;
    }

    pub fn clear(&mut self, n: u128) {
        let (w, b) = split(n);
        if let Some(bits) = self.words.get_mut(&w) {
            *bits &= !(1 << b);
            if *bits == 0 {
                self.words.remove(&w);
            }
        }
    }

    /// The first address in `from..=to` whose bit is clear.
    pub fn next_clear(&self, from: u128, to: u128) -> Option<u128> {
        if from > to {
            return None;
        }
        let (w, b) = split(from);
        let here = self.words.get(&w).copied().unwrap_or(0) | ((1u64 << b) - 1);
        let found = if here != u64::MAX {
            Some(w << 6 | u128::from(here.trailing_ones()))
        } else {
            self.after_word(w)
        };
        found.filter(|&n| n <= to)
    }

    /// The first clear bit in a word after `w`.
    fn after_word(&self, w: u128) -> Option<u128> {
        let mut expect = w.checked_add(1)?;
        for (&k, &bits) in self.words.range(expect..) {
            if k > expect {
                break;
            }
            if bits != u64::MAX {
                return Some(k << 6 | u128::from(bits.trailing_ones()));
            }
            expect = k.checked_add(1)?;
        }
        // `expect` is a word with no entry: all clear (unless past the last word).
        expect.checked_mul(64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    fn naive(set: &std::collections::BTreeSet<u128>, from: u128, to: u128) -> Option<u128> {
        (from..=to).find(|n| !set.contains(n))
    }

    #[test]
    fn agrees_with_a_plain_scan_on_random_pools() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(6);
        for round in 0..300 {
            let base: u128 = match round % 4 {
                0 => 0,
                // an IPv6 /64's upper half: the sparse words far from zero
                1 => (0xfd00_u128 << 112) | rng.gen_range(0..1u128 << 63),
                _ => rng.gen_range(0..1 << 20),
            };
            let span: u128 = rng.gen_range(1..700);
            let density: f64 = rng.gen_range(0.0..1.0);
            let mut occ = Occupancy::default();
            let mut set = std::collections::BTreeSet::new();
            for n in base..base + span {
                if rng.gen_bool(density) {
                    occ.set(n);
                    set.insert(n);
                }
            }
            // some releases, some double sets
            for _ in 0..span / 4 {
                let n = base + rng.gen_range(0..span);
                occ.clear(n);
                set.remove(&n);
                let m = base + rng.gen_range(0..span);
                occ.set(m);
                occ.set(m);
                set.insert(m);
            }
            for _ in 0..50 {
                let from = base + rng.gen_range(0..span);
                let to = from + rng.gen_range(0..span + 70);
                assert_eq!(
                    occ.next_clear(from, to),
                    naive(&set, from, to),
                    "round {round}: {from}..={to}"
                );
                let n = base + rng.gen_range(0..span);
                assert_eq!(occ.next_clear(n, n).is_none(), set.contains(&n));
            }
        }
    }

    #[test]
    fn a_full_run_of_words_is_walked_to_its_end() {
        let mut occ = Occupancy::default();
        for n in 0..64 * 1024 {
            occ.set(n);
        }
        assert_eq!(occ.next_clear(5, u32::MAX.into()), Some(64 * 1024));
        assert_eq!(occ.next_clear(5, 64 * 1024 - 1), None);
        occ.clear(64 * 1000 + 17);
        assert_eq!(occ.next_clear(70, u32::MAX.into()), Some(64 * 1000 + 17));
    }

    #[test]
    fn the_top_of_the_address_space_has_no_word_after_it() {
        let mut occ = Occupancy::default();
        for top in [u128::from(u32::MAX), u128::MAX] {
            for n in top - 63..=top {
                occ.set(n);
            }
            assert_eq!(occ.next_clear(top - 10, top), None);
            occ.clear(top);
            assert_eq!(occ.next_clear(top - 10, top), Some(top));
        }
    }

    #[test]
    fn emptied_words_are_dropped() {
        let mut occ = Occupancy::default();
        occ.set(130);
        occ.clear(130);
        assert_eq!(occ, Occupancy::default());
    }
}
