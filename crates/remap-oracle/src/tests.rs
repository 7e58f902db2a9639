//! The oracle's own tests: every errno path of `docs/move-contract.md` section 2 and every row difference of
//! the behaviour table.

use crate::*;

const SRC: u64 = 0x1000_0000;
const DST: u64 = 0x2000_0000;
const P: u64 = PAGE_SIZE;

fn row(name: &str) -> &'static Behaviour {
    Behaviour::named(name).unwrap()
}

fn newest() -> &'static Behaviour {
    row("6.18")
}

/// The state after `op`, which must be deterministic (or take the alternative that says `pick`).
fn apply(s: &Space, op: Op) -> Space {
    let p = s.predict(&op, newest()).unwrap();
    match p.unique() {
        Some(a) => a.after.clone(),
        None => panic!("{op:?} has {} alternatives", p.alternatives.len()),
    }
}

fn apply_pick(s: &Space, op: Op, pick: &str) -> Space {
    let p = s.predict(&op, newest()).unwrap();
    p.alternatives
        .iter()
        .find(|a| a.why.contains(pick))
        .unwrap_or_else(|| panic!("no alternative {pick:?} for {op:?}: {:?}", p.outcomes()))
        .after
        .clone()
}

fn write(s: &Space, addr: u64, tag: u64) -> Space {
    let p = s.predict(&Op::WriteTouch { addr, tag }, newest()).unwrap();
    p.alternatives
        .iter()
        .find(|a| a.why.contains("small"))
        .unwrap_or(&p.alternatives[0])
        .after
        .clone()
}

fn mv(dst: u64, src: u64, len: u64, mode: u64) -> Op {
    Op::Move {
        uffd: 1,
        dst,
        src,
        len,
        mode,
        caller: Caller::Owner,
    }
}

/// `pages` source pages filled with tags 1.., and a registered empty destination.
fn pair(pages: u64) -> Space {
    let mut s = Space::new(
        Environment::default(),
        vec![
            Vma::anon(SRC, pages * P),
            Vma::anon(DST, pages * P).registered(1, true, false),
        ],
    );
    for i in 0..pages {
        s = write(&s, SRC + i * P, i + 1);
    }
    s
}

fn outcomes(s: &Space, op: &Op, b: &Behaviour) -> Vec<Outcome> {
    s.predict(op, b).unwrap().outcomes()
}

fn only(s: &Space, op: &Op) -> Outcome {
    let o = outcomes(s, op, newest());
    assert_eq!(o.len(), 1, "{op:?}: {o:?}");
    o[0]
}

#[test]
fn present_page_moves_keeping_its_frame() {
    let s = pair(1);
    let frame = match s.get(SRC) {
        Page::Present(p) => p.frame,
        other => panic!("{other:?}"),
    };
    let p = s.predict(&mv(DST, SRC, P, 0), newest()).unwrap();
    let a = p.unique().unwrap();
    assert_eq!(a.outcome, Outcome::done(P));
    assert!(a.after.get(SRC).is_none());
    assert!(matches!(a.after.get(DST), Page::Present(q) if q.frame == frame && q.tag == 1));
}

#[test]
fn holes_without_and_with_allow_src_holes() {
    let s = Space::new(
        Environment::default(),
        vec![
            Vma::anon(SRC, 3 * P),
            Vma::anon(DST, 3 * P).registered(1, true, false),
        ],
    );
    assert_eq!(only(&s, &mv(DST, SRC, P, 0)), Outcome::failed(Errno::NoEnt));
    let s = write(&s, SRC + P, 5);
    let p = s
        .predict(&mv(DST, SRC, 3 * P, MOVE_ALLOW_SRC_HOLES), newest())
        .unwrap();
    let a = p.unique().unwrap();
    assert_eq!(a.outcome, Outcome::done(3 * P));
    assert!(a.after.get(DST).is_none() && a.after.get(DST + 2 * P).is_none());
    assert_eq!(a.after.get(DST + P).tag(), Some(5));
}

