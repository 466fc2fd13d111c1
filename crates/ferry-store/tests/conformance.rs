//! One suite of semantics, run against every engine: the in-memory fake and redb with a
//! clock the test moves, and a real etcd (Debian's etcd-server) on loopback with real time.
//! What holds for one must hold for all, so that code written against the fake is right on
//! etcd.

#![allow(clippy::unwrap_used, clippy::too_many_lines)] // test code: a failed unwrap is a failed test

use std::sync::Arc;
use std::time::{Duration, Instant};

use ferry_store::{
    Compare, EtcdConfig, EtcdStore, ManualClock, MemStore, Op, Outcome, RedbStore, Store,
    StoreError, WatchEvent, WatchMessage,
};
use ferry_testkit::etcd::{etcd_or_skip, Etcd};

/// An engine under test, and how to let time pass for its leases.
struct Engine {
    store: Arc<dyn Store>,
    /// Let at least `d` pass for the leases.
    pass: Box<dyn Fn(Duration)>,
    _keep: Option<Box<dyn std::any::Any>>,
}

fn mem() -> Engine {
    let clock = ManualClock::default();
    let c = clock.clone();
    Engine {
        store: Arc::new(MemStore::with_clock(Arc::new(clock))),
        pass: Box::new(move |d| c.advance(d)),
        _keep: None,
    }
}

fn redb() -> Engine {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::default();
    let c = clock.clone();
    let store = RedbStore::open_with_clock(&dir.path().join("s.redb"), Arc::new(clock)).unwrap();
    Engine {
        store: Arc::new(store),
        pass: Box::new(move |d| c.advance(d)),
        _keep: Some(Box::new(dir)),
    }
}

fn etcd(test: &str) -> Option<Engine> {
    if !etcd_or_skip(test) {
        return None;
    }
    let server = Etcd::start_local().unwrap();
    let mut cfg = EtcdConfig::new(vec![server.endpoint.clone()]);
    cfg.prefix = format!("/ferry-{test}/");
    let store = EtcdStore::connect(cfg).unwrap();
    Some(Engine {
        store: Arc::new(store),
        pass: Box::new(std::thread::sleep),
        _keep: Some(Box::new(server)),
    })
}

/// Run `suite` on every engine.
fn each(test: &str, suite: impl Fn(&Engine)) {
    suite(&mem());
    suite(&redb());
    if let Some(e) = etcd(test) {
        suite(&e);
    }
}

fn put(k: &str, v: &str) -> Op {
    Op::Put(k.into(), v.as_bytes().to_vec())
}

fn committed(o: Outcome) -> i64 {
    match o {
        Outcome::Committed(r) => r,
        Outcome::Conflict => panic!("expected a commit, got a conflict"),
    }
}

