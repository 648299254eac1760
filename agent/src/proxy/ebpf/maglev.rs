//! Maglev consistent hashing (Eisenbud et al., NSDI 2016), as Cilium uses
//! it for NodePorts: each backend list gets a lookup table of a prime
//! number `M` of entries, every backend owning about `M / N` of them, and a
//! connection's hash picks an entry. Every node builds the same table from
//! the same backends, so a connection lands on the same backend whichever
//! node it reaches; removing a backend moves only the connections it had.

use hawser_ebpf_common::Backend;

/// Entries per backend at least (Cilium's guidance: M ≥ 100·N keeps the
/// imbalance between backends around 1%).
const ENTRIES_PER_BACKEND: usize = 100;

/// The table size for `backends` backends: the smallest prime ≥ 100 × N
/// (0 for no backends).
pub fn table_size(backends: usize) -> u32 {
    if backends == 0 {
        return 0;
    }
    let mut n = (backends * ENTRIES_PER_BACKEND).max(2);
    while !is_prime(n) {
        n += 1;
    }
    n as u32
}

fn is_prime(n: usize) -> bool {
    n >= 2 && (2..).take_while(|d| d * d <= n).all(|d| !n.is_multiple_of(d))
}

/// The lookup table: for each of `size` entries, the index into
/// `backends` it sends to. Depends only on the backends' addresses, not
/// on their order or on the node.
pub fn table(backends: &[Backend], size: u32) -> Vec<usize> {
    let m = size as u64;
    let n = backends.len();
    if n == 0 || m == 0 {
        return Vec::new();
    }
    // Backends in a node-independent order: by address.
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by_key(|&i| (u32::from_be(backends[i].ip), u16::from_be(backends[i].port)));
    let permutation: Vec<(u64, u64)> = order
        .iter()
        .map(|&i| {
            let name = format!("{}:{}", std::net::Ipv4Addr::from(u32::from_be(backends[i].ip)), u16::from_be(backends[i].port));
            let offset = fnv1a(name.as_bytes(), 0) % m;
            let skip = fnv1a(name.as_bytes(), 1) % (m - 1) + 1;
            (offset, skip)
        })
        .collect();
    let mut entries = vec![usize::MAX; size as usize];
    let mut next = vec![0u64; n];
    let mut filled = 0;
    'fill: loop {
        for (turn, &(offset, skip)) in permutation.iter().enumerate() {
            let mut entry = (offset + next[turn] * skip) % m;
            while entries[entry as usize] != usize::MAX {
                next[turn] += 1;
                entry = (offset + next[turn] * skip) % m;
            }
            entries[entry as usize] = order[turn];
            next[turn] += 1;
            filled += 1;
            if filled == size as usize {
                break 'fill;
            }
        }
    }
    entries
}

/// FNV-1a (64 bit), with `seed` mixed in first: two independent-enough
/// hashes of a backend's name for its offset and skip.
fn fnv1a(bytes: &[u8], seed: u8) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for &byte in std::iter::once(&seed).chain(bytes) {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backend(last: u8) -> Backend {
        Backend { ip: u32::from(std::net::Ipv4Addr::new(10, 244, 0, last)).to_be(), port: 8080u16.to_be(), flags: 0, pad: 0 }
    }

    #[test]
    fn sizes_are_primes_of_at_least_a_hundred_entries_per_backend() {
        assert_eq!(table_size(0), 0);
        assert_eq!(table_size(1), 101);
        assert_eq!(table_size(10), 1009);
        assert_eq!(table_size(3), 307);
    }

    #[test]
    fn every_backend_owns_about_its_share() {
        let backends: Vec<Backend> = (1..=10).map(backend).collect();
        let size = table_size(backends.len());
        let entries = table(&backends, size);
        assert_eq!(entries.len(), size as usize);
        for i in 0..backends.len() {
            let owned = entries.iter().filter(|&&e| e == i).count();
            // Maglev's fill gives each backend ⌊M/N⌋ or ⌈M/N⌉ entries.
            assert!((100..=101).contains(&owned), "backend {i} owns {owned} of {size}");
        }
    }

    #[test]
    fn the_table_does_not_depend_on_the_backends_order() {
        let backends: Vec<Backend> = (1..=5).map(backend).collect();
        let mut reversed = backends.clone();
        reversed.reverse();
        let size = table_size(5);
        let names = |b: &[Backend], t: Vec<usize>| t.into_iter().map(|i| b[i]).collect::<Vec<_>>();
        assert_eq!(names(&backends, table(&backends, size)), names(&reversed, table(&reversed, size)));
    }

    #[test]
    fn removing_a_backend_moves_mostly_its_own_entries() {
        let backends: Vec<Backend> = (1..=10).map(backend).collect();
        let fewer: Vec<Backend> = backends.iter().copied().filter(|b| *b != backend(4)).collect();
        // The same size for both, so entries compare one to one.
        let size = table_size(10);
        let before: Vec<Backend> = table(&backends, size).into_iter().map(|i| backends[i]).collect();
        let after: Vec<Backend> = table(&fewer, size).into_iter().map(|i| fewer[i]).collect();
        let moved = before.iter().zip(&after).filter(|(b, a)| b != a && **b != backend(4)).count();
        // The paper's bound: a small fraction of the other backends' entries move.
        assert!(moved * 100 <= size as usize * 10, "{moved} of {size} entries of other backends moved");
    }
}