#[test]
fn populated_dst_is_eexist_and_partial_progress_is_eagain() {
    let s = pair(4);
    let s = apply(&s, Op::Unregister { uffd: 1, vma: DST });
    let s = write(&s, DST + 3 * P, 99);
    let s = apply(
        &s,
        Op::Register {
            uffd: 1,
            vma: DST,
            missing: true,
            wp: false,
        },
    );
    assert_eq!(
        only(&s, &mv(DST + 3 * P, SRC + 3 * P, P, 0)),
        Outcome::failed(Errno::Exist)
    );
    assert_eq!(only(&s, &mv(DST, SRC, 4 * P, 0)), Outcome::partial(3 * P));
}

#[test]
fn bad_arguments_leave_the_field_untouched() {
    let s = pair(2);
    for op in [
        mv(DST, SRC, 0, 0),
        mv(DST + 8, SRC, P, 0),
        mv(DST, SRC + 8, P, 0),
        mv(DST, SRC, P + 1, 0),
        mv(DST, SRC, P, 1 << 4),
        mv(TASK_SIZE, SRC, P, 0),
        mv(DST, 0, P, 0),
    ] {
        assert_eq!(only(&s, &op), Outcome::rejected(Errno::Inval), "{op:?}");
    }
    let child = Op::Move {
        uffd: 1,
        dst: DST,
        src: SRC,
        len: P,
        mode: 0,
        caller: Caller::ForkedChild,
    };
    assert_eq!(only(&s, &child), Outcome::rejected(Errno::Inval));
}

#[test]
fn registration_errors_are_einval() {
    let s = pair(1);
    let unreg = apply(&s, Op::Unregister { uffd: 1, vma: DST });
    assert_eq!(
        only(&unreg, &mv(DST, SRC, P, 0)),
        Outcome::failed(Errno::Inval)
    );
    let other = apply(
        &unreg,
        Op::Register {
            uffd: 2,
            vma: DST,
            missing: true,
            wp: false,
        },
    );
    assert_eq!(
        only(&other, &mv(DST, SRC, P, 0)),
        Outcome::failed(Errno::Inval)
    );
    // A clashing registration is EBUSY.
    assert_eq!(
        only(
            &other,
            &Op::Register {
                uffd: 1,
                vma: DST,
                missing: true,
                wp: false
            }
        ),
        Outcome::Call(Some(Errno::Busy))
    );
    // WP-only destination registration suffices; a registered source is fine too.
    let wp = apply(
        &unreg,
        Op::Register {
            uffd: 1,
            vma: DST,
            missing: false,
            wp: true,
        },
    );
    let wp = apply(
        &wp,
        Op::Register {
            uffd: 1,
            vma: SRC,
            missing: true,
            wp: false,
        },
    );
    assert_eq!(only(&wp, &mv(DST, SRC, P, 0)), Outcome::done(P));
}

#[test]
fn missing_vma_is_einval_on_6_8_and_enoent_later() {
    let s = pair(1);
    let hole = 0x3000_0000;
    for (op, name) in [(mv(hole, SRC, P, 0), "dst"), (mv(DST, hole, P, 0), "src")] {
        assert_eq!(
            outcomes(&s, &op, row("6.8")),
            vec![Outcome::failed(Errno::Inval)],
            "{name}"
        );
        for later in ["6.9", "6.12", "6.14", "6.15", "6.18", "6.19"] {
            assert_eq!(
                outcomes(&s, &op, row(later)),
                vec![Outcome::failed(Errno::NoEnt)],
                "{name} {later}"
            );
        }
    }
}

