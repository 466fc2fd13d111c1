//! IPAM alone: allocate and release every address of a /16 (65,533 of them: the network,
//! broadcast and gateway addresses are not handed out), each owned by a 64-character
//! sandbox ID as ferryd stores them. Also the worst case of the rotating cursor (one free
//! address left, just behind it), and what ferryd does with a pool on an operation: clone
//! it (the rollback copy of the network) and serialise it whole (a Docker plugin IPAM
//! pool's record; a network's record has left its allocations out since they moved to
//! keys of their own, one per address).
//!
//! The same allocate-and-release in an IPv6 /64 (the first 65,533 of its addresses),
//! for the cost of the family-neutral pool against the /16: the bitmap keeps only the
//! words in use, so the size of the subnet should not show.
//!
//! A counting allocator reports the pool's memory once, before the timings.
//! `cargo bench -p ferry-core --bench ipam` (bench/run passes criterion's `--quick` in quick mode).

#![allow(clippy::unwrap_used, clippy::too_many_lines)] // test code: a failed unwrap is a failed test

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicIsize, Ordering};

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use ferry_core::ipam::AddressPool;

struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

// SAFETY: forwards to the system allocator unchanged; only counts bytes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        LIVE.fetch_add(l.size() as isize, Ordering::Relaxed);
        // SAFETY: same layout, passed through.
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        LIVE.fetch_sub(l.size() as isize, Ordering::Relaxed);
        // SAFETY: p came from System.alloc with this layout.
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        LIVE.fetch_add(new as isize - l.size() as isize, Ordering::Relaxed);
        // SAFETY: p came from System.alloc with layout l.
        unsafe { System.realloc(p, l, new) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

const OWNER: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
/// Host addresses of a /16 minus the gateway.
const ADDRS: u64 = 65_533;

fn pool() -> AddressPool {
    AddressPool::new(
        "10.88.0.0/16".parse().expect("subnet"),
        Ipv4Addr::new(10, 88, 0, 1).into(),
        None,
    )
}

fn pool_v6() -> AddressPool {
    AddressPool::new(
        "fd00:88::/64".parse().expect("subnet"),
        "fd00:88::1".parse().expect("gateway"),
        None,
    )
}

fn fill(p: &mut AddressPool) -> Vec<IpAddr> {
    (0..ADDRS)
        .map(|_| p.allocate_dynamic(OWNER, "bench").expect("room"))
        .collect()
}

fn report_memory() {
    let before = LIVE.load(Ordering::Relaxed);
    let mut p = pool();
    fill(&mut p);
    let used = LIVE.load(Ordering::Relaxed) - before;
    let json = serde_json::to_vec(&p).expect("serialise").len();
    println!(
        "ipam memory: a full /16 pool holds {:.1} MiB ({} bytes per address, of which 64 are \
         the owner ID); serialised whole it is {:.1} MiB of JSON",
        used as f64 / 1048576.0,
        used / ADDRS as isize,
        json as f64 / 1048576.0
    );
    drop(p);
}

fn ipam(c: &mut Criterion) {
    report_memory();
    let mut g = c.benchmark_group("ipam /16");
    g.sample_size(10);
    g.throughput(Throughput::Elements(2 * ADDRS));
    g.bench_function("allocate then release all 65533 addresses", |b| {
        b.iter(|| {
            let mut p = pool();
            let ips = fill(&mut p);
            for ip in ips {
                p.release(black_box(ip));
            }
            p
        })
    });
    g.throughput(Throughput::Elements(1));
    g.bench_function("allocate the last free address (worst-case scan)", |b| {
        let mut full = pool();
        let ips = fill(&mut full);
        // Free one address just behind the cursor: the search walks the whole pool (1024
        // bitmap words) to it.
        let hole = ips[ips.len() - 2];
        full.release(hole);
        b.iter_batched_ref(
            || full.clone(),
            |p| p.allocate_dynamic(OWNER, "bench").expect("the hole"),
            BatchSize::LargeInput,
        )
    });
    let mut full = pool();
    fill(&mut full);
    g.bench_function("clone a full pool (ferryd's rollback copy)", |b| {
        b.iter(|| black_box(&full).clone())
    });
    g.bench_function(
        "serialise a full pool (a plugin IPAM pool's store write)",
        |b| b.iter(|| serde_json::to_vec(black_box(&full)).expect("serialise")),
    );
    g.finish();
    let mut g = c.benchmark_group("ipam /64");
    g.sample_size(10);
    g.throughput(Throughput::Elements(2 * ADDRS));
    g.bench_function("allocate then release 65533 addresses", |b| {
        b.iter(|| {
            let mut p = pool_v6();
            let ips = fill(&mut p);
            for ip in ips {
                p.release(black_box(ip));
            }
            p
        })
    });
    g.finish();
}

criterion_group!(benches, ipam);
criterion_main!(benches);
