//! `join-file` end to end: JSONL in, join, JSONL out (to a sink), on a
//! generated narrow stream of three machines with two axes each.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use millrace_config::{JoinRuleConfig, TimePolicy};
use millrace_join::joiner::Joiner;
use millrace_worker::join::file;

fn input(records: usize) -> Vec<u8> {
    let mut out = String::new();
    let things = ["R0815", "H31415", "R27182"];
    for i in 0..records {
        let thing = things[i % 3];
        let axis = if (i / 3) % 2 == 0 { "C11" } else { "C12" };
        let quantity = if (i / 6) % 2 == 0 { "actSpeed" } else { "vaTorque" };
        let t = 1_554_096_380_468i64 + (i / 12) as i64;
        out.push_str(&format!(
            "{{\"thing\":\"{thing}\",\"quantity\":\"{quantity}_{axis}\",\"phenomenonTime\":{t},\"result\":{}}}\n",
            (i % 1000) as f64 * 0.25 - 100.0
        ));
    }
    out.into_bytes()
}

fn join_file(c: &mut Criterion) {
    let data = input(500_000);
    let rule = JoinRuleConfig {
        name: "power".into(),
        left: r"actSpeed_(C\d+)".into(),
        right: r"vaTorque_(C\d+)".into(),
        output: Some("vaPower_$1".into()),
        expression: Some("2*pi/60*left*right".into()),
        time: TimePolicy::Mean,
        max_delta: None,
        max_latency: None,
        reorder_window: None,
        state_horizon: None,
    };
    let mut group = c.benchmark_group("join_file");
    group.throughput(Throughput::Elements(500_000));
    group.sample_size(10);
    group.bench_function("jsonl_in_out", |b| {
        b.iter(|| {
            let mut joiner = Joiner::new(std::slice::from_ref(&rule)).unwrap();
            let mut sink = std::io::sink();
            let mut rejects = std::io::sink();
            file::run(&mut joiner, &data[..], &mut sink, &mut rejects, false, |_| {}).unwrap()
        })
    });
    group.finish();
}

criterion_group!(benches, join_file);
criterion_main!(benches);