#[test]
fn vma_mismatches_are_einval() {
    let base = |src: Vma| {
        let s = Space::new(
            Environment::default(),
            vec![src, Vma::anon(DST, 4 * P).registered(1, true, false)],
        );
        only(&s, &mv(DST, SRC, P, 0))
    };
    let einval = Outcome::failed(Errno::Inval);
    assert_eq!(base(Vma::anon(SRC, 4 * P).prot(PROT_READ)), einval, "prot");
    assert_eq!(
        base(Vma::anon(SRC, 4 * P).kind(VmaKind::SharedAnon)),
        einval,
        "shared"
    );
    assert_eq!(
        base(Vma::anon(SRC, 4 * P).kind(VmaKind::PrivateFile)),
        einval,
        "file"
    );
    assert_eq!(base(Vma::anon(SRC, 4 * P).mlocked(true)), einval, "mlock");
    // A range beyond its VMA, and one spanning two VMAs.
    let s = pair(2);
    assert_eq!(only(&s, &mv(DST, SRC, 3 * P, 0)), einval);
    let split = Space::new(
        Environment::default(),
        vec![
            Vma::anon(SRC, 4 * P),
            Vma::anon(DST, 2 * P).registered(1, true, false),
            Vma::anon(DST + 2 * P, 2 * P).registered(1, true, false),
        ],
    );
    assert_eq!(only(&split, &mv(DST, SRC, 4 * P, 0)), einval);
    // Both read-only: src not writable.
    let ro = Space::new(
        Environment::default(),
        vec![
            Vma::anon(SRC, P).prot(PROT_READ),
            Vma::anon(DST, P).prot(PROT_READ).registered(1, true, false),
        ],
    );
    assert_eq!(only(&ro, &mv(DST, SRC, P, 0)), einval);
}

#[test]
fn zero_page_is_ebusy_on_6_8_and_moves_later() {
    let s = Space::new(
        Environment::default(),
        vec![
            Vma::anon(SRC, P),
            Vma::anon(DST, P).registered(1, true, false),
        ],
    );
    let s = apply(&s, Op::ReadTouch { addr: SRC });
    assert_eq!(s.get(SRC), Page::Zero);
    let op = mv(DST, SRC, P, 0);
    assert_eq!(
        outcomes(&s, &op, row("6.8")),
        vec![Outcome::failed(Errno::Busy)]
    );
    let p = s.predict(&op, row("6.9")).unwrap();
    assert_eq!(p.outcomes(), vec![Outcome::done(P)]);
    assert_eq!(p.unique().unwrap().after.get(DST), Page::Zero);
}

/// 2 MiB-aligned THP source (one PMD) and a registered destination of `dst_len`.
fn thp_pair(dst_len: u64, dst_huge: bool) -> Space {
    let s = Space::new(
        Environment::default(),
        vec![
            Vma::anon(SRC, PMD_SIZE).huge(true),
            Vma::anon(DST, dst_len)
                .huge(dst_huge)
                .registered(1, true, false),
        ],
    );
    apply_pick(&s, Op::WriteTouch { addr: SRC, tag: 1 }, "THP")
}

#[test]
fn huge_zero_page_is_ebusy_on_6_8_and_moves_whole_later() {
    let s = Space::new(
        Environment::default(),
        vec![
            Vma::anon(SRC, PMD_SIZE).huge(true),
            Vma::anon(DST, PMD_SIZE)
                .huge(true)
                .registered(1, true, false),
        ],
    );
    let s = apply_pick(&s, Op::ReadTouch { addr: SRC }, "huge zero");
    let op = mv(DST, SRC, PMD_SIZE, 0);
    assert_eq!(
        outcomes(&s, &op, row("6.8")),
        vec![Outcome::failed(Errno::Busy)]
    );
    let p = s.predict(&op, row("6.9")).unwrap();
    let a = p.unique().unwrap();
    assert_eq!(a.outcome, Outcome::done(PMD_SIZE));
    assert_eq!(a.after.get(DST + 100 * P), Page::HugeZero);
    assert!(a.after.pmd_is_huge(DST) && !a.after.pmd_is_huge(SRC));
}

#[test]
fn aligned_thp_moves_as_a_pmd() {
    let s = thp_pair(PMD_SIZE, true);
    let p = s.predict(&mv(DST, SRC, PMD_SIZE, 0), newest()).unwrap();
    let a = p.unique().unwrap();
    assert_eq!(a.outcome, Outcome::done(PMD_SIZE));
    assert_eq!(a.after.vma(DST).unwrap().anon_huge_bytes(), PMD_SIZE);
    assert_eq!(a.after.vma(SRC).unwrap().anon_huge_bytes(), 0);
    assert_eq!(a.after.get(DST).tag(), Some(1));
}

