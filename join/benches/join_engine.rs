//! The pairing engine alone: one rule over two quantities of one machine,
//! sides progressing together (speed and torque alternating, 1 ms apart).
//! Also prints the state held over a 10-million-record stream.

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use millrace_join::engine::{Pairing, PairingOptions, Side};

fn stream(n: usize) -> Vec<(Side, i64)> {
    (0..n).map(|i| (if i % 2 == 0 { Side::Left } else { Side::Right }, i as i64 * 1_000_000)).collect()
}

fn engine(c: &mut Criterion) {
    let records = stream(1_000_000);
    let mut group = c.benchmark_group("join_engine");
    group.throughput(Throughput::Elements(records.len() as u64));
    group.bench_function("one_rule_two_quantities", |b| {
        b.iter_batched(
            || Pairing::<u32>::new(PairingOptions::default()),
            |mut pairing| {
                let mut pairs = 0u64;
                for (seq, &(side, t)) in records.iter().enumerate() {
                    pairing.push(0, side, t, seq as u64, seq as u32, &mut |_| pairs += 1).unwrap();
                }
                pairs
            },
            BatchSize::LargeInput,
        )
    });
    group.finish();

    // State over a long stream: the most records held at any time.
    let mut pairing = Pairing::<u32>::new(PairingOptions::default());
    let (mut most, mut pairs) = (0usize, 0u64);
    for i in 0..10_000_000usize {
        let side = if i % 2 == 0 { Side::Left } else { Side::Right };
        pairing.push(0, side, i as i64 * 1_000_000, i as u64, i as u32, &mut |_| pairs += 1).unwrap();
        if i % 1024 == 0 {
            most = most.max(pairing.retained());
        }
    }
    println!(
        "state over 10,000,000 records: at most {most} records held (about {} bytes), {pairs} pairs",
        most * Pairing::<u32>::record_bytes()
    );
}

criterion_group!(benches, engine);
criterion_main!(benches);