/// Poll `f` for up to `within`; true as soon as it holds.
fn eventually(within: Duration, f: impl Fn() -> bool) -> bool {
    let end = Instant::now() + within;
    loop {
        if f() {
            return true;
        }
        if Instant::now() > end {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn batches_apply_whole_and_list_in_key_order() {
    each("batches", |e| {
        let s = &e.store;
        s.commit(&[put("net/a", "1"), put("net/b", "2"), put("sbx/x", "3")])
            .unwrap();
        assert_eq!(
            s.list("net/").unwrap(),
            vec![
                ("net/a".into(), b"1".to_vec()),
                ("net/b".into(), b"2".to_vec())
            ]
        );
        s.commit(&[Op::Delete("net/a".into()), put("net/b", "9")])
            .unwrap();
        assert_eq!(
            s.list("net/").unwrap(),
            vec![("net/b".into(), b"9".to_vec())]
        );
        s.commit(&[Op::Delete("absent".into())]).unwrap();
    });
}

#[test]
fn revisions_move_forward_and_keys_remember_theirs() {
    each("revisions", |e| {
        let s = &e.store;
        let r0 = s.range("k/").unwrap().revision;
        let r1 = committed(s.txn(&[], &[put("k/a", "1")]).unwrap());
        assert!(r1 > r0, "a commit moves the revision: {r0} then {r1}");
        let r2 = committed(s.txn(&[], &[put("k/a", "2"), put("k/b", "1")]).unwrap());
        assert_eq!(r2, r1 + 1, "one transaction is one revision");
        let l = s.range("k/").unwrap();
        assert_eq!(l.revision, r2);
        let a = &l.entries[0];
        assert_eq!(
            (a.key.as_str(), a.create_revision, a.mod_revision),
            ("k/a", r1, r2)
        );
        assert_eq!(
            (l.entries[1].create_revision, l.entries[1].mod_revision),
            (r2, r2)
        );
    });
}

#[test]
fn compares_decide_and_a_conflict_changes_nothing() {
    each("compares", |e| {
        let s = &e.store;
        let claim = |v: &str| {
            s.txn(
                &[Compare::Absent("blk/10.0.1.0".into())],
                &[put("blk/10.0.1.0", v)],
            )
            .unwrap()
        };
        let r = committed(claim("host1"));
        assert_eq!(claim("host2"), Outcome::Conflict, "the second claim loses");
        assert_eq!(
            s.list("blk/").unwrap()[0].1,
            b"host1".to_vec(),
            "and changes nothing"
        );

        let stale = Compare::ModRevision("blk/10.0.1.0".into(), r - 1);
        assert_eq!(
            s.txn(&[stale], &[put("blk/10.0.1.0", "x")]).unwrap(),
            Outcome::Conflict
        );
        let fresh = Compare::ModRevision("blk/10.0.1.0".into(), r);
        committed(s.txn(&[fresh], &[put("blk/10.0.1.0", "host1b")]).unwrap());

        let wrong = Compare::Value("blk/10.0.1.0".into(), b"host1".to_vec());
        assert_eq!(
            s.txn(&[wrong], &[Op::Delete("blk/10.0.1.0".into())])
                .unwrap(),
            Outcome::Conflict
        );
        let right = Compare::Value("blk/10.0.1.0".into(), b"host1b".to_vec());
        committed(
            s.txn(&[right], &[Op::Delete("blk/10.0.1.0".into())])
                .unwrap(),
        );
        assert!(s.list("blk/").unwrap().is_empty());
        assert_eq!(
            s.txn(&[Compare::ModRevision("blk/gone".into(), r)], &[])
                .unwrap(),
            Outcome::Conflict,
            "a revision compare on an absent key fails"
        );
        // No key under a prefix: true for an empty range, false once one key is there
        // (not fooled by a key that only shares the prefix's first characters).
        let none = || Compare::NoneUnder("ep/net1/".into());
        committed(s.txn(&[none()], &[put("ep/net10/x", "other")]).unwrap());
        committed(s.txn(&[none()], &[put("net/net1", "n")]).unwrap());
        committed(s.txn(&[], &[put("ep/net1/10.0.0.2", "e")]).unwrap());
        assert_eq!(
            s.txn(&[none()], &[Op::Delete("net/net1".into())]).unwrap(),
            Outcome::Conflict,
            "a key under the prefix"
        );
        assert_eq!(s.list("net/").unwrap().len(), 1, "and nothing changed");
    });
}

#[test]
fn racing_claims_never_give_one_block_twice() {
    each("racing", |e| {
        let s = &e.store;
        let claims: Vec<Vec<u32>> = std::thread::scope(|scope| {
            let hosts: Vec<_> = (0..4)
                .map(|h| {
                    scope.spawn(move || {
                        let mut mine = Vec::new();
                        for _ in 0..6 {
                            // Claim the lowest block nobody has, by compare-and-swap.
                            'claim: for b in 0..64u32 {
                                let key = format!("race/{b:03}");
                                let won = s
                                    .txn(
                                        &[Compare::Absent(key.clone())],
                                        &[put(&key, &h.to_string())],
                                    )
                                    .unwrap();
                                if won != Outcome::Conflict {
                                    mine.push(b);
                                    break 'claim;
                                }
                            }
                        }
                        mine
                    })
                })
                .collect();
            hosts.into_iter().map(|t| t.join().unwrap()).collect()
        });
        let mut all: Vec<u32> = claims.iter().flatten().copied().collect();
        all.sort();
        assert_eq!(
            all,
            (0..24).collect::<Vec<_>>(),
            "24 claims, 24 distinct blocks, no gaps"
        );
        for (h, mine) in claims.iter().enumerate() {
            for b in mine {
                let owner = &s.list(&format!("race/{b:03}")).unwrap()[0].1;
                assert_eq!(
                    owner,
                    &h.to_string().into_bytes(),
                    "block {b} is its winner's"
                );
            }
        }
    });
}

#[test]
fn a_lease_keeps_its_keys_only_while_it_lives() {
    each("leases", |e| {
        let s = &e.store;
        let kept = s.grant(Duration::from_secs(2)).unwrap();
        let dropped = s.grant(Duration::from_secs(2)).unwrap();
        s.commit(&[
            Op::PutLeased("node/a".into(), b"a".to_vec(), kept.id),
            Op::PutLeased("node/b".into(), b"b".to_vec(), dropped.id),
            put("node/static", "s"),
        ])
        .unwrap();
        assert_eq!(s.range("node/").unwrap().entries[0].lease, Some(kept.id));

        // Keep one alive across more than its TTL; the other expires.
        for _ in 0..4 {
            (e.pass)(Duration::from_millis(900));
            s.keep_alive(kept.id).unwrap();
        }
        let keys = || {
            s.list("node/")
                .unwrap()
                .into_iter()
                .map(|(k, _)| k)
                .collect::<Vec<_>>()
        };
        assert!(
            eventually(Duration::from_secs(10), || keys()
                == ["node/a", "node/static"]),
            "the lease not kept alive took node/b with it: {:?}",
            keys()
        );
        let r = s.keep_alive(dropped.id);
        assert!(matches!(r, Err(StoreError::LeaseNotFound(_))), "{r:?}");
        assert!(matches!(
            s.commit(&[Op::PutLeased("node/c".into(), vec![], dropped.id)]),
            Err(StoreError::LeaseNotFound(_))
        ));

        s.revoke(kept.id).unwrap();
        assert_eq!(
            keys(),
            ["node/static"],
            "revoking a lease deletes its keys at once"
        );
        s.revoke(kept.id).unwrap();
    });
}

fn changes(w: &mut ferry_store::Watcher, n: usize) -> Vec<(i64, Vec<WatchEvent>)> {
    let mut out = Vec::new();
    while out.len() < n {
        match w.next_blocking(Duration::from_secs(5)) {
            Some(WatchMessage::Changes { revision, events }) => out.push((revision, events)),
            other => panic!("expected changes, got {other:?} after {out:?}"),
        }
    }
    out
}

#[test]
fn a_watch_sees_every_change_under_its_prefix_in_order() {
    each("watch", |e| {
        let s = &e.store;
        let from = s.range("w/").unwrap().revision + 1;
        let mut w = s.watch("w/", from).unwrap();
        let r1 = committed(s.txn(&[], &[put("w/a", "1"), put("other/x", "1")]).unwrap());
        let r2 = committed(s.txn(&[], &[put("w/a", "2"), put("w/b", "1")]).unwrap());
        s.commit(&[put("other/y", "1")]).unwrap();
        let r3 = committed(s.txn(&[], &[Op::Delete("w/a".into())]).unwrap());
        let got = changes(&mut w, 3);
        assert_eq!(
            got.iter().map(|(r, _)| *r).collect::<Vec<_>>(),
            [r1, r2, r3]
        );
        assert_eq!(got[0].1.len(), 1, "other/x is not under w/: {:?}", got[0].1);
        assert!(
            matches!(&got[1].1[0], WatchEvent::Put(en) if en.value == b"2" && en.create_revision == r1)
        );
        assert_eq!(
            got[2].1,
            [WatchEvent::Delete {
                key: "w/a".into(),
                mod_revision: r3
            }]
        );
        assert!(
            w.next_blocking(Duration::from_millis(200)).is_none(),
            "other/y is not seen"
        );

        // A second watcher from the past replays the same history.
        let mut again = s.watch("w/", r2).unwrap();
        let replay = changes(&mut again, 2);
        assert_eq!(replay.iter().map(|(r, _)| *r).collect::<Vec<_>>(), [r2, r3]);
    });
}

#[test]
fn a_watch_from_a_compacted_revision_is_told_to_resync() {
    each("compacted", |e| {
        let s = &e.store;
        let r1 = committed(s.txn(&[], &[put("c/a", "1")]).unwrap());
        let r2 = committed(s.txn(&[], &[put("c/a", "2")]).unwrap());
        committed(s.txn(&[], &[put("c/a", "3")]).unwrap());
        s.compact(r2).unwrap();
        let mut w = s.watch("c/", r1).unwrap();
        match w.next_blocking(Duration::from_secs(5)) {
            Some(WatchMessage::Compacted { compact_revision }) => assert!(compact_revision >= r2),
            other => panic!("expected Compacted, got {other:?}"),
        }
        // The resync: a fresh range, then a watch from just after it, misses nothing.
        let l = s.range("c/").unwrap();
        assert_eq!(l.entries[0].value, b"3");
        let mut w = s.watch("c/", l.revision + 1).unwrap();
        let r4 = committed(s.txn(&[], &[put("c/a", "4")]).unwrap());
        assert_eq!(changes(&mut w, 1)[0].0, r4);
    });
}

#[test]
fn a_lease_ending_is_seen_by_watchers() {
    each("lease-watch", |e| {
        let s = &e.store;
        let lease = s.grant(Duration::from_secs(2)).unwrap();
        s.commit(&[Op::PutLeased("h/1".into(), b"up".to_vec(), lease.id)])
            .unwrap();
        let mut w = s.watch("h/", s.range("h/").unwrap().revision + 1).unwrap();
        (e.pass)(Duration::from_secs(3));
        // The embedded engines expire lazily, at the next call; etcd on its own.
        assert!(eventually(Duration::from_secs(10), || s
            .list("h/")
            .unwrap()
            .is_empty()));
        let got = changes(&mut w, 1);
        assert!(matches!(&got[0].1[0], WatchEvent::Delete { key, .. } if key == "h/1"));
    });
}

#[test]
fn redb_keeps_revisions_and_leases_across_a_reopen_and_reads_old_files() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.redb");
    // A file as ferry wrote it before revisions: only the kv table.
    {
        let db = redb::Database::create(&path).unwrap();
        let w = db.begin_write().unwrap();
        {
            let def: redb::TableDefinition<&str, &[u8]> = redb::TableDefinition::new("kv");
            let mut t = w.open_table(def).unwrap();
            t.insert("net/old", b"1".as_slice()).unwrap();
        }
        w.commit().unwrap();
    }
    let clock = ManualClock::default();
    let s = RedbStore::open_with_clock(&path, Arc::new(clock.clone())).unwrap();
    let old = &s.range("net/").unwrap().entries[0];
    assert_eq!((old.create_revision, old.mod_revision), (1, 1));
    assert_eq!(
        s.txn(
            &[Compare::ModRevision("net/old".into(), 1)],
            &[put("net/old", "2")]
        )
        .unwrap(),
        Outcome::Committed(2)
    );
    let lease = s.grant(Duration::from_secs(5)).unwrap();
    s.commit(&[Op::PutLeased("node/me".into(), b"x".to_vec(), lease.id)])
        .unwrap();
    drop(s);

    let s = RedbStore::open_with_clock(&path, Arc::new(clock.clone())).unwrap();
    let l = s.range("").unwrap();
    assert_eq!(l.revision, 3);
    assert_eq!(l.entries.len(), 2);
    assert_eq!(s.keep_alive(lease.id).unwrap(), Duration::from_secs(5));
    clock.advance(Duration::from_secs(6));
    assert_eq!(
        s.list("node/").unwrap(),
        vec![],
        "the lease expired while ferryd was away"
    );
    // A watch from before the reopen cannot be served from memory: resync.
    let mut w = s.watch("", 2).unwrap();
    assert!(matches!(
        w.next_blocking(Duration::from_secs(1)),
        Some(WatchMessage::Compacted { .. })
    ));
}