#[test]
fn thp_to_unaligned_dst_or_half_length_splits() {
    let s = thp_pair(2 * PMD_SIZE, true);
    let p = s.predict(&mv(DST + P, SRC, PMD_SIZE, 0), newest()).unwrap();
    let a = p.unique().unwrap();
    assert_eq!(a.outcome, Outcome::done(PMD_SIZE));
    assert_eq!(a.after.vma(DST).unwrap().anon_huge_bytes(), 0);
    assert_eq!(a.after.get(DST + P).tag(), Some(1));

    let s = thp_pair(PMD_SIZE, true);
    let p = s.predict(&mv(DST, SRC, PMD_SIZE / 2, 0), newest()).unwrap();
    let a = p.unique().unwrap();
    assert_eq!(a.outcome, Outcome::done(PMD_SIZE / 2));
    assert_eq!(a.after.vma(SRC).unwrap().anon_huge_bytes(), 0);
    assert_eq!(
        a.after.get(SRC + PMD_SIZE / 2),
        Page::Zero,
        "zero-filled, split"
    );
}

#[test]
fn split_maps_zero_filled_subpages_to_the_zero_page_since_6_12() {
    let s = thp_pair(2 * PMD_SIZE, true);
    let op = mv(DST + P, SRC, PMD_SIZE, 0);
    let old = s.predict(&op, row("6.9")).unwrap();
    let old = &old.unique().unwrap().after;
    assert!(matches!(old.get(DST + 2 * P), Page::Present(q) if q.tag == 0));
    let new = s.predict(&op, row("6.12")).unwrap();
    let new = &new.unique().unwrap().after;
    assert_eq!(new.get(DST + 2 * P), Page::Zero);
    assert_eq!(
        new.get(DST + P).tag(),
        Some(1),
        "the written page stays a page"
    );
}

#[test]
fn dst_with_a_page_table_forces_the_split_path() {
    let s = thp_pair(PMD_SIZE, false);
    // A page faulted and zapped at dst leaves a page table (unless PT_RECLAIM frees it).
    let s = apply(&s, Op::Unregister { uffd: 1, vma: DST });
    let s = write(&s, DST + 5 * P, 7);
    let p = s
        .predict(
            &Op::DontNeed {
                addr: DST + 5 * P,
                len: P,
            },
            newest(),
        )
        .unwrap();
    assert_eq!(
        p.alternatives.len(),
        2,
        "PT_RECLAIM may or may not free the table"
    );
    assert_eq!(
        s.predict(
            &Op::DontNeed {
                addr: DST + 5 * P,
                len: P
            },
            row("6.9")
        )
        .unwrap()
        .alternatives
        .len(),
        1
    );
    let kept = p.alternatives[0].after.clone();
    let kept = apply(
        &kept,
        Op::Register {
            uffd: 1,
            vma: DST,
            missing: true,
            wp: false,
        },
    );
    let a = kept.predict(&mv(DST, SRC, PMD_SIZE, 0), newest()).unwrap();
    let a = a.unique().unwrap();
    assert_eq!(a.outcome, Outcome::done(PMD_SIZE));
    assert_eq!(a.after.vma(DST).unwrap().anon_huge_bytes(), 0, "split");
}

#[test]
fn dst_pmd_huge_is_eexist_and_failed_move_still_splits_src() {
    let s = thp_pair(PMD_SIZE, true);
    let s = apply(&s, Op::Unregister { uffd: 1, vma: DST });
    let s = apply_pick(&s, Op::WriteTouch { addr: DST, tag: 50 }, "THP");
    let s = apply(
        &s,
        Op::Register {
            uffd: 1,
            vma: DST,
            missing: true,
            wp: false,
        },
    );
    assert_eq!(
        only(&s, &mv(DST, SRC, PMD_SIZE, 0)),
        Outcome::failed(Errno::Exist)
    );
    // Now a dst with a small page at its first address and a table: the src PMD is split
    // before the EEXIST.
    let s = thp_pair(PMD_SIZE, false);
    let s = apply(&s, Op::Unregister { uffd: 1, vma: DST });
    let s = write(&s, DST, 50);
    let s = apply(
        &s,
        Op::Register {
            uffd: 1,
            vma: DST,
            missing: true,
            wp: false,
        },
    );
    let p = s.predict(&mv(DST, SRC, PMD_SIZE, 0), newest()).unwrap();
    let a = p.unique().unwrap();
    assert_eq!(a.outcome, Outcome::failed(Errno::Exist));
    assert_eq!(
        a.after.vma(SRC).unwrap().anon_huge_bytes(),
        0,
        "src PMD split"
    );
    assert_eq!(a.after.get(SRC).tag(), Some(1));
}

