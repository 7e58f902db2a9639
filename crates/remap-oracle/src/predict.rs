//! What each operation does to a [`Space`], per [`Behaviour`] row: the prediction rules.
//!
//! The MOVE rules follow `move_pages()` of the newest kernel (`docs/move-contract.md` sections 2.1-2.5) step by
//! step, so that the side effects of a failed call (a source PMD split before an EEXIST, page
//! tables allocated for holes) are predicted too. Version differences are read from the
//! [`Behaviour`] row, never from a version number.

use crate::op::{COPY_DONTWAKE, COPY_WP, MOVE_ALLOW_SRC_HOLES, MOVE_DONTWAKE};
use crate::space::pmd_base;
use crate::{
    Alternative, Behaviour, Caller, Errno, Folio, Op, Outcome, Page, Prediction, Present, Signal,
    Space, ThpAdvice, ThpMode, UffdId, Unmodelled, VmaKind, PAGES_PER_PMD, PAGE_SIZE, PMD_SIZE,
    PROT_READ, PROT_WRITE, TASK_SIZE,
};

/// `vm.mmap_min_addr`'s usual value: the ioctls reject ranges starting below it.
pub const MMAP_MIN_ADDR: u64 = 0x1_0000;

/// The bound on explored branches per operation: beyond it the oracle gives up.
const MAX_BRANCHES: usize = 256;

type Alts = Result<Vec<Alternative>, Unmodelled>;

fn alt(outcome: Outcome, after: Space) -> Alternative {
    Alternative {
        outcome,
        after,
        why: "",
    }
}

fn one(outcome: Outcome, after: &Space) -> Alts {
    Ok(vec![alt(outcome, after.clone())])
}

fn why(mut a: Alternative, why: &'static str) -> Alternative {
    a.why = why;
    a
}

/// The userfaultfd ioctls' `validate_range` (plus the overflow check): EINVAL, field untouched.
fn range_ok(start: u64, len: u64) -> bool {
    start % PAGE_SIZE == 0
        && len % PAGE_SIZE == 0
        && len != 0
        && (MMAP_MIN_ADDR..TASK_SIZE).contains(&start)
        && len <= TASK_SIZE - start
}

/// The page addresses of `[start, end)`.
fn pages_in(start: u64, end: u64) -> impl Iterator<Item = u64> {
    (0..(end - start) / PAGE_SIZE).map(move |i| start + i * PAGE_SIZE)
}

/// One step of the MOVE loop.
enum Step {
    /// `bytes` moved; continue after them.
    Advance(Space, u64),
    /// The state changed (a split); look at the same address again.
    Retry(Space),
    /// The loop stops with this error.
    Stop(Space, Errno),
}

impl Space {
    /// Predicts `op` on this space for the kernel behaviour `b`.
    ///
    /// ```
    /// use remap_oracle::{Behaviour, Caller, Errno, Op, Outcome, Space, Vma, PAGE_SIZE};
    /// let (src, dst) = (0x100_0000, 0x200_0000);
    /// let space = Space::new(
    ///     Default::default(),
    ///     vec![Vma::anon(src, PAGE_SIZE), Vma::anon(dst, PAGE_SIZE).registered(1, true, false)],
    /// );
    /// let b = Behaviour::named("6.18").unwrap();
    /// let mv = Op::Move { uffd: 1, dst, src, len: PAGE_SIZE, mode: 0, caller: Caller::Owner };
    /// // The source is a hole: ENOENT without ALLOW_SRC_HOLES.
    /// let p = space.predict(&mv, b).unwrap();
    /// assert_eq!(p.outcomes(), vec![Outcome::failed(Errno::NoEnt)]);
    /// // Write a page and move it.
    /// let space = space
    ///     .predict(&Op::WriteTouch { addr: src, tag: 7 }, b).unwrap()
    ///     .alternatives.pop().unwrap().after;
    /// let p = space.predict(&mv, b).unwrap();
    /// assert!(p.allows(&Outcome::done(PAGE_SIZE)));
    /// assert_eq!(p.unique().unwrap().after.page(dst).unwrap().tag(), Some(7));
    /// ```
    ///
    /// # Errors
    ///
    /// [`Unmodelled`] when the op in this state is outside the model (the message says which
    /// case); a caller must not count that as a disagreement.
    pub fn predict(&self, op: &Op, b: &Behaviour) -> Result<Prediction, Unmodelled> {
        let alts = match *op {
            Op::Move {
                uffd,
                dst,
                src,
                len,
                mode,
                caller,
            } => self.predict_move(uffd, dst, src, len, mode, caller, b),
            Op::Copy {
                uffd,
                dst,
                len,
                mode,
                first_tag,
            } => self.predict_fill(uffd, dst, len, mode, Some(first_tag), b),
            Op::ZeroPage {
                uffd,
                dst,
                len,
                mode,
            } => self.predict_fill(uffd, dst, len, mode, None, b),
            Op::DontNeed { addr, len } => self.predict_zap(addr, len, false, b),
            Op::GuardInstall { addr, len } => self.predict_zap(addr, len, true, b),
            Op::WriteTouch { addr, tag } => self.predict_write(addr, tag),
            Op::ReadTouch { addr } => self.predict_read(addr),
            Op::Fork => self.predict_fork(),
            Op::ChildExit => self.predict_child_exit(),
            Op::SwapOut { addr } => self.predict_swap_out(addr),
            Op::Collapse { addr } => self.predict_collapse(addr),
            Op::SplitPmd { addr } => self.predict_split(addr),
            Op::Register {
                uffd,
                vma,
                missing,
                wp,
            } => self.predict_register(uffd, vma, missing, wp),
            Op::Unregister { uffd, vma } => self.predict_unregister(uffd, vma),
            Op::WriteProtect { uffd, addr, len } => self.predict_writeprotect(uffd, addr, len),
            Op::QueueEvent { uffd } => {
                let mut s = self.clone();
                *s.pending_events.entry(uffd).or_default() += 1;
                one(Outcome::OK, &s)
            }
            Op::ReadEvents { uffd } => {
                let mut s = self.clone();
                s.pending_events.remove(&uffd);
                one(Outcome::OK, &s)
            }
        }?;
        Ok(Prediction::new(alts))
    }

