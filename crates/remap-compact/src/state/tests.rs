use std::collections::HashSet;
use std::sync::Arc;

use super::*;

#[test]
fn state_words_round_trip() {
    for state in [UNPROCESSED, PROCESSING, PROCESSED, MAPPING, MAPPED] {
        for owner in [Filler::Compactor, Filler::Handler, Filler::Mutator] {
            for buf in [Buf::From(0), Buf::From(u32::MAX), Buf::Spare(7)] {
                let w = pack(state, owner, Some(buf));
                assert_eq!(state_of(w), state);
                assert_eq!(owner_of(w), Some(owner));
                assert_eq!(buf_of(w), buf);
            }
        }
    }
    assert_eq!(state_of(pack(MAPPED, Filler::Mutator, None)), MAPPED);
    assert_eq!(owner_of(UNPROCESSED), None);
}

#[test]
fn buffers_follow_only_in_the_same_mapping() {
    assert!(Buf::From(3).is_followed_by(Buf::From(4)));
    assert!(Buf::Spare(3).is_followed_by(Buf::Spare(4)));
    assert!(!Buf::From(3).is_followed_by(Buf::Spare(4)));
    assert!(!Buf::From(3).is_followed_by(Buf::From(5)));
    assert!(!Buf::From(u32::MAX).is_followed_by(Buf::From(0)));
}

#[test]
fn free_stack_is_lifo_and_bounded_by_its_pages() {
    let stack = FreeStack::new(4);
    assert_eq!(stack.pop(), None);
    stack.push(2);
    stack.push(0);
    stack.push(3);
    assert_eq!(stack.len(), 3);
    assert_eq!(stack.pop(), Some(3));
    assert_eq!(stack.pop(), Some(0));
    assert_eq!(stack.pop(), Some(2));
    assert_eq!(stack.pop(), None);
    assert_eq!(stack.len(), 0);
}

/// Threads pushing and popping concurrently never lose or duplicate an index.
#[test]
fn free_stack_concurrent_push_pop_keeps_every_index_once() {
    const N: u32 = 4096;
    let stack = Arc::new(FreeStack::new(N as usize));
    for i in 0..N {
        stack.push(i);
    }
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let stack = Arc::clone(&stack);
            std::thread::spawn(move || {
                let mut mine = Vec::new();
                for round in 0..20_000u32 {
                    if let Some(i) = stack.pop() {
                        if round % 3 == 0 {
                            mine.push(i); // keep it
                        } else {
                            stack.push(i);
                        }
                    }
                }
                mine
            })
        })
        .collect();
    let mut seen: HashSet<u32> = HashSet::new();
    for t in threads {
        for i in t.join().unwrap() {
            assert!(seen.insert(i), "index {i} popped twice");
        }
    }
    while let Some(i) = stack.pop() {
        assert!(seen.insert(i), "index {i} both kept and still stacked");
    }
    assert_eq!(seen.len(), N as usize, "an index was lost");
}