#[test]
fn fork_makes_pages_busy_until_written_after_exit() {
    let s = pair(2);
    let forked = apply(&s, Op::Fork);
    assert_eq!(
        only(&forked, &mv(DST, SRC, 2 * P, 0)),
        Outcome::failed(Errno::Busy)
    );
    let exited = apply(&forked, Op::ChildExit);
    assert_eq!(
        only(&exited, &mv(DST, SRC, 2 * P, 0)),
        Outcome::failed(Errno::Busy)
    );
    // A write reuses or copies; either way the page is exclusive again.
    let p = exited
        .predict(&Op::WriteTouch { addr: SRC, tag: 1 }, newest())
        .unwrap();
    assert_eq!(p.alternatives.len(), 2);
    for a in &p.alternatives {
        let s = write(&a.after, SRC + P, 2);
        assert_eq!(only(&s, &mv(DST, SRC, 2 * P, 0)), Outcome::done(2 * P));
    }
    // With the child alive, a write copies.
    let p = forked
        .predict(&Op::WriteTouch { addr: SRC, tag: 1 }, newest())
        .unwrap();
    assert_eq!(p.alternatives.len(), 1);
}

#[test]
fn dontfork_source_moves_with_a_live_child() {
    let s = Space::new(
        Environment::default(),
        vec![
            Vma::anon(SRC, P).dontfork(true),
            Vma::anon(DST, P).registered(1, true, false),
        ],
    );
    let s = write(&s, SRC, 3);
    let s = apply(&s, Op::Fork);
    assert_eq!(only(&s, &mv(DST, SRC, P, 0)), Outcome::done(P));
}

#[test]
fn same_vma_overlap_up_is_eexist_down_moves() {
    let s = Space::new(Environment::default(), vec![Vma::anon(SRC, 3 * P)]);
    let s = write(&s, SRC, 1);
    let s = write(&s, SRC + P, 2);
    let s = apply(
        &s,
        Op::Register {
            uffd: 1,
            vma: SRC,
            missing: true,
            wp: false,
        },
    );
    assert_eq!(
        only(&s, &mv(SRC + P, SRC, 2 * P, 0)),
        Outcome::failed(Errno::Exist)
    );
    let down = Space::new(Environment::default(), vec![Vma::anon(SRC, 3 * P)]);
    let down = write(&down, SRC + P, 1);
    let down = write(&down, SRC + 2 * P, 2);
    let down = apply(
        &down,
        Op::Register {
            uffd: 1,
            vma: SRC,
            missing: true,
            wp: false,
        },
    );
    assert_eq!(
        only(&down, &mv(SRC, SRC + P, 2 * P, 0)),
        Outcome::done(2 * P)
    );
}

#[test]
fn swapped_pages_move_unless_shared() {
    let s = pair(1);
    let s = apply_pick(&s, Op::SwapOut { addr: SRC }, "reclaimed");
    assert!(matches!(
        s.get(SRC),
        Page::Swapped {
            exclusive: true,
            ..
        }
    ));
    let p = s.predict(&mv(DST, SRC, P, 0), newest()).unwrap();
    assert!(matches!(
        p.unique().unwrap().after.get(DST),
        Page::Swapped { tag: 1, .. }
    ));
    let forked = apply(&s, Op::Fork);
    assert_eq!(
        only(&forked, &mv(DST, SRC, P, 0)),
        Outcome::failed(Errno::Busy)
    );
}