    fn pending(&self, uffd: UffdId) -> bool {
        self.pending_events.get(&uffd).is_some_and(|n| *n > 0)
    }

    /// The early `mmap_changing` check of every filling ioctl.
    fn early_eagain(b: &Behaviour) -> Outcome {
        if b.early_eagain_writes_field {
            Outcome::failed(Errno::Again)
        } else {
            Outcome::rejected(Errno::Again)
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn predict_move(
        &self,
        uffd: UffdId,
        dst: u64,
        src: u64,
        len: u64,
        mode: u64,
        caller: Caller,
        b: &Behaviour,
    ) -> Alts {
        // Section 2.1: the checks before move_pages(), which leave the field untouched.
        if self.pending(uffd) {
            return one(Self::early_eagain(b), self);
        }
        if caller == Caller::ForkedChild || !range_ok(dst, len) || !range_ok(src, len) {
            return one(Outcome::rejected(Errno::Inval), self);
        }
        if mode & !(MOVE_DONTWAKE | MOVE_ALLOW_SRC_HOLES) != 0 {
            return one(Outcome::rejected(Errno::Inval), self);
        }
        // Section 2.2: VMA preconditions, result written to the field.
        let inval = || one(Outcome::failed(Errno::Inval), self);
        let (Some(dv), Some(sv)) = (self.vma(dst), self.vma(src)) else {
            return one(Outcome::failed(b.missing_vma), self);
        };
        if sv.kind == VmaKind::SharedAnon
            || src + len > sv.end()
            || dv.kind == VmaKind::SharedAnon
            || dst + len > dv.end()
        {
            return inval();
        }
        if sv.prot != dv.prot
            || sv.mlocked != dv.mlocked
            || sv.prot & PROT_WRITE == 0
            || dv.registration.map(|r| r.uffd) != Some(uffd)
            || sv.kind != VmaKind::PrivateAnon
            || dv.kind != VmaKind::PrivateAnon
        {
            return inval();
        }
        // Sections 2.3-2.4: the page loop, exploring every allowed branch.
        let end = src + len;
        let holes = mode & MOVE_ALLOW_SRC_HOLES != 0;
        let mut work = vec![(self.clone(), src, dst, 0u64)];
        let mut out = Vec::new();
        let mut steps = 0usize;
        while let Some((space, s, d, moved)) = work.pop() {
            steps += 1;
            if steps > MAX_BRANCHES * 64 || out.len() + work.len() > MAX_BRANCHES {
                return Err(Unmodelled("too many MOVE branches"));
            }
            if s >= end {
                out.push(alt(Outcome::done(len), space));
                continue;
            }
            for step in space.move_step(s, d, end, holes, b)? {
                match step {
                    Step::Advance(next, bytes) => {
                        work.push((next, s + bytes, d + bytes, moved + bytes));
                    }
                    Step::Retry(next) => work.push((next, s, d, moved)),
                    Step::Stop(next, errno) => {
                        let outcome = if moved > 0 {
                            Outcome::partial(moved)
                        } else {
                            Outcome::failed(errno)
                        };
                        out.push(alt(outcome, next));
                    }
                }
            }
        }
        Ok(out)
    }

    /// One iteration of `move_pages()`'s loop at source `s`, destination `d`.
    fn move_step(
        &self,
        s: u64,
        d: u64,
        end: u64,
        holes: bool,
        b: &Behaviour,
    ) -> Result<Vec<Step>, Unmodelled> {
        if self.pmd_is_huge(d) {
            return Ok(vec![Step::Stop(self.clone(), Errno::Exist)]);
        }
        if self.pmd_is_huge(s) {
            let src_page = self.get(s);
            let whole = s % PMD_SIZE == 0 && d % PMD_SIZE == 0 && end - s >= PMD_SIZE;
            if whole && self.pmd_is_none(d) {
                // move_pages_huge_pmd().
                let movable = match src_page {
                    Page::HugeZero => b.zero_page_moves,
                    Page::Present(p) => p.exclusive,
                    _ => unreachable!("a PMD mapping holds a THP or the huge zero page"),
                };
                if !movable {
                    return Ok(vec![Step::Stop(self.clone(), Errno::Busy)]);
                }
                let mut next = self.clone();
                for i in 0..PAGES_PER_PMD {
                    let page = std::mem::take(next.page_mut(s + i * PAGE_SIZE));
                    *next.page_mut(d + i * PAGE_SIZE) = page;
                }
                return Ok(vec![Step::Advance(next, PMD_SIZE)]);
            }
            if let Page::Present(p) = src_page {
                if !p.exclusive {
                    return Ok(vec![Step::Stop(self.clone(), Errno::Busy)]);
                }
            }
            let mut next = self.clone();
            next.split_pmd(s);
            return Ok(vec![Step::Retry(next)]);
        }
        // The PTE path.
        let mut next = self.clone();
        if next.pmd_is_none(s) {
            if !holes {
                return Ok(vec![Step::Stop(next, Errno::NoEnt)]);
            }
            next.tables.insert(pmd_base(s));
        }
        next.tables.insert(pmd_base(d));
        if !next.get(d).is_none() {
            return Ok(vec![Step::Stop(next, Errno::Exist)]);
        }
        let step = match next.get(s) {
            Page::None if holes => Step::Advance(next, PAGE_SIZE),
            Page::None => Step::Stop(next, Errno::NoEnt),
            Page::Zero if b.zero_page_moves => {
                next.move_pte(s, d);
                Step::Advance(next, PAGE_SIZE)
            }
            Page::Zero => Step::Stop(next, Errno::Busy),
            Page::Present(p) => match p.folio {
                Folio::Small if p.exclusive => {
                    next.move_pte(s, d);
                    Step::Advance(next, PAGE_SIZE)
                }
                Folio::Small => Step::Stop(next, Errno::Busy),
                Folio::Large { id, .. } => {
                    // EBUSY is decided on the folio's head page, then the folio is split and
                    // the pages looked at one by one.
                    let flags = next.folio_exclusivity(id);
                    let mut steps = Vec::new();
                    if flags.iter().any(|e| !e) {
                        steps.push(Step::Stop(next.clone(), Errno::Busy));
                    }
                    if flags.iter().any(|e| *e) {
                        next.split_folio(id, b);
                        steps.push(Step::Retry(next));
                    }
                    return Ok(steps);
                }
            },
            Page::Swapped {
                exclusive: true, ..
            } => {
                next.move_pte(s, d);
                Step::Advance(next, PAGE_SIZE)
            }
            Page::Swapped { .. } => Step::Stop(next, Errno::Busy),
            Page::WpMarker | Page::Guard => Step::Stop(next, Errno::Fault),
            Page::HugeZero => unreachable!("handled as a PMD"),
        };
        Ok(vec![step])
    }

    fn move_pte(&mut self, s: u64, d: u64) {
        let page = std::mem::take(self.page_mut(s));
        *self.page_mut(d) = page;
    }

    /// The `PageAnonExclusive` flags of the mapped pages of large folio `id`.
    fn folio_exclusivity(&self, id: u64) -> Vec<bool> {
        let mut flags = Vec::new();
        for v in &self.vmas {
            for p in &v.pages {
                if let Page::Present(Present {
                    exclusive,
                    folio: Folio::Large { id: fid, .. },
                    ..
                }) = p
                {
                    if *fid == id {
                        flags.push(*exclusive);
                    }
                }
            }
        }
        flags
    }

    /// `split_folio()`: every page of large folio `id` becomes a small folio (same frames); where
    /// the row says so, zero-filled pages become the shared zero page.
    fn split_folio(&mut self, id: u64, b: &Behaviour) {
        for v in &mut self.vmas {
            let to_zero = b.split_zero_subpages_to_zero_page && !v.mlocked;
            for p in &mut v.pages {
                if let Page::Present(pr) = p {
                    if matches!(pr.folio, Folio::Large { id: fid, .. } if fid == id) {
                        if to_zero && pr.tag == 0 {
                            *p = Page::Zero;
                        } else {
                            pr.folio = Folio::Small;
                        }
                    }
                }
            }
        }
    }

    /// `split_huge_pmd()` of the PMD containing `addr`: a THP becomes PTE-mapped, the huge zero
    /// page becomes zero-page PTEs; a PTE table now exists.
    pub(crate) fn split_pmd(&mut self, addr: u64) {
        if !self.pmd_is_huge(addr) {
            return;
        }
        let base = pmd_base(addr);
        for i in 0..PAGES_PER_PMD {
            let page = self.page_mut(base + i * PAGE_SIZE);
            match page {
                Page::HugeZero => *page = Page::Zero,
                Page::Present(Present {
                    folio: Folio::Large { pmd_mapped, .. },
                    ..
                }) => *pmd_mapped = false,
                _ => {}
            }
        }
        self.tables.insert(base);
    }

    /// COPY (`first_tag` given) or ZEROPAGE (`None`).
    fn predict_fill(
        &self,
        uffd: UffdId,
        dst: u64,
        len: u64,
        mode: u64,
        first_tag: Option<u64>,
        b: &Behaviour,
    ) -> Alts {
        if self.pending(uffd) {
            return one(Self::early_eagain(b), self);
        }
        let allowed = if first_tag.is_some() {
            COPY_DONTWAKE | COPY_WP
        } else {
            COPY_DONTWAKE
        };
        if !range_ok(dst, len) || mode & !allowed != 0 {
            return one(Outcome::rejected(Errno::Inval), self);
        }
        if mode & COPY_WP != 0 {
            return Err(Unmodelled("UFFDIO_COPY_MODE_WP"));
        }
        let Some(dv) = self.vma(dst) else {
            return one(Outcome::failed(Errno::NoEnt), self);
        };
        if dst + len > dv.end() || dv.registration.is_none() {
            return one(Outcome::failed(Errno::NoEnt), self);
        }
        if dv.kind != VmaKind::PrivateAnon {
            return Err(Unmodelled("COPY/ZEROPAGE into shmem or a file"));
        }
        let mut next = self.clone();
        let mut done = 0;
        let mut err = None;
        while done < len {
            let d = dst + done;
            if next.pmd_is_huge(d) {
                err = Some(Errno::Exist);
                break;
            }
            next.tables.insert(pmd_base(d));
            // COPY and ZEROPAGE install over a uffd-wp marker; COPY, where the row says so, over
            // a guard region too (ZEROPAGE refuses it: observed on 6.18). MOVE is stricter.
            // (ZEROPAGE checks `pte_none()` and refuses every marker: observed on 6.18.)
            let empty = match next.get(d) {
                Page::None => true,
                Page::WpMarker => first_tag.is_some(),
                Page::Guard => first_tag.is_some() && b.fill_installs_over_guard,
                _ => false,
            };
            if !empty {
                err = Some(Errno::Exist);
                break;
            }
            let page = match first_tag {
                Some(tag) => Page::Present(Present {
                    tag: tag + done / PAGE_SIZE,
                    frame: next.new_frame(),
                    exclusive: true,
                    shared: false,
                    folio: Folio::Small,
                }),
                None => Page::Zero,
            };
            *next.page_mut(d) = page;
            done += PAGE_SIZE;
        }
        let outcome = match err {
            None => Outcome::done(len),
            Some(_) if done > 0 => Outcome::partial(done),
            Some(e) => Outcome::failed(e),
        };
        Ok(vec![alt(outcome, next)])
    }

    /// `MADV_DONTNEED` (`guard` false) or `MADV_GUARD_INSTALL` (`guard` true).
    fn predict_zap(&self, addr: u64, len: u64, guard: bool, b: &Behaviour) -> Alts {
        if addr % PAGE_SIZE != 0 {
            return one(Outcome::Call(Some(Errno::Inval)), self);
        }
        let len = len.next_multiple_of(PAGE_SIZE);
        if len == 0 {
            return one(Outcome::OK, self);
        }
        let Some(vma) = self.vma(addr) else {
            return Err(Unmodelled("madvise outside every VMA"));
        };
        if addr + len > vma.end() {
            return Err(Unmodelled("madvise across VMAs"));
        }
        if vma.mlocked {
            return one(Outcome::Call(Some(Errno::Inval)), self);
        }
        let mut next = self.clone();
        let end = addr + len;
        match vma.kind {
            VmaKind::PrivateAnon => {}
            // DONTNEED of shmem: a later read fault maps the zapped pages back by fault-around
            // (they are still in the page cache), which the oracle does not model.
            _ => {
                return Err(Unmodelled(
                    "guard regions or DONTNEED outside private anonymous memory",
                ))
            }
        }
        let mut base = pmd_base(addr);
        let mut emptied = Vec::new();
        while base < end {
            if next.pmd_is_huge(base) && !(base >= addr && base + PMD_SIZE <= end) {
                next.split_pmd(base);
            }
            base += PMD_SIZE;
        }
        for a in pages_in(addr, end) {
            let page = next.page_mut(a);
            *page = match (*page, guard) {
                (_, true) => Page::Guard,
                // MADV_DONTNEED drops uffd-wp markers (observed on 6.18) and keeps guards.
                (Page::WpMarker, false) => Page::None,
                (Page::Guard, false) => Page::Guard,
                (_, false) => Page::None,
            };
            if guard {
                next.tables.insert(pmd_base(a));
            }
        }
        let mut base = pmd_base(addr);
        while base < end {
            if !guard
                && b.pt_reclaim
                && next.tables.contains(&base)
                && next.pmd_pages(base).iter().all(|(_, p)| p.is_none())
            {
                emptied.push(base);
            }
            base += PMD_SIZE;
        }
        // PT_RECLAIM may free each emptied table, or not.
        let mut states = vec![next];
        for base in emptied {
            let mut freed: Vec<Space> = states.clone();
            for s in &mut freed {
                s.tables.remove(&base);
            }
            states.extend(freed);
        }
        Ok(states
            .into_iter()
            .enumerate()
            .map(|(i, s)| {
                let a = alt(Outcome::OK, s);
                if i == 0 {
                    a
                } else {
                    why(a, "PT_RECLAIM freed an emptied page table")
                }
            })
            .collect())
    }

    /// A fresh exclusive small page holding `tag`.
    fn fresh(&mut self, tag: u64) -> Page {
        Page::Present(Present {
            tag,
            frame: self.new_frame(),
            exclusive: true,
            shared: false,
            folio: Folio::Small,
        })
    }

    /// The space with a new PMD-mapped THP at the PMD of `addr`: zero-filled except `addr`,
    /// which holds `tag`.
    fn with_new_thp(&self, addr: u64, tag: u64, keep_tags: bool) -> Space {
        let mut next = self.clone();
        let base = pmd_base(addr);
        let id = next.new_folio();
        for i in 0..PAGES_PER_PMD {
            let a = base + i * PAGE_SIZE;
            let old = if keep_tags {
                next.get(a).tag().unwrap_or(0)
            } else {
                0
            };
            let frame = next.new_frame();
            *next.page_mut(a) = Page::Present(Present {
                tag: if a == addr && !keep_tags { tag } else { old },
                frame,
                exclusive: true,
                shared: false,
                folio: Folio::Large {
                    id,
                    pmd_mapped: true,
                },
            });
        }
        next.tables.remove(&base);
        next
    }

    /// Whether a fault at `addr` may allocate a PMD mapping.
    fn thp_fault_possible(&self, addr: u64) -> bool {
        let v = self.vma(addr).expect("checked by the caller");
        v.thp_eligible(&self.env) && v.covers_pmd(pmd_base(addr)) && self.pmd_is_none(addr)
    }

    fn predict_write(&self, addr: u64, tag: u64) -> Alts {
        let segv = || one(Outcome::Signal(Signal::Segv), self);
        let userfault = || one(Outcome::Signal(Signal::Userfault), self);
        let Some(vma) = self.vma(addr) else {
            return segv();
        };
        if vma.prot & PROT_WRITE == 0 {
            return segv();
        }
        let reg = vma.registration;
        let idx = vma.index(addr);
        let page = vma.pages[idx];
        match vma.kind {
            VmaKind::PrivateAnon => {}
            VmaKind::SharedAnon => {
                if page.is_none() && reg.is_some_and(|r| r.missing) {
                    return userfault();
                }
                let mut next = self.clone();
                let i = next.vma_index(addr).expect("inside");
                next.vmas[i].backing[idx] = tag;
                next.vmas[i].pages[idx] = shmem_page(tag);
                return one(Outcome::OK, &next);
            }
            VmaKind::PrivateFile => return Err(Unmodelled("touching a file mapping")),
        }
        let mut next = self.clone();
        let ok = |s: Space| alt(Outcome::OK, s);
        match page {
            Page::Guard => segv(),
            Page::WpMarker if reg.is_some_and(|r| r.wp) => userfault(),
            Page::WpMarker => Err(Unmodelled("a WP marker outside a WP registration")),
            Page::None if reg.is_some_and(|r| r.missing) => userfault(),
            Page::None => {
                let mut alts = Vec::new();
                if self.thp_fault_possible(addr) {
                    alts.push(why(
                        ok(self.with_new_thp(addr, tag, false)),
                        "the fault allocated a THP",
                    ));
                }
                next.tables.insert(pmd_base(addr));
                *next.page_mut(addr) = next.fresh(tag);
                alts.push(why(ok(next), "the fault mapped a small page"));
                Ok(alts)
            }
            Page::Present(p) if p.exclusive => {
                if let Page::Present(q) = next.page_mut(addr) {
                    q.tag = tag;
                }
                Ok(vec![ok(next)])
            }
            Page::Present(p) => {
                let mut alts = Vec::new();
                if page.is_pmd_mapped() {
                    if !p.shared {
                        // do_huge_pmd_wp_page() reuses a THP nobody else maps.
                        let mut reuse = self.clone();
                        let base = pmd_base(addr);
                        for i in 0..PAGES_PER_PMD {
                            if let Page::Present(q) = reuse.page_mut(base + i * PAGE_SIZE) {
                                q.exclusive = true;
                            }
                        }
                        if let Page::Present(q) = reuse.page_mut(addr) {
                            q.tag = tag;
                        }
                        alts.push(why(ok(reuse), "the THP was reused"));
                    }
                    next.split_pmd(addr);
                }
                // do_wp_page() on a PTE.
                let mut copy = next.clone();
                *copy.page_mut(addr) = copy.fresh(tag);
                alts.push(why(ok(copy), "the write copied the page"));
                if !p.shared {
                    if let Page::Present(q) = next.page_mut(addr) {
                        q.exclusive = true;
                        q.tag = tag;
                    }
                    alts.push(why(ok(next), "the write reused the page"));
                }
                Ok(alts)
            }
            Page::Zero => {
                *next.page_mut(addr) = next.fresh(tag);
                Ok(vec![ok(next)])
            }
            Page::HugeZero => {
                let thp = self.with_new_thp(addr, tag, false);
                next.split_pmd(addr);
                *next.page_mut(addr) = next.fresh(tag);
                Ok(vec![
                    why(ok(next), "the huge zero PMD was split"),
                    why(ok(thp), "a THP replaced the huge zero page"),
                ])
            }
            Page::Swapped { .. } => {
                *next.page_mut(addr) = next.fresh(tag);
                Ok(vec![ok(next)])
            }
        }
    }

    fn predict_read(&self, addr: u64) -> Alts {
        let Some(vma) = self.vma(addr) else {
            return one(Outcome::Signal(Signal::Segv), self);
        };
        if vma.prot & PROT_READ == 0 {
            return one(Outcome::Signal(Signal::Segv), self);
        }
        let reg = vma.registration;
        let idx = vma.index(addr);
        let page = vma.pages[idx];
        let userfault = || one(Outcome::Signal(Signal::Userfault), self);
        match vma.kind {
            VmaKind::PrivateAnon => {}
            VmaKind::SharedAnon => {
                if !page.is_none() {
                    return one(Outcome::OK, self);
                }
                if reg.is_some_and(|r| r.missing) {
                    return userfault();
                }
                let mut next = self.clone();
                let i = next.vma_index(addr).expect("inside");
                let tag = next.vmas[i].backing[idx];
                next.vmas[i].pages[idx] = shmem_page(tag);
                return one(Outcome::OK, &next);
            }
            VmaKind::PrivateFile => return Err(Unmodelled("touching a file mapping")),
        }
        let mut next = self.clone();
        let ok = |s: Space| alt(Outcome::OK, s);
        match page {
            Page::Guard => one(Outcome::Signal(Signal::Segv), self),
            Page::WpMarker => Err(Unmodelled("reading a WP marker")),
            Page::None if reg.is_some_and(|r| r.missing) => userfault(),
            Page::None => {
                let mut alts = Vec::new();
                if self.thp_fault_possible(addr) {
                    if self.env.huge_zero_page {
                        let mut hz = self.clone();
                        let base = pmd_base(addr);
                        for i in 0..PAGES_PER_PMD {
                            *hz.page_mut(base + i * PAGE_SIZE) = Page::HugeZero;
                        }
                        alts.push(why(ok(hz), "the read mapped the huge zero page"));
                    } else {
                        alts.push(why(
                            ok(self.with_new_thp(addr, 0, false)),
                            "the read allocated a THP",
                        ));
                    }
                }
                next.tables.insert(pmd_base(addr));
                *next.page_mut(addr) = Page::Zero;
                alts.push(why(ok(next), "the read mapped the zero page"));
                Ok(alts)
            }
            Page::Swapped {
                tag,
                exclusive,
                shared,
            } => {
                let frame = next.new_frame();
                // A child holds the swap entry, not this new mapping: the page is mapped once
                // (pagemap says exclusive) even when `PageAnonExclusive` stays clear.
                let swapped_in = |exclusive| {
                    Page::Present(Present {
                        tag,
                        frame,
                        exclusive,
                        shared: false,
                        folio: Folio::Small,
                    })
                };
                *next.page_mut(addr) = swapped_in(exclusive);
                let mut alts = vec![ok(next.clone())];
                if !exclusive && !shared {
                    // do_swap_page() makes the page exclusive when nobody else holds it.
                    *next.page_mut(addr) = swapped_in(true);
                    alts.push(why(ok(next), "the swap-in made the page exclusive"));
                }
                Ok(alts)
            }
            Page::Present(_) | Page::Zero | Page::HugeZero => one(Outcome::OK, self),
        }
    }

    fn predict_fork(&self) -> Alts {
        if self.child_alive {
            return Err(Unmodelled("a second live child"));
        }
        let mut next = self.clone();
        next.child_alive = true;
        for v in &mut next.vmas {
            if v.dontfork || v.kind != VmaKind::PrivateAnon {
                continue;
            }
            for p in &mut v.pages {
                match p {
                    Page::Present(q) => {
                        q.exclusive = false;
                        q.shared = true;
                    }
                    Page::Swapped {
                        exclusive, shared, ..
                    } => {
                        *exclusive = false;
                        *shared = true;
                    }
                    _ => {}
                }
            }
        }
        one(Outcome::OK, &next)
    }

    fn predict_child_exit(&self) -> Alts {
        if !self.child_alive {
            return Err(Unmodelled("no child to exit"));
        }
        let mut next = self.clone();
        next.child_alive = false;
        for v in &mut next.vmas {
            for p in &mut v.pages {
                match p {
                    Page::Present(q) => q.shared = false,
                    Page::Swapped { shared, .. } => *shared = false,
                    _ => {}
                }
            }
        }
        one(Outcome::OK, &next)
    }

    fn predict_swap_out(&self, addr: u64) -> Alts {
        let Some(vma) = self.vma(addr) else {
            return Err(Unmodelled("MADV_PAGEOUT outside every VMA"));
        };
        if vma.mlocked {
            return one(Outcome::Call(Some(Errno::Inval)), self);
        }
        if vma.kind != VmaKind::PrivateAnon {
            return Err(Unmodelled("MADV_PAGEOUT of shmem"));
        }
        match self.get(addr) {
            Page::Present(p) if p.folio != Folio::Small => {
                Err(Unmodelled("MADV_PAGEOUT of a large folio"))
            }
            Page::Present(p) if !p.shared => {
                let mut next = self.clone();
                *next.page_mut(addr) = Page::Swapped {
                    tag: p.tag,
                    exclusive: p.exclusive,
                    shared: false,
                };
                Ok(vec![
                    why(alt(Outcome::OK, next), "the page was reclaimed"),
                    why(alt(Outcome::OK, self.clone()), "the page was not reclaimed"),
                ])
            }
            _ => one(Outcome::OK, self),
        }
    }

    fn predict_collapse(&self, addr: u64) -> Alts {
        if addr % PMD_SIZE != 0 {
            return Err(Unmodelled("MADV_COLLAPSE of a partial PMD"));
        }
        let Some(vma) = self.vma(addr) else {
            return Err(Unmodelled("MADV_COLLAPSE outside every VMA"));
        };
        if !vma.covers_pmd(addr) || vma.kind != VmaKind::PrivateAnon {
            return Err(Unmodelled("MADV_COLLAPSE of a PMD the VMA does not cover"));
        }
        if self.env.thp == ThpMode::Never || vma.thp == ThpAdvice::NoHuge {
            return one(Outcome::Call(Some(Errno::Inval)), self);
        }
        let fail = || why(alt(Outcome::AnyError, self.clone()), "the collapse failed");
        if self.pmd_is_huge(addr) {
            return Ok(vec![alt(Outcome::OK, self.clone()), fail()]);
        }
        let pages = self.pmd_pages(addr);
        let armed = vma.registration.is_some();
        let blocked = pages.iter().any(|(_, p)| {
            matches!(p, Page::Guard | Page::WpMarker)
                || (armed && matches!(p, Page::None | Page::Zero))
        });
        if blocked {
            return Ok(vec![fail()]);
        }
        Ok(vec![
            why(
                alt(Outcome::OK, self.with_new_thp(addr, 0, true)),
                "the collapse succeeded",
            ),
            fail(),
        ])
    }

    fn predict_split(&self, addr: u64) -> Alts {
        if addr % PMD_SIZE != 0 || !self.vma(addr).is_some_and(|v| v.covers_pmd(addr)) {
            return Err(Unmodelled("a PMD split of a PMD the VMA does not cover"));
        }
        let mut next = self.clone();
        next.split_pmd(addr);
        one(Outcome::OK, &next)
    }

    fn predict_register(&self, uffd: UffdId, start: u64, missing: bool, wp: bool) -> Alts {
        let Some(i) = self
            .vma_index(start)
            .filter(|i| self.vmas[*i].start == start)
        else {
            return Err(Unmodelled("registering part of a VMA"));
        };
        let vma = &self.vmas[i];
        if !missing && !wp {
            return one(Outcome::Call(Some(Errno::Inval)), self);
        }
        match vma.kind {
            VmaKind::PrivateFile => return one(Outcome::Call(Some(Errno::Inval)), self),
            VmaKind::SharedAnon if wp => return Err(Unmodelled("WP registration of shmem")),
            _ => {}
        }
        if vma.registration.is_some_and(|r| r.uffd != uffd) {
            return one(Outcome::Call(Some(Errno::Busy)), self);
        }
        let mut next = self.clone();
        next.vmas[i].registration = Some(crate::Registration { uffd, missing, wp });
        one(Outcome::OK, &next)
    }

    fn predict_unregister(&self, uffd: UffdId, start: u64) -> Alts {
        let Some(i) = self
            .vma_index(start)
            .filter(|i| self.vmas[*i].start == start)
        else {
            return Err(Unmodelled("unregistering part of a VMA"));
        };
        let vma = &self.vmas[i];
        match vma.registration {
            None => one(Outcome::OK, self),
            Some(r) if r.uffd != uffd => Err(Unmodelled("unregistering another fd's VMA")),
            Some(r) if r.wp && vma.pages.contains(&Page::WpMarker) => {
                Err(Unmodelled("unregistering WP markers"))
            }
            Some(_) => {
                let mut next = self.clone();
                next.vmas[i].registration = None;
                one(Outcome::OK, &next)
            }
        }
    }

    fn predict_writeprotect(&self, uffd: UffdId, addr: u64, len: u64) -> Alts {
        let Some(vma) = self.vma(addr) else {
            return Err(Unmodelled("write-protecting outside every VMA"));
        };
        if addr + len > vma.end() || !vma.registration.is_some_and(|r| r.wp && r.uffd == uffd) {
            return Err(Unmodelled("write-protecting outside a WP registration"));
        }
        let mut next = self.clone();
        for a in pages_in(addr, addr + len) {
            match next.get(a) {
                Page::None | Page::WpMarker => {
                    *next.page_mut(a) = Page::WpMarker;
                    next.tables.insert(pmd_base(a));
                }
                _ => return Err(Unmodelled("write-protecting populated pages")),
            }
        }
        one(Outcome::OK, &next)
    }
}

/// A mapped shmem page holding `tag` (frames of shmem pages are not tracked: 0).
fn shmem_page(tag: u64) -> Page {
    Page::Present(Present {
        tag,
        frame: 0,
        exclusive: true,
        shared: false,
        folio: Folio::Small,
    })
}
