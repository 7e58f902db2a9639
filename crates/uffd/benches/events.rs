//! Event decoding cost: how long it takes to turn a full buffer of `uffd_msg`s into [`Event`]s,
//! so a regression in the handler's hot path shows in `cargo bench`.

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use uffd::{raw, Event, EventBuffer};

fn decode(c: &mut Criterion) {
    let msgs: Vec<raw::uffd_msg> = (0..64u64)
        .map(|i| raw::uffd_msg {
            event: raw::UFFD_EVENT_PAGEFAULT,
            arg: [1, 0x7f00_0000_0000 + i * 4096, i],
            ..Default::default()
        })
        .collect();
    let mut group = c.benchmark_group("events");
    group.throughput(Throughput::Elements(msgs.len() as u64));
    group.bench_function("decode_64_pagefaults", |b| {
        b.iter_batched_ref(
            || {
                let mut buf = EventBuffer::new(msgs.len());
                buf.load(&msgs, true);
                buf
            },
            |buf| {
                let mut sum = 0u64;
                for event in buf.drain() {
                    if let Event::Pagefault(fault) = event {
                        sum = sum.wrapping_add(fault.address);
                    }
                }
                std::hint::black_box(sum)
            },
            BatchSize::SmallInput,
        );
    });
    group.finish();
}

criterion_group!(benches, decode);
criterion_main!(benches);