#[test]
fn markers_wp_at_dst_eexist_guard_at_src_efault() {
    let s = Space::new(
        Environment::default(),
        vec![
            Vma::anon(SRC, 4 * P),
            Vma::anon(DST, 4 * P).registered(1, true, true),
        ],
    );
    let s = (0..4).fold(s, |s, i| write(&s, SRC + i * P, i + 1));
    let wp = apply(
        &s,
        Op::WriteProtect {
            uffd: 1,
            addr: DST,
            len: 4 * P,
        },
    );
    assert_eq!(
        only(&wp, &mv(DST, SRC, 2 * P, 0)),
        Outcome::failed(Errno::Exist)
    );
    // ZEROPAGE refuses a WP marker; MADV_DONTNEED drops it.
    let zp = Op::ZeroPage {
        uffd: 1,
        dst: DST,
        len: P,
        mode: 0,
    };
    assert_eq!(only(&wp, &zp), Outcome::failed(Errno::Exist));
    let zapped = apply(&wp, Op::DontNeed { addr: DST, len: P });
    assert!(zapped.get(DST).is_none() && zapped.get(DST + P) == Page::WpMarker);
    // COPY overwrites a WP marker; MOVE does not.
    let copy = Op::Copy {
        uffd: 1,
        dst: DST,
        len: P,
        mode: 0,
        first_tag: 70,
    };
    assert_eq!(only(&wp, &copy), Outcome::done(P));

    let g = apply(
        &s,
        Op::GuardInstall {
            addr: SRC + 2 * P,
            len: P,
        },
    );
    assert_eq!(
        only(&g, &mv(DST, SRC, 4 * P, MOVE_ALLOW_SRC_HOLES)),
        Outcome::partial(2 * P)
    );
    assert_eq!(
        only(
            &g,
            &mv(DST + 2 * P, SRC + 2 * P, 2 * P, MOVE_ALLOW_SRC_HOLES)
        ),
        Outcome::failed(Errno::Fault)
    );
    assert_eq!(
        only(
            &g,
            &Op::WriteTouch {
                addr: SRC + 2 * P,
                tag: 1
            }
        ),
        Outcome::Signal(Signal::Segv)
    );
}

#[test]
fn pending_events_field_untouched_before_6_15_written_after() {
    let s = apply(&pair(1), Op::QueueEvent { uffd: 1 });
    let op = mv(DST, SRC, P, 0);
    for old in ["6.8", "6.9", "6.12", "6.14"] {
        assert_eq!(
            outcomes(&s, &op, row(old)),
            vec![Outcome::rejected(Errno::Again)],
            "{old}"
        );
    }
    for new in ["6.15", "6.18", "6.19"] {
        assert_eq!(
            outcomes(&s, &op, row(new)),
            vec![Outcome::failed(Errno::Again)],
            "{new}"
        );
    }
    let read = apply(&s, Op::ReadEvents { uffd: 1 });
    assert_eq!(only(&read, &op), Outcome::done(P));
}

#[test]
fn copy_and_zeropage_errno_paths() {
    let s = pair(2);
    let copy = |dst, len| Op::Copy {
        uffd: 1,
        dst,
        len,
        mode: 0,
        first_tag: 40,
    };
    let a = s.predict(&copy(DST, 2 * P), newest()).unwrap();
    let a = a.unique().unwrap();
    assert_eq!(a.outcome, Outcome::done(2 * P));
    assert_eq!(a.after.get(DST + P).tag(), Some(41));
    assert_eq!(only(&a.after, &copy(DST, P)), Outcome::failed(Errno::Exist));
    assert_eq!(
        only(&s, &copy(SRC, P)),
        Outcome::failed(Errno::NoEnt),
        "unregistered"
    );
    assert_eq!(
        only(&s, &copy(0x3000_0000, P)),
        Outcome::failed(Errno::NoEnt),
        "no VMA"
    );
    assert_eq!(
        only(&s, &copy(DST, 3 * P)),
        Outcome::failed(Errno::NoEnt),
        "beyond"
    );
    assert_eq!(only(&s, &copy(DST + 1, P)), Outcome::rejected(Errno::Inval));
    let zp = Op::ZeroPage {
        uffd: 1,
        dst: DST,
        len: P,
        mode: 0,
    };
    let z = s.predict(&zp, newest()).unwrap();
    assert_eq!(z.unique().unwrap().after.get(DST), Page::Zero);
    let bad = Op::ZeroPage {
        uffd: 1,
        dst: DST,
        len: P,
        mode: 2,
    };
    assert_eq!(only(&s, &bad), Outcome::rejected(Errno::Inval));
}

#[test]
fn copy_over_a_guard_region_installs_until_the_marker_fix() {
    let s = pair(1);
    let s = apply(&s, Op::GuardInstall { addr: DST, len: P });
    let copy = Op::Copy {
        uffd: 1,
        dst: DST,
        len: P,
        mode: 0,
        first_tag: 9,
    };
    assert_eq!(outcomes(&s, &copy, row("6.18")), vec![Outcome::done(P)]);
    assert_eq!(
        outcomes(&s, &copy, row("6.19")),
        vec![Outcome::failed(Errno::Exist)]
    );
    // MOVE never installs over it.
    let s = apply(&s, Op::Unregister { uffd: 1, vma: DST });
    let s = apply(
        &s,
        Op::Register {
            uffd: 1,
            vma: DST,
            missing: true,
            wp: false,
        },
    );
    assert_eq!(only(&s, &mv(DST, SRC, P, 0)), Outcome::failed(Errno::Exist));
}

#[test]
fn dontneed_errno_and_thp_split() {
    let locked = Space::new(
        Environment::default(),
        vec![Vma::anon(SRC, P).mlocked(true)],
    );
    assert_eq!(
        only(&locked, &Op::DontNeed { addr: SRC, len: P }),
        Outcome::Call(Some(Errno::Inval))
    );
    let s = thp_pair(PMD_SIZE, true);
    let p = s
        .predict(
            &Op::DontNeed {
                addr: SRC + P,
                len: P,
            },
            newest(),
        )
        .unwrap();
    let a = &p.alternatives[0];
    assert_eq!(a.after.vma(SRC).unwrap().anon_huge_bytes(), 0);
    assert!(a.after.get(SRC + P).is_none());
    assert!(
        matches!(a.after.get(SRC), Page::Present(q) if matches!(q.folio, Folio::Large { pmd_mapped: false, .. }))
    );
}

#[test]
fn touching_registered_missing_pages_is_a_userfault() {
    let s = pair(1);
    assert_eq!(
        only(&s, &Op::ReadTouch { addr: DST }),
        Outcome::Signal(Signal::Userfault)
    );
    assert_eq!(
        only(&s, &Op::WriteTouch { addr: DST, tag: 3 }),
        Outcome::Signal(Signal::Userfault)
    );
}

#[test]
fn collapse_and_split_pmd() {
    let s = Space::new(
        Environment::default(),
        vec![Vma::anon(SRC, PMD_SIZE).huge(true)],
    );
    let s = write(&s, SRC + 3 * P, 8);
    let p = s.predict(&Op::Collapse { addr: SRC }, newest()).unwrap();
    assert!(p.allows(&Outcome::OK) && p.allows(&Outcome::Call(Some(Errno::Again))));
    let c = apply_pick(&s, Op::Collapse { addr: SRC }, "succeeded");
    assert_eq!(c.vma(SRC).unwrap().anon_huge_bytes(), PMD_SIZE);
    assert_eq!(c.get(SRC + 3 * P).tag(), Some(8));
    let split = apply(&c, Op::SplitPmd { addr: SRC });
    assert_eq!(split.vma(SRC).unwrap().anon_huge_bytes(), 0);
}

#[test]
fn behaviour_rows_are_ordered_and_cover_each_change() {
    for w in BEHAVIOUR_TABLE.windows(2) {
        assert!(w[0].since < w[1].since);
        assert_ne!(w[0], w[1]);
    }
    let v = |s| {
        Behaviour::for_version(KernelVersion::parse(s).unwrap())
            .unwrap()
            .name
    };
    assert_eq!(v("6.8.0"), "6.8");
    assert_eq!(v("6.11.2"), "6.9");
    assert_eq!(v("6.13.2"), "6.12");
    assert_eq!(v("6.14.1"), "6.14");
    assert_eq!(v("6.17.3"), "6.15");
    assert_eq!(v("6.18.44-fc-v1045"), "6.18");
    assert_eq!(v("7.1.0"), "6.19");
    assert_eq!(Behaviour::newest().name, "6.19");
    assert_eq!(row("6.15").index(), 4);
}
